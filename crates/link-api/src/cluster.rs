//! Several fhirlink nodes on one store. Each node follows the store's document change feed
//! (reloading the state when another node changed a control-plane document, so that its
//! gateway and DNS apply the new plan) and registers itself as a document of the collection
//! [`NODE_COLLECTION`]: its id, the addresses it listens on, the feed position its plan
//! includes every change up to, and a heartbeat (milliseconds since the Unix epoch), written
//! every `heartbeat` and at once after it applied a change. A management change answers
//! after every live node (heartbeat younger than `plan_wait` plus two heartbeats) reports a
//! position at least the change's, or after `plan_wait`, naming the nodes that lag. A node
//! that could not read the feed for `plan_wait` stops serving the data plane
//! ([`ControlPlane::serving`]): it would serve an old plan. Heartbeats are compared with the
//! reader's clock, so the nodes' clocks must agree to well within two heartbeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fhir_store::{DocumentWrite, Expected};
use serde_json::{json, Value};

use crate::ControlPlane;

/// The collection of the nodes' records, keyed by node id.
pub const NODE_COLLECTION: &str = "nodes";

/// Records older than this are deleted when a node joins.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Who this node is and how it keeps up with the others.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: String,
    /// The addresses it listens on (data plane, management API, DNS), as shown to operators.
    pub addresses: Vec<String>,
    pub heartbeat: Duration,
    /// How long a management change waits for the other nodes, and how long this node
    /// serves without reading the feed.
    pub plan_wait: Duration,
}

/// A node as its record in the store says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub addresses: Vec<String>,
    pub position: u64,
    pub heartbeat_ms: u64,
}

impl NodeRecord {
    fn from_document(body: &Value) -> Option<NodeRecord> {
        Some(NodeRecord {
            id: body.get("id")?.as_str()?.to_owned(),
            addresses: body
                .get("addresses")?
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            position: body.get("position")?.as_u64()?,
            heartbeat_ms: body.get("heartbeat")?.as_u64()?,
        })
    }
}

pub(crate) struct Cluster {
    pub(crate) config: NodeConfig,
    started: Instant,
    /// Milliseconds after `started` of the last successful read of the feed.
    last_read: AtomicU64,
}

impl Cluster {
    fn mark_read(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read.store(ms, Ordering::Release);
    }

    pub(crate) fn current(&self) -> bool {
        let read = Duration::from_millis(self.last_read.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(read) <= self.config.plan_wait
    }

    /// Whether a record's heartbeat is young enough for the node to count as live.
    fn live(&self, record: &NodeRecord, now_ms: u64) -> bool {
        let window = self.config.plan_wait + 2 * self.config.heartbeat;
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        record.heartbeat_ms.saturating_add(window) >= now_ms
    }
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl ControlPlane {
    /// Makes this process one node of several on the store: follows the feed, reports, and
    /// from now on holds management answers until the other live nodes enforce them. Call
    /// once, after [`ControlPlane::attach`].
    pub fn join(self: &Arc<Self>, config: NodeConfig) {
        let cluster = Arc::new(Cluster {
            config,
            started: Instant::now(),
            last_read: AtomicU64::new(0),
        });
        if self.cluster.set(cluster.clone()).is_err() {
            return;
        }
        let cp = self.clone();
        tokio::spawn(async move { cp.follow(cluster).await });
    }

    /// This node's id, when it is one of several.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.get().map(|c| c.config.id.as_str())
    }

    /// Whether the data plane may serve: always for a single node; for one of several, as
    /// long as it read the change feed within the last `plan_wait`.
    pub fn serving(&self) -> bool {
        self.cluster.get().is_none_or(|c| c.current())
    }

    /// The nodes registered in the store, live or not, and whether each is live.
    pub async fn nodes(&self) -> Result<Vec<(NodeRecord, bool)>, fhir_store::StoreError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        Ok(self
            .store
            .list_documents(NODE_COLLECTION)
            .await?
            .iter()
            .filter_map(|d| NodeRecord::from_document(&d.body))
            .map(|r| {
                let live = cluster.live(&r, now);
                (r, live)
            })
            .collect())
    }

