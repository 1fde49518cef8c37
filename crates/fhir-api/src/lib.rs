//! The FHIR R4 REST API (FHIR R4 http.html) as an axum [`Router`].
//!
//! `router(state)` builds the whole data plane: one entry point parses the request line,
//! routes it to the FHIR service named by the Host header, and hands it to the module of the
//! interaction (`read`, `write`, `history`, `search`, `bundle`, `capabilities`, `bulk` for
//! `$export` and its jobs, `smart` for SMART's `/.well-known/smart-configuration`) or
//! operation (`everything`, `meta` for `$meta`/`$meta-add`/`$meta-delete`, `purge` for
//! `$purge-history`, `validate` for `$validate`, `terminology` for `$expand`,
//! `$validate-code` and `$subsumes`,
//! `member_match` for Da Vinci HRex's `Patient/$member-match`; `params` reads any operation's parameters). Every error leaves
//! through [`error::FhirError`] as an OperationOutcome. This crate knows HTTP and the store
//! contract; it never sees SQL or sockets.

pub mod access;
mod authorize;
mod bulk;
mod bundle;
mod capabilities;
mod error;
mod everything;
mod history;
pub mod interaction;
mod member_match;
mod meta;
mod negotiate;
mod params;
mod patch;
mod purge;
mod read;
mod request;
mod respond;
mod route;
mod search;
pub mod service;
mod smart;
mod terminology;
mod validate;
mod write;

use std::sync::Arc;

use axum::Router;
use fhir_model::Definitions;
use fhir_store::Store;

pub use access::Access;
pub use error::FhirError;
pub use request::{drain, DRAIN_LIMIT};
pub use service::DEFAULT_SERVICE;

/// What the API needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// DNS suffix of service host names: `<service>.<dns_suffix>` routes to `<service>`.
    pub dns_suffix: String,
    /// The largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Largest `_count` a page may have.
    pub max_page_size: usize,
    /// Largest number of entries a batch or transaction may carry.
    pub max_bundle_entries: usize,
    /// Refuse requests that carry no [`Access`] (set by the authentication layer in
    /// front). Off for a router used on its own, as in this crate's tests.
    pub require_access: bool,
    /// The data plane speaks HTTPS: links and `Location` say `https://`.
    pub https: bool,
    /// Bytes of resource bodies a `$everything` keeps in memory while it collects the
    /// record; past them it keeps keys and reads each page's resources again.
    pub everything_memory_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            dns_suffix: "azurehealthcareapis.com".into(),
            max_body_bytes: 64 * 1024 * 1024,
            max_page_size: 1000,
            max_bundle_entries: 20_000,
            require_access: false,
            https: false,
            everything_memory_bytes: 16 << 20,
        }
    }
}

/// Shared state of the data plane.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) defs: &'static Definitions,
    pub(crate) config: ApiConfig,
    pub(crate) capabilities: capabilities::Cached,
    /// Bulk export's jobs, when the server runs them (`None`: `$export` answers 501).
    pub(crate) bulk: Option<Arc<fhir_bulk::Bulk>>,
    pub(crate) known: Arc<KnownServices>,
}

/// The FHIR services the deployment's plan names, kept up to date by whoever holds the plan
/// (the binary's network plane): a request for one of them is served without asking the
/// store whether its service exists, which on a shared store is a round trip. A name not in
/// the set (none are, without a plan) is still looked up in the store. The plan names a
/// service only while its data exists: a service is created in the store before the plan
/// that names it, and deleted after the plan that no longer does.
#[derive(Debug, Default)]
pub struct KnownServices(std::sync::RwLock<Arc<std::collections::HashSet<String>>>);

impl KnownServices {
    /// Makes `names` (lowercase) the known services.
    pub fn replace(&self, names: impl IntoIterator<Item = String>) {
        let set = Arc::new(names.into_iter().collect());
        if let Ok(mut slot) = self.0.write() {
            *slot = set;
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.read().is_ok_and(|set| set.contains(name))
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> AppState {
        let defs = fhir_model::r4();
        AppState {
            inner: Arc::new(Inner {
                store,
                defs,
                config,
                capabilities: capabilities::Cached::new(defs),
                bulk: None,
                known: Arc::default(),
            }),
        }
    }

    /// Serves `$export`, its status URLs and its files with `bulk`'s jobs.
    pub fn with_bulk(
        store: Arc<dyn Store>,
        config: ApiConfig,
        bulk: Arc<fhir_bulk::Bulk>,
    ) -> AppState {
        let defs = fhir_model::r4();
        AppState {
            inner: Arc::new(Inner {
                store,
                defs,
                config,
                capabilities: capabilities::Cached::with_bulk(defs),
                bulk: Some(bulk),
                known: Arc::default(),
            }),
        }
    }

    /// The set of services the plan names, for the holder of the plan to keep current.
    pub fn known_services(&self) -> Arc<KnownServices> {
        self.inner.known.clone()
    }
}

/// The data-plane router: every FHIR interaction of every service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .fallback(route::dispatch)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}
