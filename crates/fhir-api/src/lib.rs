//! fhir-api
