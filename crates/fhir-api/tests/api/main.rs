//! fhir-api in process: the REST suite drives `router(state)` with `oneshot`, no socket
//! and no binary, in one test binary. Every test runs on each store backend that
//! [`common::backends`] lists (the same suite for every backend, as the store's conformance
//! suite is).

mod bulk;
mod bundles;
mod common;
mod compartment;
mod corpus;
mod everything;
mod interactions;
mod operations;
mod rest;
mod robustness;
mod search;
mod synthea_search;
mod transaction;
