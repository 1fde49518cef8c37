//! The ARM-shaped management API of fhirlink as an axum [`Router`].
//!
//! [`ControlPlane`] owns the control-plane state (a [`link_model::State`]) and its persistence
//! in the store's documents; [`router`] answers management requests on it. Authentication
//! happens in front: every request must carry an `Extension<link_model::Principal>`. This crate
//! knows HTTP and the store contract; it never opens a socket.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Router;
use fhir_store::Store;
use link_model::{Principal, State};
use tokio::sync::watch;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store: {0}")]
    Store(#[from] fhir_store::StoreError),
    #[error("stored control-plane document {0} is not valid: {1}")]
    Corrupt(String, String),
}

/// The control plane: state, store and the subscribers to its changes.
pub struct ControlPlane {
    #[allow(dead_code)]
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<State>>,
}

impl ControlPlane {
    /// Loads the state from the store's documents and makes sure `owner` is Owner at the root
    /// scope `/`.
    pub async fn open(store: Arc<dyn Store>, owner: &str) -> Result<ControlPlane, OpenError> {
        let _ = owner;
        let (tx, _) = watch::channel(Arc::new(State::default()));
        Ok(ControlPlane { store, tx })
    }

    /// The current state.
    pub fn snapshot(&self) -> Arc<State> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new state, published before the management call that made
    /// it returns.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.tx.subscribe()
    }
}

/// The management API. Every request must carry an `Extension<Principal>`; without one the
/// answer is 401 `AuthenticationFailed`.
pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new().fallback(move |req: axum::extract::Request| {
        let _cp = cp.clone();
        async move { handle(req).await }
    })
}

async fn handle(req: axum::extract::Request) -> Response {
    let body = |code: &str, message: &str| {
        serde_json::json!({"error": {"code": code, "message": message}}).to_string()
    };
    if req.extensions().get::<Principal>().is_none() {
        return (
            http::StatusCode::UNAUTHORIZED,
            [(http::header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body("AuthenticationFailed", "Authentication failed."),
        )
            .into_response();
    }
    (
        http::StatusCode::NOT_IMPLEMENTED,
        [(http::header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body("NotImplemented", "Not implemented yet."),
    )
        .into_response()
}
