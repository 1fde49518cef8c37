//! FHIR R4 search, the pure part: the SearchParameter [`registry`], index value extraction
//! ([`extract`]) with its normal forms ([`normalize`]), and the query model ([`query`]).
//!
//! This crate knows FHIR and FHIRPath, and nothing of SQL, HTTP or files: a store turns an
//! [`IndexEntry`] into rows and a [`SearchQuery`] into its own query language, an API turns URL
//! parameters into a [`SearchQuery`] and results into a Bundle.

pub mod compartment;
pub mod extract;
pub mod normalize;
pub mod query;
pub mod registry;

pub use extract::{extract, extract_with_bases, restamp_last_updated, IndexEntry, IndexValue};
pub use query::{
    parse, Cond, Cursor, Include, ParseOptions, Prefix, SearchError, SearchQuery, SortKey,
    SortPosition, SortValue, SystemMatch, Test, Total, UriMode,
};
pub use registry::{component_param, registry, ParamType, Registry, SearchParam};
