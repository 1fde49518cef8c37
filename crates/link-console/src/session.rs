//! Sign-in codes and sessions, kept as store documents so that every node on a shared store
//! honours them (a code made through one node is exchanged at another; signing out on one
//! node ends the session on all of them).
//!
//! Neither a code nor a session id is stored: the document key is the SHA-256 of the
//! secret, so whoever reads the store cannot sign in with what is there. A code is consumed
//! by deleting its document at the version just read, which the store does for one caller
//! only; the second exchange of the same code finds nothing (or loses the race) and is
//! refused.

use std::sync::Arc;

use base64::Engine as _;
use fhir_store::{DocumentStore, DocumentWrite, Expected, StoreError};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;

/// The collection of pending sign-in codes.
pub const CODE_COLLECTION: &str = "console-codes";
/// The collection of console sessions.
pub const SESSION_COLLECTION: &str = "console-sessions";
/// How long a sign-in code may wait for its exchange.
pub const CODE_LIFETIME_SECS: i64 = 120;
/// How long a session lasts from its sign-in (the cookie's `Max-Age` too).
pub const SESSION_LIFETIME_SECS: i64 = 8 * 3600;

/// A signed-in console user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The principal every call of the session is made as (a role assignment's `principalId`).
    pub principal: String,
    /// The synchronizer token every mutation must carry (CSRF).
    pub csrf: String,
    /// Unix seconds at which the session ends.
    pub expires: i64,
}

/// Why a store operation of the console failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("no secure random numbers")]
    Random,
}

/// The sessions and codes of the console on one store.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn DocumentStore>,
    rng: SystemRandom,
}

/// 32 random bytes, base64url without padding (43 characters).
fn secret(rng: &SystemRandom) -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| SessionError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The document key of a secret: its SHA-256 in hex.
fn key_of(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like one of our secrets (so that garbage never reaches the store).
fn well_formed(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Constant-time equality of two strings (their digests are compared, so neither length nor
/// the first differing byte shows in the timing).
pub fn same_secret(a: &str, b: &str) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a.as_bytes());
    let db = ring::digest::digest(&ring::digest::SHA256, b.as_bytes());
    da.as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Sessions {
    pub fn new(store: Arc<dyn DocumentStore>) -> Sessions {
        Sessions {
            store,
            rng: SystemRandom::new(),
        }
    }

    /// A new one-time sign-in code for `principal`, valid for [`CODE_LIFETIME_SECS`].
    pub async fn create_code(&self, principal: &str, now: i64) -> Result<String, SessionError> {
        self.purge(CODE_COLLECTION, now).await;
        let code = secret(&self.rng)?;
        self.store
            .write_documents(vec![DocumentWrite::Put {
                collection: CODE_COLLECTION.into(),
                key: key_of(&code),
                body: json!({"principal": principal, "expires": now + CODE_LIFETIME_SECS}),
                expected: Expected::Absent,
            }])
            .await?;
        Ok(code)
    }

    /// Exchanges a code for a new session (its id, the cookie's value, and the session), once:
    /// an unknown, expired or already used code gives `None`.
    pub async fn exchange(
        &self,
        code: &str,
        now: i64,
    ) -> Result<Option<(String, Session)>, SessionError> {
        if !well_formed(code) {
            return Ok(None);
        }
        let key = key_of(code);
        let Some(doc) = self.store.get_document(CODE_COLLECTION, &key).await? else {
            return Ok(None);
        };
        // Consumed before anything else: of two exchanges racing, one deletes it.
        match self
            .store
            .write_documents(vec![DocumentWrite::Delete {
                collection: CODE_COLLECTION.into(),
                key,
                expected: Expected::Version(doc.version),
            }])
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let expires = doc.body["expires"].as_i64().unwrap_or(0);
        let Some(principal) = doc.body["principal"].as_str().filter(|_| expires > now) else {
            return Ok(None);
        };
        self.purge(SESSION_COLLECTION, now).await;
        let id = secret(&self.rng)?;
        let session = Session {
            principal: principal.to_owned(),
            csrf: secret(&self.rng)?,
            expires: now + SESSION_LIFETIME_SECS,
        };
        self.store
            .write_documents(vec![DocumentWrite::Put {
                collection: SESSION_COLLECTION.into(),
                key: key_of(&id),
                body: json!({
                    "principal": session.principal,
                    "csrf": session.csrf,
                    "expires": session.expires,
                }),
                expected: Expected::Absent,
            }])
            .await?;
        Ok(Some((id, session)))
    }

    /// The live session of a cookie's value, if there is one.
    pub async fn find(&self, id: &str, now: i64) -> Result<Option<Session>, SessionError> {
        if !well_formed(id) {
            return Ok(None);
        }
        let Some(doc) = self
            .store
            .get_document(SESSION_COLLECTION, &key_of(id))
            .await?
        else {
            return Ok(None);
        };
        let b = &doc.body;
        let (Some(principal), Some(csrf), Some(expires)) = (
            b["principal"].as_str(),
            b["csrf"].as_str(),
            b["expires"].as_i64(),
        ) else {
            return Ok(None);
        };
        if expires <= now {
            return Ok(None);
        }
        Ok(Some(Session {
            principal: principal.to_owned(),
            csrf: csrf.to_owned(),
            expires,
        }))
    }

    /// Ends a session (sign-out), on every node.
    pub async fn end(&self, id: &str) -> Result<(), SessionError> {
        if !well_formed(id) {
            return Ok(());
        }
        self.store
            .write_documents(vec![DocumentWrite::Delete {
                collection: SESSION_COLLECTION.into(),
                key: key_of(id),
                expected: Expected::Any,
            }])
            .await?;
        Ok(())
    }

    /// Deletes the expired documents of a collection (best effort: a failure leaves them for
    /// the next time; an expired document is refused anyway).
    async fn purge(&self, collection: &str, now: i64) {
        let Ok(docs) = self.store.list_documents(collection).await else {
            return;
        };
        let writes: Vec<DocumentWrite> = docs
            .into_iter()
            .filter(|d| d.body["expires"].as_i64().unwrap_or(0) <= now)
            .map(|d| DocumentWrite::Delete {
                collection: collection.into(),
                key: d.key,
                expected: Expected::Version(d.version),
            })
            .collect();
        if !writes.is_empty() {
            if let Err(e) = self.store.write_documents(writes).await {
                tracing::debug!(error = %e, collection, "console: expired documents left for later");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_compared_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn only_our_secrets_reach_the_store() {
        let rng = SystemRandom::new();
        let s = secret(&rng).expect("random");
        assert!(well_formed(&s), "{s}");
        assert!(!well_formed(""));
        assert!(!well_formed(&format!("{}=", &s[..42])));
        assert!(!well_formed(&"a".repeat(44)));
        assert_eq!(key_of(&s).len(), 64);
    }
}
