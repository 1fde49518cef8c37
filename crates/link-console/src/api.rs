//! The console's management client: every read and every change is an ARM request sent
//! in process to the management router exactly as an SDK's would arrive — the same
//! authentication layer (a bearer token minted for the signed-in principal, never shown to
//! the browser), the same `link_model` rules and permissions, the same audit record (with
//! the browser's address as its source). The console decides nothing itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http::{header, Method, Request};
use http_body_util::BodyExt as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;
use tower::ServiceExt as _;

/// Mints a short-lived management token for a principal (the server's own signing key).
pub type Mint = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// The api-versions the console sends (those the CLI sends).
pub mod versions {
    pub const RESOURCES: &str = "2025-04-01";
    pub const HEALTHCARE: &str = "2024-03-31";
    pub const NETWORK: &str = "2024-07-01";
    pub const PRIVATE_DNS: &str = "2024-06-01";
    pub const AUTHORIZATION: &str = "2022-04-01";
    pub const INSIGHTS: &str = "2021-05-01-preview";
}

/// Characters a path segment cannot carry as they are.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// An ARM error answer (or a transport failure described the same way).
#[derive(Debug, Clone)]
pub struct ArmFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// ARM's `target`, when the error names the element it is about.
    pub target: Option<String>,
}

impl ArmFailure {
    fn internal(message: impl Into<String>) -> ArmFailure {
        ArmFailure {
            status: 500,
            code: "InternalError".into(),
            message: message.into(),
            target: None,
        }
    }
}

/// The most a console read takes from one answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The management router and the means to call it as a principal.
#[derive(Clone)]
pub struct Api {
    router: Router,
    mint: Mint,
}

/// Who calls, from where.
#[derive(Clone)]
pub struct Caller<'a> {
    pub principal: &'a str,
    pub source: Option<SocketAddr>,
}

impl Api {
    pub fn new(router: Router, mint: Mint) -> Api {
        Api { router, mint }
    }

    /// One ARM call: `path` (an ARM id with or without its query) with `api_version`.
    pub async fn call(
        &self,
        caller: &Caller<'_>,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<Value, ArmFailure> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut uri = utf8_percent_encode(path, PATH).to_string();
        match query {
            Some(q) => {
                uri.push('?');
                uri.push_str(q);
                if !q.contains("api-version=") {
                    uri.push_str("&api-version=");
                    uri.push_str(api_version);
                }
            }
            None => {
                uri.push_str("?api-version=");
                uri.push_str(api_version);
            }
        }
        let token = (self.mint)(caller.principal).map_err(ArmFailure::internal)?;
        let mut builder = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(b) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = builder.body(body).map_err(|_| ArmFailure {
            status: 400,
            code: "InvalidResourceName".into(),
            message: format!("'{path}' is not a valid resource path."),
            target: None,
        })?;
        if let Some(source) = caller.source {
            req.extensions_mut().insert(ConnectInfo(source));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| ArmFailure::internal(e.to_string()))?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ArmFailure::internal(e.to_string()))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            return Ok(value);
        }
        let text = |p: &str| value.pointer(p).and_then(Value::as_str).map(str::to_owned);
        Err(ArmFailure {
            status: status.as_u16(),
            code: text("/error/code")
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned()),
            message: text("/error/message").unwrap_or_else(|| match &value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            }),
            target: text("/error/target"),
        })
    }

    pub async fn get(
        &self,
        caller: &Caller<'_>,
        path: &str,
        api_version: &str,
    ) -> Result<Value, ArmFailure> {
        self.call(caller, Method::GET, path, api_version, None)
            .await
    }

    /// The resources of one type under a scope (a subscription or resource group), from
    /// ARM's generic resource list: ids, names and regions only, which is all a choice
    /// needs, and cheap however large each resource is.
    pub async fn of_type(
        &self,
        caller: &Caller<'_>,
        scope: &str,
        resource_type: &str,
    ) -> Result<Vec<Value>, ArmFailure> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("$filter", &format!("resourceType eq '{resource_type}'"))
            .append_pair("api-version", versions::RESOURCES)
            .finish();
        self.list(
            caller,
            &format!("{scope}/resources?{query}"),
            versions::RESOURCES,
        )
        .await
    }

    /// Every item of an ARM list, following `nextLink` (at most 100 pages).
    pub async fn list(
        &self,
        caller: &Caller<'_>,
        path: &str,
        api_version: &str,
    ) -> Result<Vec<Value>, ArmFailure> {
        let mut items = Vec::new();
        let mut page = self.get(caller, path, api_version).await?;
        for _ in 0..100 {
            if let Some(Value::Array(values)) = page.get_mut("value").map(Value::take) {
                items.extend(values);
            }
            let Some(next) = page
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            else {
                break;
            };
            let next = match next.find("://") {
                Some(i) => next[i + 3..]
                    .find('/')
                    .map(|j| next[i + 3 + j..].to_owned())
                    .unwrap_or_else(|| "/".into()),
                None => next.to_owned(),
            };
            page = self.get(caller, &next, api_version).await?;
        }
        Ok(items)
    }
}
