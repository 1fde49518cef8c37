//! The ARM-shaped management API of fhirlink as an axum [`Router`].
//!
//! [`ControlPlane`] owns the control-plane state (a [`link_model::State`]) and its persistence
//! in the store's control-plane documents; [`router`] answers management requests on it with
//! [`link_model::handle`]. Mutations are serialised behind one async mutex: the new state's
//! documents are written atomically (with the versions last read, so that several processes
//! on one store notice each other), then the in-memory state is swapped and subscribers are
//! told, all before the response leaves. Authentication happens in front: every request must
//! carry an `Extension<link_model::Principal>`. This crate knows HTTP and the store
//! contract; it never opens a socket.

mod http_glue;
mod persist;

use std::sync::Arc;

use fhir_store::Store;
use link_model::State;
use tokio::sync::{watch, Mutex};

pub use http_glue::router;
pub use persist::OpenError;

/// The control plane: state, store and the subscribers to its changes.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    /// Held while a mutation runs; guards the stored document versions.
    writer: Mutex<persist::Versions>,
    tx: watch::Sender<Arc<State>>,
}

impl ControlPlane {
    /// Loads the state from the store's documents and makes sure `owner` is Owner at the root
    /// scope `/` (a role assignment).
    pub async fn open(store: Arc<dyn Store>, owner: &str) -> Result<ControlPlane, OpenError> {
        let (state, versions) = persist::load(store.as_ref()).await?;
        let (tx, _) = watch::channel(Arc::new(state));
        let cp = ControlPlane {
            store,
            writer: Mutex::new(versions),
            tx,
        };
        cp.ensure_owner(owner).await?;
        Ok(cp)
    }

    /// The current state.
    pub fn snapshot(&self) -> Arc<State> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new state. A change is published before the management
    /// call that made it returns.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.tx.subscribe()
    }

    /// The store the control plane keeps its state in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reloads the state from the store (after another process changed it).
    pub async fn reload(&self) -> Result<(), OpenError> {
        let mut versions = self.writer.lock().await;
        let (state, v) = persist::load(self.store.as_ref()).await?;
        *versions = v;
        self.tx.send_replace(Arc::new(state));
        Ok(())
    }

    async fn ensure_owner(&self, owner: &str) -> Result<(), OpenError> {
        let mut versions = self.writer.lock().await;
        let state = self.snapshot();
        let who = link_model::Principal {
            id: owner.to_owned(),
            issuer: "fhirlink".to_owned(),
        };
        if let Some((next, changes)) =
            link_model::ensure_owner(&state, owner, &who, chrono::Utc::now())
        {
            persist::write(self.store.as_ref(), &mut versions, &changes).await?;
            self.tx.send_replace(Arc::new(next));
        }
        Ok(())
    }
}
