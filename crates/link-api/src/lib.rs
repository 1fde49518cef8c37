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

mod cluster;
mod http_glue;
mod persist;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use fhir_store::{DocumentChanges, Store};
use link_model::{State, DOCUMENT_COLLECTION};
use tokio::sync::{watch, Mutex};

pub use cluster::{NodeConfig, NodeRecord, NODE_COLLECTION};
pub use http_glue::{router, LAGGING_NODES_HEADER};
pub use persist::OpenError;

/// Where fhirlink puts the FHIR services it creates itself (`default`, `--services`): a
/// resource group of the default subscription, the CLI's defaults.
pub const HOME_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
pub const HOME_GROUP: &str = "fhirlink";
pub const HOME_LOCATION: &str = "westus2";

/// Private endpoints the network plane could not put on the wire: endpoint id → reason.
pub type EndpointFaults = BTreeMap<String, String>;

/// The network plane, as the control plane sees it: something that makes the wire match a
/// state. [`ControlPlane`] calls [`NetworkPlane::apply`] with every new state before the
/// management call that made it answers, so that a change is in force (listeners bound or
/// closed, access decisions and DNS answers switched) by the time its caller hears of it.
pub trait NetworkPlane: Send + Sync {
    /// Applies `state`, and reports the endpoints it could not serve (shown on the endpoint
    /// as `provisioningState: Failed`).
    fn apply(&self, state: &State) -> EndpointFaults;
}

/// The control plane: state, store and the subscribers to its changes.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    /// Held while a mutation runs, or the state follows the change feed; guards the stored
    /// document versions and the feed position the state includes.
    writer: Mutex<persist::Tracked>,
    tx: watch::Sender<Arc<State>>,
    /// The feed position the published state (and so the network plane) includes.
    enforced: watch::Sender<u64>,
    network: RwLock<Option<Arc<dyn NetworkPlane>>>,
    /// Set when this process is one node of several ([`ControlPlane::join`]).
    cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
}

