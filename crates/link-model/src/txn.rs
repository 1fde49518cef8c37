//! One mutation in progress: a copy of the state, the keys it touched, and the side effects
//! on the data plane (FHIR services created or deleted) that the caller must carry out.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::state::{Resource, State};
use crate::Principal;

/// What a mutation changed, for the caller to persist and carry out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Stored documents by key: `Some(document)` to write, `None` to delete.
    pub documents: Vec<(String, Option<Value>)>,
    /// FHIR services to create in the store (names), before the documents are written.
    pub services_created: Vec<String>,
    /// FHIR services whose data to delete, after the documents are written.
    pub services_deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
            && self.services_created.is_empty()
            && self.services_deleted.is_empty()
    }
}

pub(crate) struct Txn<'a> {
    pub old: &'a State,
    pub st: State,
    pub who: &'a Principal,
    pub now: DateTime<Utc>,
    dirty: BTreeSet<String>,
    pub services_created: Vec<String>,
    pub services_deleted: Vec<String>,
    seq: u64,
}

/// FNV-1a, for etags and generated names that must be stable and need no randomness.
pub(crate) fn fnv(data: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A GUID-shaped string derived from `seed`.
pub(crate) fn guid_from(seed: &str) -> String {
    let a = fnv(seed);
    let b = fnv(&format!("{seed}#"));
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl<'a> Txn<'a> {
    pub fn new(old: &'a State, who: &'a Principal, now: DateTime<Utc>) -> Txn<'a> {
        Txn {
            old,
            st: old.clone(),
            who,
            now,
            dirty: BTreeSet::new(),
            services_created: Vec::new(),
            services_deleted: Vec::new(),
            seq: 0,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Resource> {
        self.st.resources.get(key)
    }

    pub fn put(&mut self, r: Resource) {
        let k = r.key();
        if self.st.resources.get(&k) != Some(&r) {
            self.dirty.insert(k.clone());
            self.st.resources.insert(k, r);
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Resource> {
        let r = self.st.resources.remove(key);
        if r.is_some() {
            self.dirty.insert(key.to_owned());
        }
        r
    }

    /// A fresh etag value (a GUID) for a resource written now.
    pub fn new_guid(&mut self, key: &str) -> String {
        self.seq += 1;
        guid_from(&format!(
            "{key}|{}|{}",
            self.now.timestamp_nanos_opt().unwrap_or_default(),
            self.seq
        ))
    }

    pub fn now_string(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// `systemData` for a resource written now, keeping the creation of `existing`.
    pub fn system_data(&self, existing: Option<&Resource>) -> Value {
        let created = existing
            .and_then(|r| r.body.get("systemData"))
            .filter(|v| v.is_object());
        let now = self.now_string();
        let mut sd = Map::new();
        sd.insert(
            "createdBy".into(),
            created
                .and_then(|c| c.get("createdBy"))
                .cloned()
                .unwrap_or_else(|| json!(self.who.id)),
        );
        sd.insert("createdByType".into(), json!("User"));
        sd.insert(
            "createdAt".into(),
            created
                .and_then(|c| c.get("createdAt"))
                .cloned()
                .unwrap_or_else(|| json!(now)),
        );
        sd.insert("lastModifiedBy".into(), json!(self.who.id));
        sd.insert("lastModifiedByType".into(), json!("User"));
        sd.insert("lastModifiedAt".into(), json!(now));
        Value::Object(sd)
    }

    pub fn finish(self) -> (State, Changes) {
        let documents = self
            .dirty
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    self.st.resources.get(k).map(Resource::to_document),
                )
            })
            .collect();
        (
            self.st,
            Changes {
                documents,
                services_created: self.services_created,
                services_deleted: self.services_deleted,
            },
        )
    }
}
