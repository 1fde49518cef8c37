//! A Bulk Data Access IG 2.0.0 client: `$export` against any FHIR server that speaks the IG
//! (fhirlink's own, Azure API for FHIR's, …), as `fhirlink export` runs it and `fhirlink
//! migrate` will: the kick-off (`Prefer: respond-async`), polling the status URL as the
//! server asks (`Retry-After`, `429`), the manifest, and every output file downloaded into a
//! folder, each checked against the manifest's `count`. What it shows while it works goes to
//! a [`Progress`], so that the CLI can draw bars and a script can log lines.
//!
//! The output folder gets the files under their names in the URLs (`Type-N.ndjson` on
//! fhirlink and Azure), `manifest.json` (the server's manifest as it came), and nothing
//! else; a download that fails leaves no file of that name behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// What went wrong, with what the server said.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{what}: the server answered {status}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the export did not finish within {0:?}")]
    TimedOut(Duration),
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// The FHIR base URL, without a trailing slash.
    pub base: String,
    /// `$export` at `""` (system), `"Patient"` or `"Group/<id>"`.
    pub level: String,
    pub types: Vec<String>,
    pub since: Option<String>,
    pub type_filters: Vec<String>,
    /// Other kick-off parameters, as sent (`includeAssociatedData=_history,_deleted`, Azure's).
    pub extra: Vec<(String, String)>,
    /// A bearer token for every request (the IG's `requiresAccessToken` files too).
    pub token: Option<String>,
    /// The folder the files are written to (created when missing).
    pub out: PathBuf,
    /// Give up polling after this long.
    pub timeout: Duration,
}

/// What the client reports as it works.
pub trait Progress: Send + Sync {
    /// The job was accepted at this status URL.
    fn accepted(&self, _status_url: &str) {}
    /// A poll answered "still running", with the server's `X-Progress` text.
    fn running(&self, _progress: &str) {}
    /// The manifest came: this many files, with these line counts in all.
    fn manifest(&self, _files: usize, _resources: u64) {}
    /// A file is being downloaded.
    fn file(&self, _name: &str, _resources: u64) {}
    /// Bytes of the current file arrived.
    fn bytes(&self, _n: u64) {}
    /// A file is done, with its lines.
    fn file_done(&self, _name: &str, _lines: u64) {}
}

/// No reporting.
pub struct Quiet;
impl Progress for Quiet {}

/// One downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub rtype: String,
    pub path: PathBuf,
    pub lines: u64,
}

/// The result of an export.
#[derive(Debug, Clone)]
pub struct Exported {
    pub manifest: Value,
    pub status_url: String,
    pub output: Vec<Downloaded>,
    pub deleted: Vec<Downloaded>,
    pub errors: Vec<Downloaded>,
}

impl Exported {
    /// Resources in the output files.
    pub fn resources(&self) -> u64 {
        self.output.iter().map(|d| d.lines).sum()
    }
}

/// The kick-off URL of `req`.
pub fn kick_off_url(req: &ExportRequest) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    if !req.types.is_empty() {
        ser.append_pair("_type", &req.types.join(","));
    }
    if let Some(s) = &req.since {
        ser.append_pair("_since", s);
    }
    for f in &req.type_filters {
        ser.append_pair("_typeFilter", f);
    }
    for (k, v) in &req.extra {
        ser.append_pair(k, v);
    }
    let qs = ser.finish();
    let level = req.level.trim_matches('/');
    let path = if level.is_empty() {
        "$export".to_owned()
    } else {
        format!("{level}/$export")
    };
    let base = req.base.trim_end_matches('/');
    if qs.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{qs}")
    }
}

fn authorized(b: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => b.bearer_auth(t),
        None => b,
    }
}

