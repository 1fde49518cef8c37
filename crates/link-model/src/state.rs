//! The control-plane state: every ARM resource by lowercase id, and its stored form.
//!
//! A [`Resource`] keeps the ARM JSON as stored (children such as subnets are resources of
//! their own and are embedded only when rendered). Resources that fhirlink manages on the
//! user's behalf — an endpoint's network interface, zone-group and auto-registered DNS
//! records, the service side of a private endpoint connection — name their `owner`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::kind::Kind;
use crate::path::parent_key;

/// One ARM resource as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The id in canonical casing, as created.
    pub id: String,
    pub kind: Kind,
    /// The stored ARM JSON (without embedded children).
    pub body: Value,
    /// The lowercase id of the resource that manages this one, if any.
    pub owner: Option<String>,
}

impl Resource {
    /// The lowercase key the state indexes this resource by.
    pub fn key(&self) -> String {
        self.id.to_lowercase()
    }

    pub fn name(&self) -> &str {
        self.body.get("name").and_then(Value::as_str).unwrap_or("")
    }

    /// `properties.<field>` of the stored body.
    pub fn prop(&self, field: &str) -> Option<&Value> {
        self.body.get("properties").and_then(|p| p.get(field))
    }

    pub fn location(&self) -> &str {
        self.body
            .get("location")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The stored document: the body plus fhirlink's bookkeeping.
    pub fn to_document(&self) -> Value {
        json!({"kind": self.kind.key(), "owner": self.owner, "resource": self.body})
    }

    /// Reads a stored document back.
    pub fn from_document(doc: &Value) -> Option<Resource> {
        let kind = Kind::from_key(doc.get("kind")?.as_str()?)?;
        let body = doc.get("resource")?.clone();
        let id = body.get("id")?.as_str()?.to_owned();
        let owner = doc.get("owner").and_then(Value::as_str).map(str::to_owned);
        Some(Resource {
            id,
            kind,
            body,
            owner,
        })
    }
}

/// The whole control-plane state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub(crate) resources: BTreeMap<String, Resource>,
    /// Private endpoints the network plane could not put on the wire (lowercase id → the
    /// reason), as it last reported them. Not stored: it is what this process saw when it
    /// tried, and it is shown as `provisioningState: Failed` on the endpoint.
    pub(crate) endpoint_faults: BTreeMap<String, String>,
}

impl State {
    /// Builds a state from stored resources.
    pub fn from_resources(resources: impl IntoIterator<Item = Resource>) -> State {
        State {
            resources: resources.into_iter().map(|r| (r.key(), r)).collect(),
            endpoint_faults: BTreeMap::new(),
        }
    }

    /// The private endpoints the network plane reported it could not serve, by lowercase
    /// id, with the reason.
    pub fn endpoint_faults(&self) -> &BTreeMap<String, String> {
        &self.endpoint_faults
    }

    /// This state with the network plane's latest report of endpoint faults (ids in any
    /// casing).
    pub fn with_endpoint_faults(mut self, faults: BTreeMap<String, String>) -> State {
        self.endpoint_faults = faults
            .into_iter()
            .map(|(id, reason)| (id.to_lowercase(), reason))
            .collect();
        self
    }

    /// Marks a rendered private endpoint (an ARM body, or a list of them under `value`) as
    /// `Failed` where the network plane reported a fault, with the reason in
    /// `properties.provisioningError`.
    pub fn mark_endpoint_faults(&self, body: &mut Value) {
        if self.endpoint_faults.is_empty() {
            return;
        }
        if let Some(items) = body.get_mut("value").and_then(Value::as_array_mut) {
            for item in items {
                self.mark_endpoint_faults(item);
            }
            return;
        }
        let Some(reason) = body
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| self.endpoint_faults.get(&id.to_lowercase()))
            .cloned()
        else {
            return;
        };
        if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
            p.insert("provisioningState".into(), Value::String("Failed".into()));
            p.insert(
                "provisioningError".into(),
                json!({"code": "PrivateEndpointListenerFailed", "message": reason}),
            );
        }
    }

    /// The resource with this id (any casing).
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.get(&id.to_lowercase())
    }

    /// Every resource, ordered by key.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// Every resource of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.resources.values().filter(move |r| r.kind == kind)
    }

    /// The direct children of `parent` (a lowercase key) of one kind.
    pub(crate) fn children<'a>(
        &'a self,
        parent: &'a str,
        kind: Kind,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        let prefix = format!("{parent}/");
        self.resources
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(move |(k, r)| r.kind == kind && parent_key(k) == parent)
            .map(|(_, r)| r)
    }

    /// Keys of the resource and everything under it.
    pub(crate) fn subtree(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}/");
        let mut out: Vec<String> = self
            .resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if self.resources.contains_key(key) {
            out.push(key.to_owned());
        }
        out
    }
}

/// A string field of a JSON object, or "".
pub(crate) fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The lowercase key of the `id` inside `{"id": …}` at `v[field]`.
pub(crate) fn ref_key(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(crate::path::key_of)
}
