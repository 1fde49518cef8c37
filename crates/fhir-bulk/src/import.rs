//! `$import` in the shape of Azure Health Data Services: `POST [base]/$import` with a
//! Parameters body (`inputFormat`, `mode`, `input` entries with `type`, `url`, `etag`), run
//! as an asynchronous job whose status URL is `[base]/_operations/import/[id]`.
//!
//! Inputs are NDJSON files named by `file:` URLs under a folder the operator allows
//! ([`crate::BulkConfig::import_dirs`]). Each file is read in chunks of lines; the lines of a
//! chunk are parsed, validated and their search index extracted on every core, then written
//! in one store transaction ([`fhir_store::WriteTx::put_version`]): a resource is visible
//! whole or not at all, and a bad line is reported in the job's error output (an
//! OperationOutcome naming its file and line number) without stopping the others.
//!
//! Modes: `IncrementalLoad` (the default) keeps `meta.versionId` and `meta.lastUpdated`
//! where the line has them, so history and `_since` stay true for migrated data, and records
//! lines marked with Azure's `deleted-state` extension (`soft-deleted`) as deletions; a
//! version at or below the stored one is counted as already imported. `InitialLoad` only
//! creates: a line whose resource exists at another version is an error. Both keep ids.
//! After each chunk the job's document records how far each input is, so a server
//! restarted mid-import goes on from there (at most one chunk is written again, which the
//! version rule makes a no-op for lines that carry their version).

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fhir_store::{DocumentWrite, Expected, Prepared, Store, StoreError, VersionWrite};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{io, BulkError, JobState, KickOff};

/// The store collection of import job documents.
pub const COLLECTION: &str = "bulk-import-jobs";

/// Azure's soft-delete mark on an exported version (`meta.extension`).
pub const DELETED_STATE: &str = "http://azurehealthcareapis.com/data-extensions/deleted-state";

/// Lines longer than this are reported as errors rather than read into memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How an import treats what the service already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportMode {
    /// Creates only; a resource that exists at another version is an error.
    InitialLoad,
    /// Keeps versions, instants, history and soft deletes (the default).
    IncrementalLoad,
}

/// One `input` of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportInput {
    /// The resource type its lines must be, when given.
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    /// As the request gave it (`file:///…`).
    pub url: String,
    pub etag: Option<String>,
    /// The file a `file:` URL names, checked to be under an import folder; empty for an
    /// `https:` URL (downloaded into the job's folder when its turn comes).
    pub path: PathBuf,
}

impl ImportInput {
    /// Whether it is another server's file, fetched over HTTPS.
    pub fn is_remote(&self) -> bool {
        self.url.starts_with("https://")
    }
}

/// The checked parameters of an `$import` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportParams {
    pub mode: ImportMode,
    pub inputs: Vec<ImportInput>,
}

/// Inputs one request may name (Azure took at most 10,000 files per operation).
pub const MAX_INPUTS: usize = 10_000;

impl ImportParams {
    /// Reads the Parameters body of `POST $import`. Unknown parameters are refused unless
    /// `lenient`; `url` may be a `valueUri`, `valueUrl` or `valueString` (Azure's migration
    /// tool sends strings); every `file:` URL must name a file under one of `dirs`, every
    /// `https:` URL must be under one of `urls`.
    pub fn from_parameters(
        body: &Value,
        lenient: bool,
        dirs: &[PathBuf],
        urls: &[crate::remote::RemoteSource],
    ) -> Result<ImportParams, BulkError> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(BulkError::invalid(
                "Parameters",
                "the body of $import must be a Parameters resource",
            ));
        }
        let params = body
            .get("parameter")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut mode = ImportMode::IncrementalLoad;
        let mut format = None;
        let mut inputs = Vec::new();
        for (i, param) in params.iter().enumerate() {
            let path = format!("Parameters.parameter[{i}]");
            let name = param
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match name {
                "inputFormat" => format = Some((string_value(param, &path)?, path)),
                "mode" => {
                    mode = match string_value(param, &path)?.as_str() {
                        "InitialLoad" => ImportMode::InitialLoad,
                        "IncrementalLoad" => ImportMode::IncrementalLoad,
                        other => {
                            return Err(BulkError::invalid(
                                &path,
                                format!(
                                    "mode {other:?} is not known: InitialLoad or IncrementalLoad"
                                ),
                            ))
                        }
                    }
                }
                "input" => {
                    if inputs.len() == MAX_INPUTS {
                        return Err(BulkError::invalid(
                            &path,
                            format!("at most {MAX_INPUTS} inputs are taken per $import"),
                        ));
                    }
                    inputs.push(input(param, &path, dirs, urls)?);
                }
                // The SMART bulk-import proposal's parts, which name where inputs come from;
                // here the URLs say it.
                "inputSource" | "storageDetail" => {}
                _ if lenient => {}
                _ => {
                    return Err(BulkError::invalid(
                        &path,
                        format!(
                            "$import takes inputFormat, mode and input, not {name:?} \
                             (Prefer: handling=lenient ignores unknown parameters)"
                        ),
                    ))
                }
            }
        }
        match format {
            Some((f, _)) if f == "application/fhir+ndjson" => {}
            Some((f, path)) => {
                return Err(BulkError::invalid(
                    &path,
                    format!("inputFormat {f:?} is not supported: application/fhir+ndjson"),
                ))
            }
            None => {
                return Err(BulkError::invalid(
                    "Parameters.parameter",
                    "inputFormat is required (application/fhir+ndjson)",
                ))
            }
        }
        if inputs.is_empty() {
            return Err(BulkError::invalid(
                "Parameters.parameter",
                "$import needs at least one input",
            ));
        }
        Ok(ImportParams { mode, inputs })
    }
}