/// The text of an error answer: an OperationOutcome's diagnostics, or the body itself.
async fn refusal(what: &str, resp: reqwest::Response) -> ExportError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["issue"].as_array().map(|issues| {
                issues
                    .iter()
                    .filter_map(|i| i["diagnostics"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| text.chars().take(500).collect());
    ExportError::Refused {
        what: what.to_owned(),
        status,
        message,
    }
}

fn retry_after(resp: &reqwest::Response, default: Duration) -> Duration {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default, |s| Duration::from_secs(s.clamp(1, 120)))
}

/// Kicks off, polls until the manifest, and downloads every file into `req.out`.
pub async fn export(
    http: &reqwest::Client,
    req: &ExportRequest,
    progress: &dyn Progress,
) -> Result<Exported, ExportError> {
    let token = req.token.as_deref();
    let url = kick_off_url(req);
    let resp = authorized(http.get(&url), token)
        .header("prefer", "respond-async")
        .header(ACCEPT, "application/fhir+json")
        .send()
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(refusal("the kick-off", resp).await);
    }
    let status_url = content_location(&resp)?;
    progress.accepted(&status_url);
    let manifest = poll(
        http,
        &status_url,
        token,
        req.timeout,
        "the export",
        progress,
    )
    .await?;
    let files = |key: &str| -> Vec<(String, String, Option<u64>)> {
        manifest[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    f["type"].as_str()?.to_owned(),
                    f["url"].as_str()?.to_owned(),
                    f["count"].as_u64(),
                ))
            })
            .collect()
    };
    let (output, deleted, errors) = (files("output"), files("deleted"), files("error"));
    progress.manifest(
        output.len() + deleted.len() + errors.len(),
        output.iter().filter_map(|f| f.2).sum(),
    );
    tokio::fs::create_dir_all(&req.out)
        .await
        .map_err(|error| ExportError::Io {
            path: req.out.clone(),
            error,
        })?;
    let send_token = manifest["requiresAccessToken"].as_bool().unwrap_or(true);
    let mut got = (Vec::new(), Vec::new(), Vec::new());
    for (list, into) in [
        (&output, &mut got.0),
        (&deleted, &mut got.1),
        (&errors, &mut got.2),
    ] {
        for (rtype, url, count) in list {
            let token = if send_token { token } else { None };
            let d = download(http, url, rtype, *count, token, &req.out, progress).await?;
            into.push(d);
        }
    }
    let manifest_path = req.out.join("manifest.json");
    tokio::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )
    .await
    .map_err(|error| ExportError::Io {
        path: manifest_path,
        error,
    })?;
    Ok(Exported {
        manifest,
        status_url,
        output: got.0,
        deleted: got.1,
        errors: got.2,
    })
}

/// The status URL a kick-off's `202` names.
fn content_location(resp: &reqwest::Response) -> Result<String, ExportError> {
    resp.headers()
        .get(CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ExportError::Protocol("the kick-off's 202 has no Content-Location".into()))
}

/// Polls a status URL as the server asks (`Retry-After`, `429`) until its `200`: the body.
async fn poll(
    http: &reqwest::Client,
    status_url: &str,
    token: Option<&str>,
    timeout: Duration,
    what: &str,
    progress: &dyn Progress,
) -> Result<Value, ExportError> {
    let started = Instant::now();
    loop {
        let resp = authorized(http.get(status_url), token)
            .header(ACCEPT, "application/json")
            .send()
            .await?;
        match resp.status() {
            StatusCode::OK => return Ok(resp.json().await?),
            StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(&resp, Duration::from_secs(1));
                if let Some(p) = resp
                    .headers()
                    .get("x-progress")
                    .and_then(|v| v.to_str().ok())
                {
                    progress.running(p);
                }
                if started.elapsed() + wait > timeout {
                    return Err(ExportError::TimedOut(timeout));
                }
                tokio::time::sleep(wait).await;
            }
            _ => return Err(refusal(what, resp).await),
        }
    }
}

/// What to import: AHDS's `$import` body, inputs by URL (`file:` URLs under the server's
/// import folder on fhirlink).
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// The FHIR base URL, without a trailing slash.
    pub base: String,
    /// `(type, url)` of each input.
    pub inputs: Vec<(String, String)>,
    /// `InitialLoad` or `IncrementalLoad` (the server's default when `None`).
    pub mode: Option<String>,
    pub token: Option<String>,
    pub timeout: Duration,
}

/// The result of an import: the manifest, and its totals.
#[derive(Debug, Clone)]
pub struct Imported {
    pub manifest: Value,
    pub status_url: String,
    /// Resources written.
    pub resources: u64,
    /// Lines refused (listed in the manifest's error files).
    pub errors: u64,
}

