//! fhir-store-sqlite