fn string_value(param: &Value, path: &str) -> Result<String, BulkError> {
    ["valueString", "valueCode", "valueUri", "valueUrl"]
        .iter()
        .find_map(|k| param.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| BulkError::invalid(path, "the parameter needs a string value"))
}

fn input(
    param: &Value,
    path: &str,
    dirs: &[PathBuf],
    urls: &[crate::remote::RemoteSource],
) -> Result<ImportInput, BulkError> {
    let parts = param
        .get("part")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (mut rtype, mut url, mut etag) = (None, None, None);
    for (j, part) in parts.iter().enumerate() {
        let ppath = format!("{path}.part[{j}]");
        match part.get("name").and_then(Value::as_str).unwrap_or_default() {
            "type" => {
                let t = string_value(part, &ppath)?;
                if !fhir_model::r4().is_resource_type(&t) {
                    return Err(BulkError::invalid(
                        &ppath,
                        format!("{t:?} is not an R4 resource type"),
                    ));
                }
                rtype = Some(t);
            }
            "url" => url = Some((string_value(part, &ppath)?, ppath)),
            "etag" => etag = Some(string_value(part, &ppath)?),
            other => {
                return Err(BulkError::invalid(
                    &ppath,
                    format!("an input has type, url and etag, not {other:?}"),
                ))
            }
        }
    }
    let (url, upath) = url.ok_or_else(|| BulkError::invalid(path, "an input needs a url"))?;
    let file = if url.starts_with("https:") {
        crate::remote::source_of(&url, urls).map_err(|m| BulkError::invalid(&upath, m))?;
        PathBuf::new()
    } else {
        file_path(&url, dirs).map_err(|m| BulkError::invalid(&upath, m))?
    };
    Ok(ImportInput {
        rtype,
        url,
        etag,
        path: file,
    })
}

/// The file a `file:` URL names, when it is a regular file under one of `dirs` (after every
/// link is resolved: `..` and symbolic links cannot leave the folder).
pub fn file_path(url: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let Some(rest) = url.strip_prefix("file://") else {
        return Err(if url.starts_with("http:") {
            format!(
                "{url}: only file: URLs under the server's import folder and https: URLs \
                 under an allowed prefix (--import-url) are taken"
            )
        } else {
            format!("{url} is not a file: URL")
        });
    };
    // file:///path or file://localhost/path.
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return Err(format!(
            "{url}: a file: URL must name an absolute path on this host"
        ));
    }
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| format!("{url}: the path is not UTF-8"))?;
    if dirs.is_empty() {
        return Err(
            "this server takes no import files: start it with --import-dir to allow a folder"
                .into(),
        );
    }
    let real = std::fs::canonicalize(decoded.as_ref())
        .map_err(|e| format!("{url}: cannot be opened: {e}"))?;
    let inside = dirs.iter().any(|d| {
        std::fs::canonicalize(d)
            .map(|d| real.starts_with(d))
            .unwrap_or(false)
    });
    if !inside {
        return Err(format!(
            "{url} is not under an import folder of this server (--import-dir)"
        ));
    }
    if !real.is_file() {
        return Err(format!("{url} is not a regular file"));
    }
    Ok(real)
}

/// How far one input is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputProgress {
    /// Bytes of the file read and accounted for (written, skipped or reported).
    pub bytes: u64,
    /// Lines read (blank ones included, so error line numbers are the file's).
    pub lines: u64,
    /// Resources written, per type.
    pub counts: BTreeMap<String, u64>,
    /// Lines whose version was already stored.
    pub skipped: u64,
    /// Lines reported in the error file, and its length.
    pub errors: u64,
    pub error_bytes: u64,
    pub done: bool,
    /// An `https:` input: the length of its copy in the job's folder, once downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<u64>,
}

/// An import job's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportJob {
    pub id: String,
    pub service: String,
    pub state: JobState,
    pub request: String,
    pub base: String,
    pub owner: String,
    pub created: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub params: ImportParams,
    pub progress: Vec<InputProgress>,
    pub failure: Option<String>,
    pub attempts: u32,
}

impl ImportJob {
    pub fn key(&self) -> String {
        crate::job::key(&self.service, &self.id)
    }

    /// The error file of input `i`.
    pub fn error_file(i: usize) -> String {
        format!("Errors-{}.ndjson", i + 1)
    }