/// The `Parameters` body of `$import` for `req`.
pub fn import_body(req: &ImportRequest) -> Value {
    let mut parameter =
        vec![serde_json::json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"})];
    if let Some(m) = &req.mode {
        parameter.push(serde_json::json!({"name": "mode", "valueString": m}));
    }
    for (rtype, url) in &req.inputs {
        parameter.push(serde_json::json!({"name": "input", "part": [
            {"name": "type", "valueString": rtype},
            {"name": "url", "valueUri": url}
        ]}));
    }
    serde_json::json!({"resourceType": "Parameters", "parameter": parameter})
}

/// Kicks off `$import` and polls until its manifest.
pub async fn import(
    http: &reqwest::Client,
    req: &ImportRequest,
    progress: &dyn Progress,
) -> Result<Imported, ExportError> {
    let token = req.token.as_deref();
    let url = format!("{}/$import", req.base.trim_end_matches('/'));
    let resp = authorized(http.post(&url), token)
        .header("prefer", "respond-async")
        .header(ACCEPT, "application/fhir+json")
        .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
        .body(import_body(req).to_string())
        .send()
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(refusal("the import's kick-off", resp).await);
    }
    let status_url = content_location(&resp)?;
    progress.accepted(&status_url);
    let manifest = poll(
        http,
        &status_url,
        token,
        req.timeout,
        "the import",
        progress,
    )
    .await?;
    let sum = |key: &str| -> u64 {
        manifest[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["count"].as_u64())
            .sum()
    };
    Ok(Imported {
        resources: sum("output"),
        errors: sum("error"),
        manifest,
        status_url,
    })
}

/// A file's name from its URL: the last path segment when it is a plain file name, or
/// `Type-N.ndjson` numbered after what is already there.
fn file_name(url: &str, rtype: &str, out: &Path) -> String {
    let last = url
        .split(['?', '#'])
        .next()
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or_default();
    let plain = !last.is_empty()
        && last.len() <= 128
        && !last.starts_with('.')
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        return if last.ends_with(".ndjson") {
            last.to_owned()
        } else {
            format!("{last}.ndjson")
        };
    }
    (1..)
        .map(|n| format!("{rtype}-{n}.ndjson"))
        .find(|n| !out.join(n).exists())
        .unwrap_or_default()
}

async fn download(
    http: &reqwest::Client,
    url: &str,
    rtype: &str,
    count: Option<u64>,
    token: Option<&str>,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Downloaded, ExportError> {
    let name = file_name(url, rtype, out);
    progress.file(&name, count.unwrap_or(0));
    let mut resp = authorized(http.get(url), token)
        .header(ACCEPT, "application/fhir+ndjson")
        .send()
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(refusal(&format!("downloading {url}"), resp).await);
    }
    let path = out.join(&name);
    let partial = out.join(format!(".{name}.partial"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ExportError::Io { path, error }
    };
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(io(&partial))?;
    let mut lines = 0u64;
    let mut last = b'\n';
    let result: Result<(), ExportError> = async {
        while let Some(chunk) = resp.chunk().await? {
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            if let Some(b) = chunk.last() {
                last = *b;
            }
            file.write_all(&chunk).await.map_err(io(&partial))?;
            progress.bytes(chunk.len() as u64);
        }
        file.flush().await.map_err(io(&partial))?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    if last != b'\n' {
        lines += 1;
    }
    if let Some(c) = count {
        if c != lines {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(ExportError::Protocol(format!(
                "{url}: {lines} lines where the manifest says {c}"
            )));
        }
    }
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(io(&path))?;
    progress.file_done(&name, lines);
    Ok(Downloaded {
        rtype: rtype.to_owned(),
        path,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_off_urls() {
        let mut r = ExportRequest {
            base: "https://fhir.example/".into(),
            ..ExportRequest::default()
        };
        assert_eq!(kick_off_url(&r), "https://fhir.example/$export");
        r.level = "Group/g1".into();
        r.types = vec!["Patient".into(), "Observation".into()];
        r.since = Some("2020-01-01T00:00:00Z".into());
        r.type_filters = vec!["Observation?status=final".into()];
        assert_eq!(
            kick_off_url(&r),
            "https://fhir.example/Group/g1/$export?_type=Patient%2CObservation&_since=2020-01-01T00%3A00%3A00Z&_typeFilter=Observation%3Fstatus%3Dfinal"
        );
    }

    #[test]
    fn file_names_are_never_paths() {
        let dir = std::env::temp_dir();
        assert_eq!(
            file_name(
                "https://x/_operations/export/j/Patient-1.ndjson",
                "Patient",
                &dir
            ),
            "Patient-1.ndjson"
        );
        assert_eq!(
            file_name("https://x/files/abc?sig=1", "Patient", &dir),
            "abc.ndjson"
        );
        let odd = file_name("https://x/files/..", "Observation", &dir);
        assert!(
            odd.starts_with("Observation-") && !odd.contains('/'),
            "{odd}"
        );
    }
}
