//! `fhirlink client create|list|delete`: the SMART Backend Services clients of a FHIR service
//! (`Microsoft.HealthcareApis/services/smartClients`, fhirlink's own type), each its public
//! keys and the `system/` scopes the service's token endpoint (`[base]/auth/token`) may grant
//! it. The client still needs a FHIR data role on the service (e.g. FHIR Data Exporter) for
//! its tokens to be good for anything, as every principal does.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::client::{ArmClient, Connection};
use super::output::{self, at, col, Column};
use super::{api, Ids};

#[derive(Args)]
pub(crate) struct ClientCommand {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: ClientAction,
}

#[derive(Subcommand)]
enum ClientAction {
    /// Register a client with a FHIR service.
    Create {
        /// The FHIR service (in the resource group).
        #[arg(long)]
        service: String,
        /// The client id (its assertions' `iss` and `sub`) [default: a new GUID].
        #[arg(long)]
        name: Option<String>,
        /// A JWK Set file with the client's keys. Private members are dropped: only the
        /// public keys are registered.
        #[arg(
            long,
            conflicts_with = "jwks_url",
            required_unless_present = "jwks_url"
        )]
        jwks: Option<PathBuf>,
        /// Where the client publishes its JWK Set (https).
        #[arg(long)]
        jwks_url: Option<String>,
        /// A `system/` scope the client may be granted; repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List the clients of a FHIR service.
    List {
        #[arg(long)]
        service: String,
    },
    /// Remove a client: its assertions are refused from then on (tokens already issued
    /// live out their five minutes).
    Delete {
        #[arg(long)]
        service: String,
        #[arg(long)]
        name: String,
    },
}

const COLUMNS: &[Column] = &[
    col("ClientId", |v| at(v, "/name")),
    col("Scopes", |v| {
        v.pointer("/properties/scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }),
    col("Keys", |v| {
        match v.pointer("/properties/jwks/keys").and_then(Value::as_array) {
            Some(keys) => format!("{} inline", keys.len()),
            None => at(v, "/properties/jwksUrl"),
        }
    }),
];

/// Members only a private JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The public half of a JWK Set as a client keeps it (often with its private keys, marked
/// `key_ops: ["sign"]`): private members dropped, `sign` turned into `verify`.
fn public_jwks(doc: &Value) -> anyhow::Result<Value> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .context("not a JWK Set: no \"keys\" array")?;
    let mut out = Vec::new();
    for key in keys {
        let Some(key) = key.as_object() else {
            bail!("a key of the JWK Set is not an object");
        };
        let mut public: Map<String, Value> = key
            .iter()
            .filter(|(k, _)| !PRIVATE.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if public.get("kty").and_then(Value::as_str) == Some("oct") {
            continue; // a shared secret has no public half
        }
        if let Some(ops) = public.get("key_ops").and_then(Value::as_array) {
            if ops.iter().any(|o| o == "sign" || o == "verify") {
                public.insert("key_ops".into(), json!(["verify"]));
            }
        }
        out.push(Value::Object(public));
    }
    if out.is_empty() {
        bail!("the JWK Set has no public keys");
    }
    Ok(json!({"keys": out}))
}

pub(crate) async fn run_client(cmd: ClientCommand) -> anyhow::Result<()> {
    let client = ArmClient::new(&cmd.conn)?;
    let ids = Ids::new(&cmd.conn);
    let out = cmd.conn.output;
    let service_id = |s: &str| ids.resource("Microsoft.HealthcareApis/services", s);
    match cmd.action {
        ClientAction::Create {
            service,
            name,
            jwks,
            jwks_url,
            scopes,
            display_name,
        } => {
            let name = name.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let mut props = json!({"scopes": scopes});
            match (jwks, jwks_url) {
                (Some(file), _) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let doc: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))?;
                    props["jwks"] =
                        public_jwks(&doc).with_context(|| format!("{}", file.display()))?;
                }
                (None, Some(url)) => props["jwksUrl"] = json!(url),
                (None, None) => bail!("give the client's keys with --jwks FILE or --jwks-url URL"),
            }
            if let Some(d) = display_name {
                props["displayName"] = json!(d);
            }
            let id = format!("{}/smartClients/{name}", service_id(&service));
            let v = client
                .put(&id, api::HEALTHCARE, &json!({"properties": props}))
                .await?;
            output::one(out, &v, COLUMNS);
        }
        ClientAction::List { service } => {
            let id = format!("{}/smartClients", service_id(&service));
            let items: Vec<Value> = client.list(&id, api::HEALTHCARE).await?;
            output::many(out, &items, COLUMNS);
        }
        ClientAction::Delete { service, name } => {
            let id = format!("{}/smartClients/{name}", service_id(&service));
            client.delete(&id, api::HEALTHCARE).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_keys_are_registered() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "a", "alg": "RS384", "n": "AQAB", "e": "AQAB", "d": "secret",
             "p": "x", "q": "y", "dp": "1", "dq": "2", "qi": "3", "key_ops": ["sign"]},
            {"kty": "oct", "k": "shared"}
        ]});
        let public = public_jwks(&doc).unwrap();
        assert_eq!(
            public,
            json!({"keys": [{"kty": "RSA", "kid": "a", "alg": "RS384", "n": "AQAB", "e": "AQAB",
                             "key_ops": ["verify"]}]})
        );
        assert!(public_jwks(&json!({"keys": [{"kty": "oct", "k": "x"}]})).is_err());
        assert!(public_jwks(&json!({})).is_err());
    }
}
