//! The spent client-assertion ids of SMART Backend Services (link-gateway's
//! [`JtiLedger`]), kept in the store as documents of the collection `smart-jti`: a `jti` is
//! recorded by a write that expects no document under its key, so that of two uses — on this
//! node or another node of the deployment — exactly one succeeds. Spent ids are swept once
//! they expire (the assertion would be refused as expired anyway).

use std::sync::Arc;
use std::time::Duration;

use fhir_store::{DocumentWrite, Expected, Store, StoreError};
use link_auth::identity::unix_now;
use link_gateway::auth::JtiLedger;
use serde_json::json;

const COLLECTION: &str = "smart-jti";
/// How often expired ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct StoreLedger {
    store: Arc<dyn Store>,
}

impl StoreLedger {
    pub(crate) fn new(store: Arc<dyn Store>) -> Arc<StoreLedger> {
        let ledger = Arc::new(StoreLedger { store });
        let sweeper = Arc::downgrade(&ledger);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ledger) = sweeper.upgrade() else {
                    return;
                };
                if let Err(e) = ledger.sweep(unix_now()).await {
                    tracing::warn!(error = %e, "sweeping spent client assertion ids");
                }
            }
        });
        ledger
    }

    /// Deletes the ids whose assertions have expired (with the verifier's clock skew).
    async fn sweep(&self, now: i64) -> Result<usize, StoreError> {
        let expired: Vec<DocumentWrite> = self
            .store
            .list_documents(COLLECTION)
            .await?
            .into_iter()
            .filter(|d| {
                d.body["expires"].as_i64().unwrap_or(0) + link_auth::jwt::CLOCK_SKEW_SECS < now
            })
            .map(|d| DocumentWrite::Delete {
                collection: COLLECTION.into(),
                key: d.key,
                expected: Expected::Version(d.version),
            })
            .collect();
        let n = expired.len();
        if n > 0 {
            match self.store.write_documents(expired).await {
                // Swept meanwhile by another node: the next sweep finds what is left.
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// The key of one spent id: service, client and the id's SHA-256 (an id is up to 255
/// characters of anything).
fn key(service: &str, client: &str, jti: &str) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, jti.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    format!("{service}/{client}/{hex}")
}

#[async_trait::async_trait]
impl JtiLedger for StoreLedger {
    async fn first_use(
        &self,
        service: &str,
        client: &str,
        jti: &str,
        expires: i64,
    ) -> Result<bool, String> {
        let write = DocumentWrite::Put {
            collection: COLLECTION.into(),
            key: key(service, client, jti),
            body: json!({"expires": expires}),
            expected: Expected::Absent,
        };
        match self.store.write_documents(vec![write]).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_is_spent_once_and_swept_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(fhir_store_sqlite::SqliteStore::open(&dir.path().join("db")).expect("store"));
        let ledger = StoreLedger::new(store.clone());
        let now = unix_now();
        assert_eq!(ledger.first_use("s", "c", "j1", now + 300).await, Ok(true));
        assert_eq!(ledger.first_use("s", "c", "j1", now + 300).await, Ok(false));
        // Another client, or another service, has ids of its own.
        assert_eq!(ledger.first_use("s", "d", "j1", now + 300).await, Ok(true));
        assert_eq!(ledger.first_use("t", "c", "j1", now + 300).await, Ok(true));
        assert_eq!(ledger.first_use("s", "c", "old", now - 600).await, Ok(true));
        assert_eq!(ledger.sweep(now).await.unwrap(), 1);
        assert_eq!(store.list_documents(COLLECTION).await.unwrap().len(), 3);
        assert_eq!(ledger.first_use("s", "c", "j1", now + 300).await, Ok(false));
    }
}
