//! The management client the CLI commands share: where the API is, how to trust it, which
//! token to send, and one `call` that turns ARM's error bodies into readable errors.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use link_auth::identity::{unix_now, LocalIssuer};
use reqwest::Method;
use serde_json::Value;

/// The subscription the CLI uses unless told otherwise (any well-formed id works).
pub(crate) const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// Lifetime of the token the CLI mints for itself.
const SELF_TOKEN_SECS: i64 = 600;

/// How to reach and authenticate to the management API, shared by every client command.
#[derive(Args, Clone)]
pub(crate) struct Connection {
    /// Base URL of the management API.
    #[arg(
        long,
        env = "FHIRLINK_ADMIN_URL",
        default_value = "https://127.0.0.1:8081",
        global = true
    )]
    pub(crate) admin_url: String,
    /// The server's data folder: its CA certificate is trusted, and its signing key mints
    /// the token unless --token is given.
    #[arg(
        long,
        env = "FHIRLINK_DATA",
        default_value = "./fhirlink-data",
        global = true
    )]
    pub(crate) data: PathBuf,
    /// A bearer token to send instead of minting one.
    #[arg(long, env = "FHIRLINK_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// The principal a minted token names.
    #[arg(
        long,
        env = "FHIRLINK_PRINCIPAL",
        default_value = "admin",
        global = true
    )]
    pub(crate) principal: String,
    /// CA certificate (PEM) to trust for the management API [default: <data>/tls/ca.pem].
    #[arg(long, env = "FHIRLINK_CA_CERT", global = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Subscription id.
    #[arg(long, env = "FHIRLINK_SUBSCRIPTION", default_value = DEFAULT_SUBSCRIPTION, global = true)]
    pub(crate) subscription: String,
    /// Resource group.
    #[arg(
        short = 'g',
        long,
        env = "FHIRLINK_RESOURCE_GROUP",
        default_value = "fhirlink",
        global = true
    )]
    pub(crate) resource_group: String,
    /// Output format: a table for people, JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub(crate) output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

/// A connected management client.
pub(crate) struct ArmClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ArmClient {
    pub(crate) fn new(conn: &Connection) -> anyhow::Result<ArmClient> {
        let base = conn.admin_url.trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("fhirlink-cli/", env!("CARGO_PKG_VERSION")));
        if base.starts_with("https://") {
            let ca = conn
                .ca_cert
                .clone()
                .unwrap_or_else(|| conn.data.join("tls").join("ca.pem"));
            let pem = std::fs::read(&ca).with_context(|| {
                format!(
                    "reading the CA certificate {} (pass --ca-cert, or --data of the server)",
                    ca.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
            builder = builder.tls_certs_only(certs);
        } else if !base.starts_with("http://") {
            bail!("--admin-url must start with https:// or http://");
        }
        let token = match &conn.token {
            Some(t) => t.trim().to_string(),
            None => {
                LocalIssuer::load(&conn.data)?.mint(&conn.principal, unix_now(), SELF_TOKEN_SECS)?
            }
        };
        Ok(ArmClient {
            http: builder.build().context("building the HTTPS client")?,
            base,
            token,
        })
    }

    /// One management call on resource `id` (a path starting with `/`) with `api_version`
    /// unless the id already carries one. Returns the response body (Null when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        id: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut url = format!("{}/{}", self.base, id.trim_start_matches('/'));
        if !id.to_ascii_lowercase().contains("api-version=") {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("api-version=");
            url.push_str(api_version);
        }
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let code = value
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error"));
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        bail!("{method} {id}: {} {code}: {message}", status.as_u16())
    }

    /// A request to `path` on the management API with the bearer token, for the calls whose
    /// answer is not ARM JSON (a backup's byte stream).
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/{}", self.base, path.trim_start_matches('/')),
            )
            .bearer_auth(&self.token)
    }

    pub(crate) async fn get(&self, id: &str, api_version: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, id, api_version, None).await
    }

    pub(crate) async fn put(
        &self,
        id: &str,
        api_version: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.call(Method::PUT, id, api_version, Some(body)).await
    }

    pub(crate) async fn patch(
        &self,
        id: &str,
        api_version: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.call(Method::PATCH, id, api_version, Some(body)).await
    }

    pub(crate) async fn delete(&self, id: &str, api_version: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, id, api_version, None).await
    }

    /// Every item of a list, following `nextLink` (ARM's paging) up to a sane bound.
    pub(crate) async fn list(&self, id: &str, api_version: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut page = self.get(id, api_version).await?;
        for _ in 0..1000 {
            if let Some(values) = page.get("value").and_then(Value::as_array) {
                items.extend(values.iter().cloned());
            }
            let Some(next) = page
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            else {
                return Ok(items);
            };
            // nextLink is absolute; only its path and query are ours to follow.
            let path = match next.find("://") {
                Some(i) => next[i + 3..]
                    .find('/')
                    .map(|j| &next[i + 3 + j..])
                    .unwrap_or("/"),
                None => next,
            };
            page = self.get(path, api_version).await?;
        }
        Ok(items)
    }
}
