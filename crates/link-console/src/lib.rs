//! The web console: the Azure portal's blades of the private-link setup, served as HTML by
//! the management listener at `/` and `/console/…` (paths no ARM request uses: those all
//! start with `/subscriptions`, `/providers` or `/fhirlink`).
//!
//! The console is a client of the management API. It holds no rules: every page is made
//! from ARM reads and every button is an ARM write, each sent in process to the management
//! router as the signed-in principal ([`api::Api`]), so the console can do nothing that
//! principal's role assignments do not allow, and each call leaves the audit record an SDK's
//! would. What it owns is the browser side: one-time sign-in codes exchanged for a session
//! cookie (`session`), CSRF tokens, the Content-Security-Policy, and the HTML (maud).
//!
//! Pages are server-rendered; the one script (`assets/console.js`, plain JavaScript, no
//! build step) switches tabs, keeps a page live by reloading it when the control plane's
//! state changes (server-sent events), unless the user is typing in a form.

pub mod api;
mod blades;
mod forms;
pub mod session;
mod web;

use std::sync::Arc;

use axum::Router;
use fhir_store::DocumentStore;
use tokio::sync::watch;

pub use api::{Api, ArmFailure, Mint};
pub use session::{Session, Sessions};
pub use web::{code_router, CODE_PATH, COOKIE};

/// What the console needs from the server that serves it.
pub struct ConsoleConfig {
    /// The management router as an ARM client reaches it (authentication in front).
    pub api: Router,
    /// Mints a short-lived management token for a principal.
    pub mint: Mint,
    /// Where sessions and sign-in codes are kept (the control plane's store).
    pub store: Arc<dyn DocumentStore>,
    /// Sees every new control-plane state (pages reload on a change).
    pub changes: watch::Receiver<Arc<link_model::State>>,
    /// The subscription the console shows.
    pub subscription: String,
}

/// The console's routes, to merge beside the management router (outside its
/// authentication: the console authenticates by its session cookie, then calls the
/// management router with a token of the session's principal).
pub fn router(config: ConsoleConfig) -> Router {
    web::router(Arc::new(web::Console {
        api: Api::new(config.api, config.mint),
        sessions: Sessions::new(config.store),
        changes: config.changes,
        subscription: config.subscription,
        samples: std::sync::Mutex::new(Vec::new()),
    }))
}