    fn totals(&self) -> (u64, u64, u64) {
        self.progress.iter().fold((0, 0, 0), |(w, s, e), p| {
            (
                w + p.counts.values().sum::<u64>(),
                s + p.skipped,
                e + p.errors,
            )
        })
    }
}

/// The status URL of an import job under `base`.
pub fn status_url(base: &str, id: &str) -> String {
    format!("{}/_operations/import/{id}", base.trim_end_matches('/'))
}

/// The completion manifest, in AHDS's shape: `output` per input and type with its count
/// and `inputUrl`, `error` per input with errors with the URL of its OperationOutcome file.
pub fn manifest(job: &ImportJob, base: &str) -> Value {
    let status = status_url(base, &job.id);
    let mut output = Vec::new();
    let mut error = Vec::new();
    for (i, (input, p)) in job.params.inputs.iter().zip(&job.progress).enumerate() {
        for (rtype, count) in &p.counts {
            output.push(json!({"type": rtype, "count": count, "inputUrl": input.url}));
        }
        if p.errors > 0 {
            error.push(json!({
                "type": "OperationOutcome",
                "count": p.errors,
                "inputUrl": input.url,
                "url": format!("{status}/{}", ImportJob::error_file(i)),
            }));
        }
    }
    let (_, skipped, _) = job.totals();
    json!({
        "transactionTime": fhir_store::format_instant(&job.finished.unwrap_or(job.created)),
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": error,
        "extension": {"skipped": skipped, "mode": job.params.mode},
    })
}

/// What a poll of an import finds.
#[derive(Debug, Clone)]
pub enum ImportStatus {
    InProgress {
        progress: String,
    },
    /// Done: the manifest, and when the job and its error files expire.
    Completed {
        manifest: Value,
        expires: DateTime<Utc>,
    },
    Failed {
        message: String,
        manifest: Value,
    },
}

/// A job of this process, as it runs.
#[derive(Debug, Default)]
pub(crate) struct Running {
    pub(crate) cancelled: AtomicBool,
    pub(crate) bytes: AtomicU64,
    pub(crate) resources: AtomicU64,
    /// Where the time went, in microseconds, for the job's last log line: reading and
    /// preparing lines (the reader thread), the writer waiting for them, writing chunks,
    /// and recording progress and errors.
    pub(crate) phases: [AtomicU64; 4],
}

/// The phases of [`Running::phases`].
const PREPARING: usize = 0;
const WAITING: usize = 1;
const WRITING: usize = 2;
const RECORDING: usize = 3;

impl Running {
    fn time(&self, phase: usize, since: std::time::Instant) {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.phases[phase].fetch_add(micros, Ordering::Relaxed);
    }