impl ControlPlane {
    /// Loads the state from the store's documents and makes sure `owner` is Owner at the root
    /// scope `/` (a role assignment).
    pub async fn open(store: Arc<dyn Store>, owner: &str) -> Result<ControlPlane, OpenError> {
        let (state, tracked) = persist::load(store.as_ref()).await?;
        let (tx, _) = watch::channel(Arc::new(state));
        let cp = ControlPlane {
            store,
            enforced: watch::Sender::new(tracked.position),
            writer: Mutex::new(tracked),
            tx,
            network: RwLock::new(None),
            cluster: std::sync::OnceLock::new(),
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
        let mut tracked = self.writer.lock().await;
        self.reload_locked(&mut tracked).await
    }

    /// The feed position the current state includes every change up to.
    pub fn position(&self) -> u64 {
        *self.enforced.borrow()
    }

    async fn reload_locked(&self, tracked: &mut persist::Tracked) -> Result<(), OpenError> {
        let (state, fresh) = persist::load(self.store.as_ref()).await?;
        *tracked = fresh;
        self.publish(state);
        self.enforced.send_replace(tracked.position);
        Ok(())
    }

    /// Brings the state up to the feed's position now. Callers hold the writer lock.
    async fn catch_up(&self, tracked: &mut persist::Tracked) -> Result<bool, OpenError> {
        let feed = self
            .store
            .document_changes(tracked.position, std::time::Duration::ZERO)
            .await?;
        self.apply_feed(tracked, feed).await
    }

    /// Applies what the feed found after `tracked.position`: a change of a control-plane
    /// document the state does not hold (another process wrote it) reloads the state and
    /// publishes it; anything else only moves the position on. Returns whether a
    /// control-plane document changed. Callers hold the writer lock.
    async fn apply_feed(
        &self,
        tracked: &mut persist::Tracked,
        feed: DocumentChanges,
    ) -> Result<bool, OpenError> {
        let arm = feed.truncated
            || feed
                .changes
                .iter()
                .any(|c| c.collection == DOCUMENT_COLLECTION);
        if feed.truncated || feed.changes.iter().any(|c| !tracked.holds(c)) {
            self.reload_locked(tracked).await?;
        } else {
            tracked.position = tracked.position.max(feed.position);
            self.enforced.send_replace(tracked.position);
        }
        Ok(arm)
    }

    /// Makes a data-plane service that no ARM resource claims (`default`, `--services`) an
    /// ARM FHIR service in the home resource group, so that it has public access settings,
    /// private endpoints, authentication and role assignments like any other, and grants
    /// `owner` FHIR Data Contributor on it. Returns false when an ARM service of that name
    /// already exists (nothing is changed then).
    pub async fn adopt_service(
        &self,
        name: &str,
        owner: &str,
    ) -> Result<bool, link_model::ArmError> {
        let state = self.snapshot();
        if state
            .of_kind(link_model::Kind::FhirService)
            .any(|r| r.name().eq_ignore_ascii_case(name))
        {
            return Ok(false);
        }
        let who = link_model::Principal {
            id: owner.to_owned(),
            issuer: "fhirlink".to_owned(),
        };
        let group = format!("/subscriptions/{HOME_SUBSCRIPTION}/resourceGroups/{HOME_GROUP}");
        let service = format!("{group}/providers/Microsoft.HealthcareApis/services/{name}");
        let assignment = format!(
            "{service}/providers/Microsoft.Authorization/roleAssignments/{}",
            uuid::Uuid::new_v4()
        );
        let role = format!(
            "/subscriptions/{HOME_SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{}",
            link_model::FHIR_DATA_CONTRIBUTOR
        );
        let calls = [
            (
                group.clone(),
                "2025-04-01",
                serde_json::json!({"location": HOME_LOCATION}),
            ),
            (
                service,
                "2024-03-31",
                serde_json::json!({"location": HOME_LOCATION, "kind": "fhir-R4", "properties": {}}),
            ),
            (
                assignment,
                "2022-04-01",
                serde_json::json!({"properties": {"roleDefinitionId": role, "principalId": owner}}),
            ),
        ];
        let empty = std::collections::BTreeSet::new();
        for (i, (path, api_version, body)) in calls.iter().enumerate() {
            if i == 0 && self.snapshot().get(&group).is_some() {
                continue;
            }
            let bytes = body.to_string().into_bytes();
            let request = link_model::Request {
                method: link_model::Method::Put,
                path,
                api_version: Some(api_version),
                filter: None,
                top: None,
                skip_token: None,
                if_match: None,
                if_none_match: None,
                body: &bytes,
                taken_service_names: &empty,
            };
            http_glue::mutate(self, request, &who, Some(name)).await?;
        }
        Ok(true)
    }

    /// Connects the network plane: it is given the current state now, and every new state
    /// from here on before the call that made it answers.
    pub async fn attach(&self, network: Arc<dyn NetworkPlane>) {
        let _tracked = self.writer.lock().await;
        if let Ok(mut slot) = self.network.write() {
            *slot = Some(network);
        }
        let state = State::clone(&self.snapshot());
        self.publish(state);
    }

    /// Makes `next` the current state: the network plane applies it first (its report of
    /// endpoint faults becomes part of the state), then subscribers see it. Callers hold the
    /// writer lock.
    fn publish(&self, next: State) -> Arc<State> {
        let network = self.network.read().ok().and_then(|n| n.clone());
        let next = match network {
            Some(network) => {
                let faults = network.apply(&next);
                next.with_endpoint_faults(faults)
            }
            None => next,
        };
        let next = Arc::new(next);
        self.tx.send_replace(next.clone());
        next
    }

    async fn ensure_owner(&self, owner: &str) -> Result<(), OpenError> {
        let mut tracked = self.writer.lock().await;
        let who = link_model::Principal {
            id: owner.to_owned(),
            issuer: "fhirlink".to_owned(),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let state = self.snapshot();
            let Some((next, changes)) =
                link_model::ensure_owner(&state, owner, &who, chrono::Utc::now())
            else {
                return Ok(());
            };
            match persist::write(self.store.as_ref(), &mut tracked, &changes).await {
                Ok(()) => {
                    self.publish(next);
                    self.catch_up(&mut tracked).await?;
                    return Ok(());
                }
                // Another node starting at the same time wrote first: decide again on its state.
                Err(fhir_store::StoreError::Conflict { .. }) if attempt < 5 => {
                    self.reload_locked(&mut tracked).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
