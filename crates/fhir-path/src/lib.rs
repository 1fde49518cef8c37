//! fhir-path