    async fn follow(self: Arc<Self>, cluster: Arc<Cluster>) {
        let heartbeat = cluster.config.heartbeat;
        self.forget_old_nodes().await;
        let mut last_report: Option<Instant> = None;
        let mut report_due = true;
        let mut failing = false;
        loop {
            let after = *self.enforced.borrow();
            match self.store.document_changes(after, heartbeat).await {
                Ok(feed) => {
                    let mut tracked = self.writer.lock().await;
                    let applied = if tracked.position == after {
                        self.apply_feed(&mut tracked, feed).await
                    } else {
                        self.catch_up(&mut tracked).await
                    };
                    drop(tracked);
                    match applied {
                        Ok(changed) => {
                            cluster.mark_read();
                            report_due |= changed;
                            if failing {
                                tracing::info!("following the control plane's changes again");
                                failing = false;
                            }
                        }
                        Err(e) => {
                            if !failing {
                                tracing::error!(error = %e, "cannot apply the control plane's changes");
                                failing = true;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot read the control plane's change feed");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let due = report_due || last_report.is_none_or(|t| t.elapsed() >= heartbeat);
            if due && self.report(&cluster).await {
                last_report = Some(Instant::now());
                report_due = false;
            }
        }
    }

    /// Writes this node's record: its addresses, the position it enforces, a heartbeat.
    async fn report(&self, cluster: &Cluster) -> bool {
        let body = json!({
            "id": cluster.config.id,
            "addresses": cluster.config.addresses,
            "position": *self.enforced.borrow(),
            "heartbeat": now_ms(),
        });
        let write = DocumentWrite::Put {
            collection: NODE_COLLECTION.to_owned(),
            key: cluster.config.id.clone(),
            body,
            expected: Expected::Any,
        };
        match self.store.write_documents(vec![write]).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot write this node's heartbeat");
                false
            }
        }
    }

    async fn forget_old_nodes(&self) {
        let Ok(docs) = self.store.list_documents(NODE_COLLECTION).await else {
            return;
        };
        let cutoff = now_ms().saturating_sub(u64::try_from(FORGET_AFTER.as_millis()).unwrap_or(0));
        let old: Vec<DocumentWrite> = docs
            .iter()
            .filter(|d| NodeRecord::from_document(&d.body).is_none_or(|r| r.heartbeat_ms < cutoff))
            .map(|d| DocumentWrite::Delete {
                collection: NODE_COLLECTION.to_owned(),
                key: d.key.clone(),
                expected: Expected::Version(d.version),
            })
            .collect();
        if !old.is_empty() {
            let _ = self.store.write_documents(old).await;
        }
    }

    /// Waits until every other live node enforces feed position `target`, at most
    /// `plan_wait`; returns the ids of the nodes that still lag (none for a single node).
    pub(crate) async fn confirm(&self, target: u64) -> Vec<String> {
        let Some(cluster) = self.cluster.get() else {
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + cluster.config.plan_wait;
        let mut seen = target;
        let mut lagging = vec!["(the node table could not be read)".to_owned()];
        loop {
            if let Ok(docs) = self.store.list_documents(NODE_COLLECTION).await {
                let now = now_ms();
                lagging = docs
                    .iter()
                    .filter_map(|d| NodeRecord::from_document(&d.body))
                    .filter(|r| {
                        r.id != cluster.config.id && cluster.live(r, now) && r.position < target
                    })
                    .map(|r| r.id)
                    .collect();
                if lagging.is_empty() {
                    return lagging;
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(lagging = %lagging.join(","), position = target, "management change answered before every node enforced it");
                return lagging;
            }
            match self.store.document_changes(seen, deadline - now).await {
                Ok(feed) => seen = feed.position,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