    fn seconds(&self, phase: usize) -> f64 {
        self.phases[phase].load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// A line made ready for the store.
#[derive(Debug)]
struct Ready {
    line: u64,
    rtype: String,
    id: String,
    version: Option<u64>,
    last_updated: Option<DateTime<Utc>>,
    /// `None`: a soft deletion.
    prepared: Option<Prepared>,
}

/// A line that cannot be imported: its number and the issues.
#[derive(Debug)]
struct Bad {
    line: u64,
    issues: Vec<fhir_model::Issue>,
}

fn bad(line: u64, code: fhir_model::IssueCode, msg: impl Into<String>) -> Bad {
    Bad {
        line,
        issues: vec![fhir_model::Issue::error(code, msg)],
    }
}

/// Parses, checks and indexes one line (pure; runs on a blocking thread). `Ok(None)` for a
/// blank line.
fn prepare(line_no: u64, bytes: &[u8], input_type: Option<&str>) -> Result<Option<Ready>, Bad> {
    use fhir_model::IssueCode;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut v: Value = fhir_model::json::parse(bytes).map_err(|e| {
        bad(
            line_no,
            IssueCode::Structure,
            format!("the line is not JSON: {e}"),
        )
    })?;
    let defs = fhir_model::r4();
    let rtype = match v.get("resourceType").and_then(Value::as_str) {
        Some(t) if defs.is_resource_type(t) => t.to_owned(),
        Some(t) => {
            return Err(bad(
                line_no,
                IssueCode::Invalid,
                format!("{t:?} is not an R4 resource type"),
            ))
        }
        None => {
            return Err(bad(
                line_no,
                IssueCode::Required,
                "the line is not a resource: it has no resourceType",
            ))
        }
    };
    if let Some(want) = input_type {
        if want != rtype {
            return Err(bad(
                line_no,
                IssueCode::Invalid,
                format!("the line is a {rtype}, but the input's type is {want}"),
            ));
        }
    }
    let had_id = v.get("id").is_some();
    let id = match v.get("id") {
        None => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(id)) if crate::valid_id(id) => id.clone(),
        Some(other) => {
            return Err(bad(
                line_no,
                IssueCode::Invalid,
                format!("{other} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)"),
            ))
        }
    };
    let meta = v.get("meta");
    let version = match meta.and_then(|m| m.get("versionId")) {
        None => None,
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(n) if (1..=i64::MAX as u64).contains(&n) => Some(n),
            _ => {
                return Err(bad(
                    line_no,
                    IssueCode::Invalid,
                    format!("meta.versionId {s:?} is not a version this server keeps (1, 2, 3, …)"),
                ))
            }
        },
        Some(other) => {
            return Err(bad(
                line_no,
                IssueCode::Invalid,
                format!("meta.versionId {other} is not a string"),
            ))
        }
    };
    let last_updated = match meta.and_then(|m| m.get("lastUpdated")) {
        None => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                return Err(bad(
                    line_no,
                    IssueCode::Invalid,
                    format!("meta.lastUpdated {s:?} is not an instant"),
                ))
            }
        },
        Some(other) => {
            return Err(bad(
                line_no,
                IssueCode::Invalid,
                format!("meta.lastUpdated {other} is not a string"),
            ))
        }
    };
    let soft_deleted = meta
        .and_then(|m| m.get("extension"))
        .and_then(Value::as_array)
        .is_some_and(|exts| {
            exts.iter().any(|e| {
                e.get("url").and_then(Value::as_str) == Some(DELETED_STATE)
                    && e.get("valueString").and_then(Value::as_str) == Some("soft-deleted")
            })
        });
    if soft_deleted {
        return Ok(Some(Ready {
            line: line_no,
            rtype,
            id,
            version,
            last_updated,
            prepared: None,
        }));
    }
    let issues: Vec<_> = defs
        .validate(&v)
        .into_iter()
        .filter(fhir_model::Issue::is_error)
        .collect();
    if !issues.is_empty() {
        return Err(Bad {
            line: line_no,
            issues,
        });
    }
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), Value::String(id.clone()));
    }
    let mut prepared = Prepared::new(&id, v);
    // A line that carries its version is written as that version: its stored form is made
    // here, on this core, rather than by the store's one writer. (Without a lastUpdated it
    // is stamped now, as it would be at the write.)
    let last_updated = match version {
        Some(number) => {
            let at = last_updated.unwrap_or_else(Utc::now);
            // The line's own bytes may be kept only if they are the resource (its id).
            let written = had_id.then_some(bytes);
            if let Err(e) = prepared.stamp_ahead(&rtype, &id, number, &at, written) {
                return Err(bad(line_no, IssueCode::Exception, e.to_string()));
            }
            Some(at)
        }
        None => last_updated,
    };
    Ok(Some(Ready {
        line: line_no,
        rtype,
        id,
        version,
        last_updated,
        prepared: Some(prepared),
    }))
}

/// A chunk of one input, read and prepared.
struct Chunk {
    /// The lines as read, kept for a retry of the write.
    raw: Vec<(u64, Vec<u8>)>,
    ready: Vec<Ready>,
    bad: Vec<Bad>,
    /// Where the file stands after the chunk.
    bytes: u64,
    lines: u64,
    eof: bool,
}

/// Lines as read from a file, before they are prepared.
struct Raw {
    lines: Vec<(u64, Vec<u8>)>,
    /// Lines past [`MAX_LINE_BYTES`], skipped.
    too_long: Vec<Bad>,
    /// Where the file stands after them.
    bytes: u64,
    line_count: u64,
    eof: bool,
}

/// Reads up to `max_lines` lines (or 8 MiB) from `reader` at `(bytes, lines)`.
fn read_chunk(
    reader: &mut std::io::BufReader<std::fs::File>,
    mut bytes: u64,
    mut lines: u64,
    max_lines: usize,
) -> std::io::Result<Raw> {
    let mut out = Vec::with_capacity(max_lines);
    let mut too_long = Vec::new();
    let mut taken = 0usize;
    loop {
        if out.len() + too_long.len() >= max_lines || taken >= 8 * 1024 * 1024 {
            return Ok(Raw {
                lines: out,
                too_long,
                bytes,
                line_count: lines,
                eof: false,
            });
        }
        let mut line = Vec::new();
        let n = std::io::Read::by_ref(reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(Raw {
                lines: out,
                too_long,
                bytes,
                line_count: lines,
                eof: true,
            });
        }
        lines += 1;
        bytes += n as u64;
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            // Skip the rest of the line.
            let mut rest = 0u64;
            loop {
                let buf = reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let (used, end) = match buf.iter().position(|b| *b == b'\n') {
                    Some(at) => (at + 1, true),
                    None => (buf.len(), false),
                };
                reader.consume(used);
                rest += used as u64;
                if end {
                    break;
                }
            }
            bytes += rest;
            too_long.push(bad(
                lines,
                fhir_model::IssueCode::TooLong,
                format!("the line is longer than {MAX_LINE_BYTES} bytes"),
            ));
            continue;
        }
        taken += line.len();
        out.push((lines, line));
    }
}

