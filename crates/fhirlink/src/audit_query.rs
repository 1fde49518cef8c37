//! `GET /fhirlink/audit` on the management listener: the newest audit records of
//! `audit.ndjson`, filtered, for the web console's audit log blade (and any client).
//!
//! Reading the audit records is authorized like reading the metrics — the same records
//! counted — `Microsoft.Insights/metrics/read` at the root scope, and is audited and counted
//! under that action. Only the file's last [`TAIL_BYTES`] are read, so an answer costs the
//! same however long the server has run.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use link_model::Principal;
use serde_json::{json, Value};

/// How much of the end of the file one query reads.
const TAIL_BYTES: u64 = 16 * 1024 * 1024;
/// The most records one answer holds.
const MAX_TOP: usize = 1000;
pub(crate) const AUDIT_PATH: &str = "/fhirlink/audit";

/// What a query keeps: each given field must match (case-insensitively); `since` and
/// `until` bound the record's `time` (RFC 3339).
#[derive(Debug, Default)]
pub(crate) struct Filter {
    service: Option<String>,
    network_path: Option<String>,
    verdict: Option<String>,
    principal: Option<String>,
    since: Option<String>,
    until: Option<String>,
    top: usize,
}

fn bad(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "InvalidParameter", "message": message}})),
    )
        .into_response()
}

/// A time bound in the records' own format (`2026-12-07T23:59:01.123Z`), so that the
/// comparison is one of strings.
fn bound(name: &str, value: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        })
        .map_err(|_| format!("The query parameter '{name}' must be an RFC 3339 time."))
}

impl Filter {
    pub(crate) fn parse(q: &std::collections::HashMap<String, String>) -> Result<Filter, String> {
        let text = |k: &str| {
            q.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let top = match text("top") {
            None => 200,
            Some(t) => match t.parse::<usize>() {
                Ok(n) if (1..=MAX_TOP).contains(&n) => n,
                _ => return Err(format!("The query parameter 'top' must be 1 to {MAX_TOP}.")),
            },
        };
        Ok(Filter {
            service: text("service"),
            network_path: text("networkPath"),
            verdict: text("verdict"),
            principal: text("principal"),
            since: text("since").map(|v| bound("since", &v)).transpose()?,
            until: text("until").map(|v| bound("until", &v)).transpose()?,
            top,
        })
    }

    fn keeps(&self, r: &Value) -> bool {
        let eq = |want: &Option<String>, field: &str| {
            want.as_ref().is_none_or(|w| {
                r.get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(w))
            })
        };
        let time = r.get("time").and_then(Value::as_str).unwrap_or("");
        eq(&self.service, "service")
            && eq(&self.network_path, "networkPath")
            && eq(&self.verdict, "verdict")
            && eq(&self.principal, "principal")
            && self.since.as_deref().is_none_or(|s| time >= s)
            && self.until.as_deref().is_none_or(|u| time <= u)
    }

    /// The newest records of `text` (NDJSON) this filter keeps, newest first.
    pub(crate) fn select(&self, text: &str) -> Vec<Value> {
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| self.keeps(r))
            .take(self.top)
            .collect()
    }
}

/// The last [`TAIL_BYTES`] of the file, from its first whole line.
fn tail(file: &std::path::Path) -> std::io::Result<String> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        text = text
            .split_once('\n')
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default();
    }
    Ok(text)
}

pub(crate) async fn route(
    State((control_plane, file)): State<(Arc<link_api::ControlPlane>, PathBuf)>,
    Extension(who): Extension<Principal>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let action = link_model::METRICS_READ;
    let decided = link_model::ArmAction {
        name: action,
        resource_type: Some("Microsoft.Insights/metrics"),
        resource_id: None,
        service: None,
    };
    let mut resp = if !link_model::allowed(&control_plane.snapshot(), &who, action, "") {
        let message = format!(
            "The client '{0}' with object id '{0}' does not have authorization to perform action '{action}' over scope '/' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            who.id
        );
        (
            StatusCode::FORBIDDEN,
            Json(json!({"error": {"code": "AuthorizationFailed", "message": message}})),
        )
            .into_response()
    } else {
        match Filter::parse(&query) {
            Err(m) => bad(m),
            Ok(filter) => match tokio::task::spawn_blocking(move || tail(&file)).await {
                Ok(Ok(text)) => Json(json!({"value": filter.select(&text)})).into_response(),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": {"code": "InternalError", "message": "The audit log could not be read."}})),
                )
                    .into_response(),
            },
        }
    };
    resp.extensions_mut().insert(decided);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pairs: &[(&str, &str)]) -> Result<Filter, String> {
        Filter::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn filters_keep_the_newest_matching_records() {
        let text = [
            r#"{"time":"2026-12-07T10:00:00.000Z","service":"myfhir","networkPath":"public","verdict":"public-network-access-disabled","principal":null}"#,
            r#"{"time":"2026-12-07T11:00:00.000Z","service":null,"networkPath":"management","verdict":"allowed","principal":"viewer"}"#,
            "not json",
            r#"{"time":"2026-12-07T12:00:00.000Z","service":"MyFhir","networkPath":"endpoint","verdict":"allowed","principal":"admin"}"#,
        ]
        .join("\n");
        let times = |f: Filter| -> Vec<String> {
            f.select(&text)
                .iter()
                .map(|r| r["time"].as_str().unwrap_or("").to_owned())
                .collect()
        };
        assert_eq!(times(filter(&[]).unwrap()).len(), 3);
        assert_eq!(
            times(filter(&[("service", "myfhir")]).unwrap()),
            ["2026-12-07T12:00:00.000Z", "2026-12-07T10:00:00.000Z"]
        );
        assert_eq!(
            times(filter(&[("principal", "viewer")]).unwrap()),
            ["2026-12-07T11:00:00.000Z"]
        );
        assert_eq!(
            times(
                filter(&[
                    ("since", "2026-12-07T10:30:00Z"),
                    ("until", "2026-12-07T11:30:00+00:00")
                ])
                .unwrap()
            ),
            ["2026-12-07T11:00:00.000Z"]
        );
        assert_eq!(
            times(filter(&[("top", "1")]).unwrap()),
            ["2026-12-07T12:00:00.000Z"]
        );
        for bad in [[("top", "0")], [("top", "1001")], [("since", "yesterday")]] {
            assert!(filter(&bad).is_err(), "{bad:?}");
        }
    }
}