/// Prepares the lines of a chunk on every core but one: that one is the store's writer's,
/// which writes the previous chunk meanwhile and is what an import waits for (on 2 cores, a
/// second preparing thread only took turns with the writer).
fn prepare_all(lines: &[(u64, Vec<u8>)], input_type: Option<&str>) -> (Vec<Ready>, Vec<Bad>) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = cores.saturating_sub(1).max(1);
    let per = lines.len().div_ceil(workers).max(1);
    let results: Vec<Vec<Result<Option<Ready>, Bad>>> = std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(n, b)| prepare(*n, b, input_type))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut ready = Vec::with_capacity(lines.len());
    let mut bad = Vec::new();
    for r in results.into_iter().flatten() {
        match r {
            Ok(Some(r)) => ready.push(r),
            Ok(None) => {}
            Err(b) => bad.push(b),
        }
    }
    (ready, bad)
}

/// The OperationOutcome line of a bad input line.
fn error_line(url: &str, b: &Bad) -> Vec<u8> {
    let issues: Vec<Value> = b
        .issues
        .iter()
        .map(|i| {
            let mut issue = json!({
                "severity": "error",
                "code": i.code.as_str(),
                "diagnostics": format!("line {} of {url}: {}", b.line, i.diagnostics),
            });
            if let Some(e) = &i.expression {
                issue["expression"] = json!([e]);
            }
            issue
        })
        .collect();
    let mut line = serde_json::to_vec(&json!({
        "resourceType": "OperationOutcome",
        "issue": issues,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// What the writer did with a chunk's lines.
#[derive(Default)]
struct Written {
    counts: BTreeMap<String, u64>,
    skipped: u64,
    refused: Vec<Bad>,
}

/// Writes the ready lines of a chunk in one transaction, as batches of
/// [`fhir_store::WriteTx::put_versions`]. A store error aborts the chunk (the transaction is
/// dropped, nothing of it is kept).
async fn write_chunk(
    store: &dyn Store,
    service: &str,
    mode: ImportMode,
    ready: Vec<Ready>,
) -> Result<Written, StoreError> {
    let mut tx = store.begin(service).await?;
    let mut done = Written::default();
    let mut batch = Batch::default();
    for r in ready {
        // A versioned line of IncrementalLoad needs no read first: put_version itself writes
        // nothing at or below the stored version.
        let needs_current = mode == ImportMode::InitialLoad || r.version.is_none();
        let current = if needs_current {
            let key = (r.rtype.clone(), r.id.clone());
            if batch.keys.contains(&key) {
                // An earlier line of the batch is this resource: write the batch first, so
                // that the read sees it.
                batch.write(&mut *tx, &mut done).await?;
            }
            tx.current(&r.rtype, &r.id).await?
        } else {
            None
        };
        let at = current.as_ref().map_or(0, |c| c.version);
        if mode == ImportMode::InitialLoad && current.is_some() {
            if r.version.is_some_and(|v| v <= at) {
                done.skipped += 1;
            } else {
                done.refused.push(bad(
                    r.line,
                    fhir_model::IssueCode::Duplicate,
                    format!(
                        "{}/{} exists (version {at}): InitialLoad only creates; \
                         IncrementalLoad adds versions",
                        r.rtype, r.id
                    ),
                ));
            }
            continue;
        }
        let version = r.version.unwrap_or(at + 1);
        if version <= at {
            done.skipped += 1;
            continue;
        }
        if r.prepared.is_none() && current.is_none_or(|c| c.is_deleted()) && r.version.is_none() {
            // A soft deletion of nothing, with no version to keep: nothing to record.
            done.skipped += 1;
            continue;
        }
        let last_updated = r.last_updated.unwrap_or_else(Utc::now);
        batch.keys.insert((r.rtype.clone(), r.id.clone()));
        batch.writes.push(VersionWrite {
            rtype: r.rtype,
            id: r.id,
            version,
            last_updated,
            prepared: r.prepared,
        });
    }
    batch.write(&mut *tx, &mut done).await?;
    tx.commit().await?;
    Ok(done)
}

/// The versions of a chunk not written yet.
#[derive(Default)]
struct Batch {
    writes: Vec<VersionWrite>,
    keys: std::collections::HashSet<(String, String)>,
}

impl Batch {
    async fn write(
        &mut self,
        tx: &mut dyn fhir_store::WriteTx,
        done: &mut Written,
    ) -> Result<(), StoreError> {
        self.keys.clear();
        if self.writes.is_empty() {
            return Ok(());
        }
        let types: Vec<String> = self.writes.iter().map(|w| w.rtype.clone()).collect();
        let written = tx.put_versions(std::mem::take(&mut self.writes)).await?;
        for (rtype, put) in types.into_iter().zip(written) {
            if put {
                *done.counts.entry(rtype).or_default() += 1;
            } else {
                done.skipped += 1;
            }
        }
        Ok(())
    }
}

impl crate::Bulk {
    /// Accepts an import: the job limit, then the job's document. Returns its id.
    pub async fn kick_off_import(
        self: &Arc<Self>,
        who: KickOff,
        params: ImportParams,
    ) -> Result<ImportJob, BulkError> {
        if !self.store.service_exists(&who.service).await? {
            return Err(StoreError::NoSuchService(who.service).into());
        }
        let running = self
            .store
            .list_documents(COLLECTION)
            .await?
            .into_iter()
            .filter_map(|d| serde_json::from_value::<ImportJob>(d.body).ok())
            .filter(|j| j.service == who.service && j.state == JobState::Running)
            .count();
        if running >= self.config.max_jobs_per_service {
            return Err(BulkError::TooMany {
                running,
                retry_after: Duration::from_secs(10),
            });
        }
        let job = ImportJob {
            id: uuid::Uuid::new_v4().to_string(),
            service: who.service,
            state: JobState::Running,
            request: who.request,
            base: who.base.trim_end_matches('/').to_owned(),
            owner: who.owner,
            created: Utc::now(),
            finished: None,
            progress: vec![InputProgress::default(); params.inputs.len()],
            params,
            failure: None,
            attempts: 0,
        };
        let version = self.write(&job, Expected::Absent).await?;
        self.spawn_import(job.clone(), version);
        Ok(job)
    }

    /// The import job, if it exists.
    pub async fn import_job(&self, service: &str, id: &str) -> Result<ImportJob, BulkError> {
        let missing = || {
            BulkError::NotFound(format!(
                "there is no import job {id:?} (it may have been cancelled or expired)"
            ))
        };
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(missing());
        }
        let doc = self
            .store
            .get_document(COLLECTION, &crate::job::key(service, id))
            .await?
            .ok_or_else(missing)?;
        serde_json::from_value(doc.body).map_err(|e| BulkError::Io(format!("job {id}: {e}")))
    }

    /// A poll of import job `id` (429 when too soon after the previous one).
    pub async fn import_status(
        &self,
        service: &str,
        id: &str,
        base: &str,
    ) -> Result<ImportStatus, BulkError> {
        let job = self.import_job(service, id).await?;
        self.check_poll(&job.key())?;
        Ok(match job.state {
            JobState::Running => {
                let total: u64 = job
                    .params
                    .inputs
                    .iter()
                    .map(|i| std::fs::metadata(&i.path).map_or(0, |m| m.len()))
                    .sum();
                let (bytes, resources) = self.imports_running_of(&job.key()).map_or_else(
                    || (job.progress.iter().map(|p| p.bytes).sum(), job.totals().0),
                    |r| {
                        (
                            r.bytes.load(Ordering::Relaxed),
                            r.resources.load(Ordering::Relaxed),
                        )
                    },
                );
                let pct = (bytes * 100).checked_div(total).unwrap_or(0);
                ImportStatus::InProgress {
                    progress: format!("{pct}% read; {resources} resources imported"),
                }
            }
            JobState::Completed => {
                let retention = chrono::Duration::from_std(self.config.retention)
                    .unwrap_or(chrono::Duration::MAX);
                let finished = job.finished.unwrap_or(job.created);
                ImportStatus::Completed {
                    manifest: manifest(&job, base),
                    expires: finished.checked_add_signed(retention).unwrap_or(finished),
                }
            }
            JobState::Failed => ImportStatus::Failed {
                message: job
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the import failed".into()),
                manifest: manifest(&job, base),
            },
        })
    }

    /// Cancels a running import (what it wrote stays, as with Azure) or forgets a finished
    /// one with its error files; afterwards the status URL answers 404.
    pub async fn cancel_import(&self, service: &str, id: &str) -> Result<(), BulkError> {
        let job = self.import_job(service, id).await?;
        if let Some(r) = self.imports_running_of(&job.key()) {
            r.cancelled.store(true, Ordering::Relaxed);
        }
        self.store
            .write_documents(vec![DocumentWrite::Delete {
                collection: COLLECTION.into(),
                key: job.key(),
                expected: Expected::Any,
            }])
            .await?;
        self.remove_files(service, id);
        Ok(())
    }

    /// The path of error file `name` of a finished import.
    pub async fn import_file(
        &self,
        service: &str,
        id: &str,
        name: &str,
    ) -> Result<PathBuf, BulkError> {
        let job = self.import_job(service, id).await?;
        let listed = job.state != JobState::Running
            && job
                .progress
                .iter()
                .enumerate()
                .any(|(i, p)| p.errors > 0 && ImportJob::error_file(i) == name);
        if !listed {
            return Err(BulkError::NotFound(format!(
                "import job {id} has no file {name:?}"
            )));
        }
        Ok(self.job_dir(service, id).join(name))
    }

    /// Takes up the imports a previous process left running (from where their documents
    /// say), or fails them after [`crate::MAX_ATTEMPTS`]. Returns the ids of every import
    /// job, for the orphan sweep.
    pub(crate) async fn start_imports(
        self: &Arc<Self>,
    ) -> Result<Vec<(String, String)>, BulkError> {
        let mut owned = Vec::new();
        for doc in self.store.list_documents(COLLECTION).await? {
            let Ok(mut job) = serde_json::from_value::<ImportJob>(doc.body.clone()) else {
                tracing::warn!(key = %doc.key, "an unreadable import job document was removed");
                self.store
                    .write_documents(vec![DocumentWrite::Delete {
                        collection: COLLECTION.into(),
                        key: doc.key,
                        expected: Expected::Version(doc.version),
                    }])
                    .await?;
                continue;
            };
            owned.push((job.service.clone(), job.id.clone()));
            if job.state != JobState::Running {
                continue;
            }
            if job.attempts >= crate::MAX_ATTEMPTS {
                job.state = JobState::Failed;
                job.finished = Some(Utc::now());
                job.failure = Some(format!(
                    "the import was interrupted {} times (server restarts) and was given up; \
                     what it wrote stays",
                    job.attempts
                ));
                self.write(&job, Expected::Version(doc.version)).await?;
                continue;
            }
            tracing::info!(service = %job.service, job = %job.id, attempt = job.attempts + 1, "bulk import taken up again after a restart");
            self.spawn_import(job, doc.version);
        }
        Ok(owned)
    }

    fn imports_running_of(&self, key: &str) -> Option<Arc<Running>> {
        self.imports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn spawn_import(self: &Arc<Self>, mut job: ImportJob, version: u64) {
        let running = Arc::new(Running::default());
        let key = job.key();
        self.imports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), running.clone());
        let bulk = self.clone();
        tokio::spawn(async move {
            job.attempts += 1;
            let mut version = match bulk.write(&job, Expected::Version(version)).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::info!(job = %job.id, error = %e, "import job gone before it started");
                    bulk.forget_import(&key);
                    return;
                }
            };
            let started = std::time::Instant::now();
            let outcome = bulk.run_import(&mut job, &mut version, &running).await;
            if running.cancelled.load(Ordering::Relaxed) {
                bulk.remove_files(&job.service, &job.id);
                bulk.forget_import(&key);
                return;
            }
            job.finished = Some(Utc::now());
            let (written, skipped, errors) = job.totals();
            match outcome {
                Ok(()) => {
                    tracing::info!(
                        service = %job.service,
                        job = %job.id,
                        written,
                        skipped,
                        errors,
                        seconds = started.elapsed().as_secs_f64(),
                        preparing = running.seconds(PREPARING),
                        waiting = running.seconds(WAITING),
                        writing = running.seconds(WRITING),
                        recording = running.seconds(RECORDING),
                        "bulk import completed"
                    );
                    job.state = JobState::Completed;
                }
                Err(e) => {
                    tracing::warn!(service = %job.service, job = %job.id, error = %e, written, "bulk import failed");
                    job.state = JobState::Failed;
                    job.failure = Some(e.to_string());
                }
            }
            if let Err(e) = bulk.write(&job, Expected::Version(version)).await {
                tracing::info!(job = %job.id, error = %e, "import job not recorded as finished");
                bulk.remove_files(&job.service, &job.id);
            }
            bulk.forget_import(&key);
        });
    }

    fn forget_import(&self, key: &str) {
        self.imports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// The local copy of `https:` input `i`: downloaded into the job's folder unless a whole
    /// copy is there from before a restart. A new copy starts the input over (its lines are
    /// read again from the first; those that carry their version are no-ops).
    async fn fetch_input(
        &self,
        job: &mut ImportJob,
        version: &mut u64,
        i: usize,
        dir: &Path,
    ) -> Result<PathBuf, BulkError> {
        let input = job.params.inputs[i].clone();
        let copy = dir.join(format!("input-{i}.ndjson"));
        if let Some(n) = job.progress[i].fetched {
            if std::fs::metadata(&copy).is_ok_and(|m| m.len() == n) {
                return Ok(copy);
            }
        }
        let source = crate::remote::source_of(&input.url, &self.config.import_urls)
            .map_err(BulkError::Io)?;
        let client = match &self.config.import_http {
            Some(c) => c.clone(),
            None => crate::remote::client(None).map_err(BulkError::Io)?,
        };
        let started = std::time::Instant::now();
        let n = crate::remote::download(&client, &input.url, source, input.etag.as_deref(), &copy)
            .await?;
        tracing::info!(job = %job.id, url = %input.url, bytes = n, seconds = started.elapsed().as_secs_f64(), "import input downloaded");
        job.progress[i] = InputProgress {
            fetched: Some(n),
            ..InputProgress::default()
        };
        *version = self.write(job, Expected::Version(*version)).await?;
        Ok(copy)
    }

    /// Runs every input from where the job's progress says, writing the progress after each
    /// chunk. Reading and preparing the next chunk overlaps the writing of this one.
    async fn run_import(
        &self,
        job: &mut ImportJob,
        version: &mut u64,
        running: &Arc<Running>,
    ) -> Result<(), BulkError> {
        let dir = self.job_dir(&job.service, &job.id);
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the import folder", e))?;
        let chunk_lines = self.config.import_chunk_lines.max(1);
        let base_bytes: u64 = job.progress.iter().map(|p| p.bytes).sum();
        running.bytes.store(base_bytes, Ordering::Relaxed);
        running.resources.store(job.totals().0, Ordering::Relaxed);
        for i in 0..job.params.inputs.len() {
            if job.progress[i].done {
                continue;
            }
            let input = job.params.inputs[i].clone();
            let path = if input.is_remote() {
                self.fetch_input(job, version, i, &dir).await?
            } else {
                // The folder rule again: the file may have been swapped for a link since.
                file_path(&input.url, &self.config.import_dirs)
                    .map_err(|m| BulkError::Io(m.to_string()))?
            };
            let mut file =
                std::fs::File::open(&path).map_err(|e| io(&format!("opening {}", input.url), e))?;
            let start = job.progress[i].bytes;
            file.seek(std::io::SeekFrom::Start(start))
                .map_err(|e| io(&format!("reading {}", input.url), e))?;
            let errors_path = dir.join(ImportJob::error_file(i));
            let mut errors = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&errors_path)
                .map_err(|e| io("opening the error file", e))?;
            // What a crash left past the last recorded chunk goes.
            errors
                .set_len(job.progress[i].error_bytes)
                .map_err(|e| io("trimming the error file", e))?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Chunk, BulkError>>(2);
            let rtype = input.rtype.clone();
            let url = input.url.clone();
            let mut lines = job.progress[i].lines;
            let cancelled = running.clone();
            let reader = tokio::task::spawn_blocking(move || {
                let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
                let mut bytes = start;
                loop {
                    if cancelled.cancelled.load(Ordering::Relaxed) {
                        return;
                    }
                    let began = std::time::Instant::now();
                    let chunk = read_chunk(&mut reader, bytes, lines, chunk_lines)
                        .map_err(|e| io(&format!("reading {url}"), e))
                        .map(|raw| {
                            let (ready, mut bad) = prepare_all(&raw.lines, rtype.as_deref());
                            bad.extend(raw.too_long);
                            bytes = raw.bytes;
                            lines = raw.line_count;
                            Chunk {
                                raw: raw.lines,
                                ready,
                                bad,
                                bytes: raw.bytes,
                                lines: raw.line_count,
                                eof: raw.eof,
                            }
                        });
                    cancelled.time(PREPARING, began);
                    let stop = chunk.as_ref().map_or(true, |c| c.eof);
                    if tx.blocking_send(chunk).is_err() || stop {
                        return;
                    }
                }
            });
            loop {
                let began = std::time::Instant::now();
                let Some(chunk) = rx.recv().await else {
                    break;
                };
                running.time(WAITING, began);
                let mut chunk = chunk?;
                if running.cancelled.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let read = chunk.bytes - job.progress[i].bytes;
                let mut ready = std::mem::take(&mut chunk.ready);
                let mut attempt = 0;
                let began = std::time::Instant::now();
                let written = loop {
                    match write_chunk(&*self.store, &job.service, job.params.mode, ready).await {
                        Ok(w) => break w,
                        Err(StoreError::Busy) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                            // The prepared lines went with the dropped transaction: again
                            // from the chunk's bytes.
                            let raw = std::mem::take(&mut chunk.raw);
                            let rtype = input.rtype.clone();
                            let (again, raw) = tokio::task::spawn_blocking(move || {
                                (prepare_all(&raw, rtype.as_deref()).0, raw)
                            })
                            .await
                            .map_err(|e| BulkError::Io(format!("preparing lines: {e}")))?;
                            chunk.raw = raw;
                            ready = again;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                running.time(WRITING, began);
                let began = std::time::Instant::now();
                let mut bad = chunk.bad;
                bad.extend(written.refused);
                bad.sort_by_key(|b| b.line);
                let p = &mut job.progress[i];
                for b in &bad {
                    let line = error_line(&input.url, b);
                    errors
                        .write_all(&line)
                        .map_err(|e| io("writing the error file", e))?;
                    p.error_bytes += line.len() as u64;
                }
                errors
                    .sync_data()
                    .map_err(|e| io("syncing the error file", e))?;
                p.errors += bad.len() as u64;
                p.skipped += written.skipped;
                let n: u64 = written.counts.values().sum();
                for (t, c) in written.counts {
                    *p.counts.entry(t).or_default() += c;
                }
                p.bytes = chunk.bytes;
                p.lines = chunk.lines;
                p.done = chunk.eof;
                running.bytes.fetch_add(read, Ordering::Relaxed);
                running.resources.fetch_add(n, Ordering::Relaxed);
                *version = self.write(job, Expected::Version(*version)).await?;
                running.time(RECORDING, began);
            }
            reader
                .await
                .map_err(|e| BulkError::Io(format!("the import reader failed: {e}")))?;
            if !job.progress[i].done && !running.cancelled.load(Ordering::Relaxed) {
                return Err(BulkError::Io(format!(
                    "{} was not read to its end",
                    input.url
                )));
            }
            if input.is_remote() {
                // The copy has been imported: its space goes back.
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

/// The import folder's path of a file name (for tests).
pub fn job_error_file(dir: &Path, service: &str, id: &str, i: usize) -> PathBuf {
    dir.join(service).join(id).join(ImportJob::error_file(i))
}
