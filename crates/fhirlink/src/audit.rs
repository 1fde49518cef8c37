//! Audit records: one per request on either plane, written as NDJSON by a background thread.
//!
//! Every record has the same keys (absent values are `null`):
//!
//! ```json
//! {"time":"2026-12-01T09:30:00.123Z","service":"myfhir","action":"read",
//!  "resourceType":"Patient","resourceId":"p1","method":"GET","path":"/Patient/p1",
//!  "query":"_elements=name","networkPath":"public","sourceAddress":"127.0.0.1",
//!  "sourcePort":40112,"status":200,"durationMs":0.412,
//!  "correlationId":"4f3c…","principal":"alice","clientId":null,"verdict":"allowed"}
//! ```
//!
//! `time` is when the request arrived (RFC 3339, UTC, milliseconds); `durationMs` runs until
//! the response head was ready. `action` is the FHIR interaction
//! ([`fhir_api::interaction::Kind`], classified by the router's own parser) on the
//! data plane, and on the management plane the ARM action as Azure names it and as `link_model`
//! authorized it (`Microsoft.Resources/subscriptions/resourceGroups/read`,
//! `Microsoft.Network/privateEndpoints/write`, `…/moveResources/action`; `unknown/<verb>` for
//! a request that names nothing fhirlink serves).
//! `networkPath` is `public`, the private endpoint's
//! (lowercase) resource id, or `management`. `verdict` is the gateway's access decision on the
//! data plane (`allowed`, `public-access-disabled`, …) and, on the management plane,
//! `allowed`, `unauthenticated` (401) or `forbidden` (403). A request whose client went away
//! before the answer is recorded with status 499 (nginx's "client closed request") as the
//! server drops it.
//!
//! Files, under the audit folder (`--audit-dir`, default `<data>/audit`), mode 0600:
//!
//! - `audit.ndjson`: every record of both planes.
//! - `diagnostics/<service>/<setting>/<destination>.ndjson`: the data-plane records of a
//!   FHIR service, once more for each of its diagnostic settings with the `AuditLogs`
//!   category enabled; `<destination>` is the last segment of the setting's destination id
//!   (`storageAccountId`, `workspaceId`, …). Every component is user input and is reduced to
//!   `[A-Za-z0-9._-]` ([`path_component`]), so no name can climb out of the folder.
//!
//! A request never waits for the disk, nor for another thread: the record is serialised on
//! the request's thread straight into that thread's pending buffer (one of [`SHARDS`], each
//! behind its own lock, so threads do not contend and no record is allocated on its own);
//! every [`FLUSH_INTERVAL`] the writer thread swaps each buffer for an empty one and appends
//! it to the files. A buffer that already holds [`MAX_PENDING`] bytes (the writer is stuck:
//! a slow or full disk) drops the record, counts it (`fhirlink_audit_dropped_total`) and logs
//! a warning. A file never holds a partial line: a write that fails part way (`ENOSPC`) is
//! cut back to the last whole line, and its records are dropped and counted the same way
//! (and the failure in `fhirlink_audit_write_errors_total`); the next round writes again, so
//! the log resumes by itself once the disk has room. A file found ending in a partial line
//! when opened (a power loss during a write) is cut back too. Lines are in order per thread;
//! records of different threads within one interval may be out of order (sort by `time`).
//! Records reach the operating system within the interval, and the files written to are
//! synced to disk ([`SYNC_INTERVAL`], on the writer thread, never in a request) every second
//! and when the server stops: a crash of the process can lose the last interval, a power loss
//! the last second.
//!
//! The query string goes to these files only: application logs never carry it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use serde::Serialize;

use crate::shard::{thread_shard, SHARDS};

/// How long a record may wait in a pending buffer before the writer appends it.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(25);
/// The bytes one pending buffer holds before it drops records: at 40,000 requests/s on one
/// thread (about 16 MB/s of records), half a second of a stuck writer.
const MAX_PENDING: usize = 8 << 20;
/// How often the writer syncs the files it wrote to (`fdatasync`).
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The longest path component a name becomes.
const MAX_COMPONENT: usize = 100;
/// At most one warning per this many seconds about dropped records or failed writes.
const WARN_EVERY_SECS: u64 = 10;

/// One audit record, borrowed from the request it describes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record<'a> {
    pub(crate) time: Timestamp,
    pub(crate) service: Option<Cow<'a, str>>,
    pub(crate) action: Cow<'a, str>,
    pub(crate) resource_type: Option<Cow<'a, str>>,
    pub(crate) resource_id: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) network_path: &'a str,
    pub(crate) source_address: Option<std::net::IpAddr>,
    pub(crate) source_port: Option<u16>,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    pub(crate) correlation_id: &'a str,
    pub(crate) principal: Option<&'a str>,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) verdict: &'a str,
}

impl Record<'_> {
    /// When a request that took `duration` arrived.
    pub(crate) fn arrival(duration: Duration) -> Timestamp {
        let now = SystemTime::now();
        Timestamp(now.checked_sub(duration).unwrap_or(now))
    }

    /// Milliseconds with microsecond precision.
    pub(crate) fn millis(duration: Duration) -> f64 {
        duration.as_micros() as f64 / 1000.0
    }

    pub(crate) fn source(addr: Option<SocketAddr>) -> (Option<std::net::IpAddr>, Option<u16>) {
        (addr.map(|a| a.ip()), addr.map(|a| a.port()))
    }
}

/// An instant, serialised as RFC 3339 UTC with milliseconds (`2026-12-01T09:38:08.520Z`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timestamp(pub(crate) SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        thread_local! {
            // The date and time of the last second formatted on this thread: records of one
            // second share it, so a record formats only its milliseconds.
            static SECOND: std::cell::RefCell<(u64, String)> =
                const { std::cell::RefCell::new((u64::MAX, String::new())) };
        }
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = (since.as_secs(), since.subsec_millis());
        SECOND.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.0 != secs {
                let t =
                    chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + Duration::from_secs(secs));
                cache.1 = t.format("%Y-%m-%dT%H:%M:%S").to_string();
                cache.0 = secs;
            }
            let mut buf = [0u8; 48];
            let mut w = &mut buf[..];
            let _ = write!(w, "{}.{millis:03}Z", cache.1);
            let used = 48 - w.len();
            s.serialize_str(std::str::from_utf8(&buf[..used]).unwrap_or_default())
        })
    }
}

/// The ARM action of a management request, as its record and its metrics name it: the action
/// `link_model` decided and authorized the request as, which `link-api` hands over in the
/// response's extensions (`decided`). A request that never reached `link-api` (refused by the
/// authentication layer with 401, or one of the binary's own `/metrics` and
/// `/fhirlink/diagnose` when they set none) is classified by that same function,
/// `link_model::classify`, never by a parser of our own: the audited action is always the one
/// that was, or would have been, authorized.
pub(crate) fn arm_action(
    method: &Method,
    path: &str,
    decided: Option<&link_model::ArmAction>,
) -> link_model::ArmAction {
    match decided {
        Some(a) => a.clone(),
        None => link_model::classify(link_model::Method::parse(method.as_str()), path),
    }
}

/// A name reduced to a safe single path component: `[A-Za-z0-9._-]`, at most
/// [`MAX_COMPONENT`] characters, never empty, never starting with a dot (so never `.` or
/// `..`, nor a hidden file).
pub(crate) fn path_component(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .take(MAX_COMPONENT)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// The file, relative to the audit folder, that the AuditLogs export of `setting` on
/// `service` to `destination` (an ARM resource id) is written to.
pub(crate) fn export_file(service: &str, setting: &str, destination: &str) -> PathBuf {
    let last = destination
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("destination");
    Path::new("diagnostics")
        .join(path_component(service))
        .join(path_component(setting))
        .join(format!("{}.ndjson", path_component(last)))
}

/// Records serialised by one thread's requests, waiting for the writer.
#[derive(Debug, Default)]
struct Pending {
    /// NDJSON lines for `audit.ndjson`.
    lines: Vec<u8>,
    /// Lines (byte ranges of `lines`) that also go to export files (relative to the folder).
    exports: Vec<(Arc<[PathBuf]>, std::ops::Range<usize>)>,
}

/// Cache-line aligned, so that two threads' buffers never share a line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot(Mutex<Pending>);

/// The audit log: the pending buffers and the writer thread that empties them.
pub(crate) struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    slots: Box<[Slot]>,
    closed: AtomicBool,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    started: Instant,
    /// Seconds since `started` of the last warning about dropped records (+1; 0: none).
    last_warning: AtomicU64,
}

impl AuditLog {
    /// Creates the folder (mode 0700) and starts the writer thread.
    pub(crate) fn start(dir: &Path) -> std::io::Result<AuditLog> {
        create_private_dir(dir)?;
        let shared = Arc::new(Shared {
            slots: (0..SHARDS).map(|_| Slot::default()).collect(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            started: Instant::now(),
            last_warning: AtomicU64::new(0),
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            last_sync: Instant::now(),
            shared: shared.clone(),
            last_warning: None,
        };
        let handle = std::thread::Builder::new()
            .name("fhirlink-audit".into())
            .spawn(move || writer.run())?;
        Ok(AuditLog {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Adds `record` to this thread's pending buffer, for `audit.ndjson` and for the
    /// `exports` files (relative to the folder). Never waits for the writer.
    pub(crate) fn write(&self, record: &Record<'_>, exports: Option<Arc<[PathBuf]>>) {
        let shared = &*self.shared;
        let slot = &shared.slots[thread_shard() % shared.slots.len()];
        let mut pending = slot.0.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.lines.len() >= MAX_PENDING || shared.closed.load(Ordering::Relaxed) {
            drop(pending);
            let total = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.warn_dropped(total);
            return;
        }
        let start = pending.lines.len();
        if let Err(e) = serde_json::to_writer(&mut pending.lines, record) {
            // Only a failing writer or serializer could get here; neither exists for a Vec.
            pending.lines.truncate(start);
            drop(pending);
            tracing::error!(error = %e, "audit record not serialised");
            return;
        }
        pending.lines.push(b'\n');
        if let Some(exports) = exports {
            let end = pending.lines.len();
            pending.exports.push((exports, start..end));
        }
    }

    fn warn_dropped(&self, total: u64) {
        let shared = &*self.shared;
        let now = shared.started.elapsed().as_secs() + 1;
        let last = shared.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now >= last + WARN_EVERY_SECS)
            && shared
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                "audit records dropped: the writer is behind (or the log is closed)"
            );
        }
    }

    /// Records dropped: because the writer was behind (or the log closed), or not written
    /// to a file because the write failed (one per file it was for).
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes (opens and syncs too) of the audit files.
    pub(crate) fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Writes what is pending, syncs the files to disk and stops the writer (at shutdown).
    /// Records after this are dropped (and counted).
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

/// Bytes a file's buffer collects before they are written.
const FILE_BUFFER: usize = 64 * 1024;

/// A file the writer appends to: whole lines waiting to be written, and whether it was
/// written to since its last sync.
struct OpenFile {
    file: File,
    buf: Vec<u8>,
    unsynced: bool,
}

/// A write that failed: the error, and whether the file was cut back to its last whole line
/// (if not, it is closed, and cut back when opened again).
struct WriteFailure {
    error: std::io::Error,
    cut: bool,
}

impl OpenFile {
    /// Opens `path` for appending, first cutting off a partial last line if there is one.
    fn open(path: &Path) -> std::io::Result<OpenFile> {
        let mut file = open_append(path)?;
        cut_partial_line(&mut file)?;
        Ok(OpenFile {
            file,
            buf: Vec::new(),
            unsynced: false,
        })
    }

    /// Appends `data`, whole lines, to the file: all of it or, when the write fails part
    /// way (a full disk), none — the file is cut back to the length it had.
    fn write_whole(&mut self, data: &[u8]) -> Result<(), WriteFailure> {
        if data.is_empty() {
            return Ok(());
        }
        // Taken from the file rather than remembered: with O_APPEND this is where the write
        // goes, whatever happened to the file meanwhile.
        let len = self
            .file
            .metadata()
            .map_err(|error| WriteFailure { error, cut: true })?
            .len();
        self.unsynced = true;
        self.file.write_all(data).map_err(|error| WriteFailure {
            error,
            cut: self.file.set_len(len).is_ok(),
        })
    }

    /// Writes what the buffer holds (whole lines); on failure they are dropped.
    fn write_buffer(&mut self) -> Result<(), (WriteFailure, u64)> {
        let data = std::mem::take(&mut self.buf);
        let result = self.write_whole(&data).map_err(|f| (f, lines(&data)));
        // The buffer keeps its capacity.
        self.buf = data;
        self.buf.clear();
        result
    }
}

/// The number of lines (records) in `data`.
fn lines(data: &[u8]) -> u64 {
    data.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Cuts `file` back to its last whole line, if it ends in a partial one.
fn cut_partial_line(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(
            bytes = len - end,
            "an audit file ended in a partial line; cut back to its last whole line"
        );
        file.set_len(end)?;
    }
    Ok(())
}

/// The writer thread's state: the open files, by path relative to the folder.
struct Writer {
    dir: PathBuf,
    files: HashMap<PathBuf, OpenFile>,
    last_sync: Instant,
    shared: Arc<Shared>,
    last_warning: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let main = PathBuf::from("audit.ndjson");
        // Swapped with each slot's buffer in turn: buffers keep their capacity and circulate,
        // so that steady traffic allocates nothing.
        let mut spare = Pending::default();
        loop {
            // Read before emptying the slots: a record written after `closed` was set is
            // dropped by `write`, one written before is in a slot by now.
            let closing = self.shared.closed.load(Ordering::SeqCst);
            let mut wrote = false;
            for i in 0..self.shared.slots.len() {
                {
                    let slot = &self.shared.slots[i];
                    let mut pending = slot.0.lock().unwrap_or_else(PoisonError::into_inner);
                    if pending.lines.is_empty() {
                        continue;
                    }
                    std::mem::swap(&mut *pending, &mut spare);
                }
                self.append(&main, &spare.lines);
                for (files, range) in &spare.exports {
                    if let Some(line) = spare.lines.get(range.clone()) {
                        for file in files.iter() {
                            self.append(file, line);
                        }
                    }
                }
                spare.lines.clear();
                spare.exports.clear();
                wrote = true;
            }
            if wrote || closing {
                self.flush();
            }
            if closing || self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.sync();
            }
            if closing {
                return;
            }
            std::thread::park_timeout(FLUSH_INTERVAL);
        }
    }

    /// Appends whole lines to `file`: buffered when short, written at once when long.
    fn append(&mut self, file: &Path, data: &[u8]) {
        if !self.files.contains_key(file) {
            match OpenFile::open(&self.dir.join(file)) {
                Ok(f) => {
                    self.files.insert(file.to_path_buf(), f);
                }
                Err(e) => return self.failed(file, &e, lines(data)),
            }
        }
        let Some(f) = self.files.get_mut(file) else {
            return;
        };
        f.unsynced = true;
        let mut failure = None;
        let mut lost = 0;
        if f.buf.len() + data.len() > FILE_BUFFER {
            if let Err((e, n)) = f.write_buffer() {
                failure = Some(e);
                lost += n;
            }
        }
        if failure.is_some() {
            // The file is failing: these lines go with the buffer's.
            lost += lines(data);
        } else if data.len() >= FILE_BUFFER {
            if let Err(e) = f.write_whole(data) {
                failure = Some(e);
                lost += lines(data);
            }
        } else {
            f.buf.extend_from_slice(data);
        }
        if let Some(failure) = failure {
            self.write_failed(file, failure, lost);
        }
    }

    /// After a failed write: a file that could not be cut back is closed (and cut back when
    /// opened again, on the next record).
    fn write_failed(&mut self, file: &Path, failure: WriteFailure, lost: u64) {
        if !failure.cut {
            self.files.remove(file);
        }
        self.failed(file, &failure.error, lost);
    }

    fn flush(&mut self) {
        let mut failed = Vec::new();
        for (path, f) in &mut self.files {
            if let Err((failure, lost)) = f.write_buffer() {
                failed.push((path.clone(), failure, lost));
            }
        }
        for (path, failure, lost) in failed {
            self.write_failed(&path, failure, lost);
        }
    }

    /// Syncs the files written to since the last sync (after [`Writer::flush`]).
    fn sync(&mut self) {
        self.last_sync = Instant::now();
        let mut failed = Vec::new();
        for (path, f) in self.files.iter_mut().filter(|(_, f)| f.unsynced) {
            f.unsynced = false;
            if let Err(e) = f.file.sync_data() {
                failed.push((path.clone(), e));
            }
        }
        for (path, e) in failed {
            self.files.remove(&path);
            self.failed(&path, &e, 0);
        }
    }

    /// Counts a failed write and the `lost` records it dropped, and warns (at most every
    /// [`WARN_EVERY_SECS`]).
    fn failed(&mut self, file: &Path, e: &std::io::Error, lost: u64) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        let dropped = self.shared.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
        let due = self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(WARN_EVERY_SECS));
        if due {
            self.last_warning = Some(Instant::now());
            tracing::warn!(
                file = %self.dir.join(file).display(),
                error = %e,
                records = lost,
                dropped_total = dropped,
                "audit records not written (dropped, counted in fhirlink_audit_dropped_total)"
            );
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let mut o = OpenOptions::new();
    // Read too: a partial last line is looked for when the file is opened.
    o.create(true).append(true).read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fhir(method: Method, path: &str) -> (&'static str, Option<String>, Option<String>) {
        let a = fhir_api::interaction::classify(&method, path);
        (
            a.kind.as_str(),
            a.resource_type.map(|t| t.into_owned()),
            a.resource_id.map(|t| t.into_owned()),
        )
    }

    #[test]
    fn fhir_interactions_from_method_and_path() {
        type Case = (
            Method,
            &'static str,
            (&'static str, Option<&'static str>, Option<&'static str>),
        );
        let cases: &[Case] = &[
            (
                Method::GET,
                "/Patient/p1",
                ("read", Some("Patient"), Some("p1")),
            ),
            (
                Method::HEAD,
                "/Patient/p1/",
                ("read", Some("Patient"), Some("p1")),
            ),
            (
                Method::GET,
                "/Patient/p1/_history/2",
                ("vread", Some("Patient"), Some("p1")),
            ),
            (
                Method::PUT,
                "/Patient/p1",
                ("update", Some("Patient"), Some("p1")),
            ),
            (Method::PUT, "/Patient", ("update", Some("Patient"), None)),
            (
                Method::PATCH,
                "/Patient/p1",
                ("patch", Some("Patient"), Some("p1")),
            ),
            (
                Method::DELETE,
                "/Patient/p1",
                ("delete", Some("Patient"), Some("p1")),
            ),
            (
                Method::DELETE,
                "/Patient",
                ("delete", Some("Patient"), None),
            ),
            (
                Method::GET,
                "/Patient/p1/_history",
                ("history-instance", Some("Patient"), Some("p1")),
            ),
            (
                Method::GET,
                "/Patient/_history",
                ("history-type", Some("Patient"), None),
            ),
            (Method::GET, "/_history", ("history-system", None, None)),
            (Method::POST, "/Patient", ("create", Some("Patient"), None)),
            (
                Method::GET,
                "/Patient",
                ("search-type", Some("Patient"), None),
            ),
            (
                Method::POST,
                "/Patient/_search",
                ("search-type", Some("Patient"), None),
            ),
            (Method::GET, "/", ("search-system", None, None)),
            (Method::POST, "/_search", ("search-system", None, None)),
            (
                Method::GET,
                "/Patient/p1/Observation",
                ("search-compartment", Some("Patient"), Some("p1")),
            ),
            (
                Method::POST,
                "/Patient/p1/Observation/_search",
                ("search-compartment", Some("Patient"), Some("p1")),
            ),
            (Method::POST, "/", ("batch/transaction", None, None)),
            (Method::GET, "/metadata", ("capabilities", None, None)),
            (
                Method::GET,
                "/.well-known/smart-configuration",
                ("capabilities", None, None),
            ),
            (Method::POST, "/$export", ("operation", None, None)),
            (
                Method::GET,
                "/Patient/$everything",
                ("operation", Some("Patient"), None),
            ),
            (
                Method::GET,
                "/Patient/p1/$everything",
                ("operation", Some("Patient"), Some("p1")),
            ),
            (
                Method::POST,
                "/Patient/p1",
                ("unknown", Some("Patient"), None),
            ),
            (Method::GET, "/patient/p1", ("unknown", None, None)),
            (
                Method::GET,
                "/Patient/bad id",
                ("unknown", Some("Patient"), None),
            ),
            (Method::GET, "/a/b/c/d/e/f", ("unknown", None, None)),
            (Method::DELETE, "/metadata", ("unknown", None, None)),
        ];
        for (method, path, (action, t, id)) in cases {
            let want = (*action, t.map(str::to_owned), id.map(str::to_owned));
            assert_eq!(fhir(method.clone(), path), want, "{method} {path}");
        }
    }

    #[test]
    fn arm_records_take_the_decided_action() {
        // Every action the management API serves: the one handed over is recorded as it is,
        // and its metric label is its name.
        let group = "/subscriptions/s/resourceGroups/g";
        for name in link_model::actions() {
            let decided = link_model::ArmAction {
                name,
                resource_type: Some("Microsoft.HealthcareApis/services"),
                resource_id: Some(format!(
                    "{group}/providers/Microsoft.HealthcareApis/services/x"
                )),
                service: Some("x".into()),
            };
            // The path no longer matters once the action is decided.
            let got = arm_action(&Method::GET, "/anything", Some(&decided));
            assert_eq!(got, decided);
            assert_eq!(
                crate::metrics::InteractionLabel::Arm(got.name).label(),
                name
            );
        }
    }

    #[test]
    fn arm_requests_refused_before_link_api_are_classified_by_link_model() {
        let rg = "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourceGroups/rg1";
        let svc = format!("{rg}/providers/Microsoft.HealthcareApis/services/MyFhir");
        let cases: Vec<(Method, String, &str, Option<&str>)> = vec![
            (
                Method::GET,
                rg.to_owned(),
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                None,
            ),
            (
                Method::PUT,
                svc.clone(),
                "Microsoft.HealthcareApis/services/write",
                Some("myfhir"),
            ),
            (
                Method::HEAD,
                svc.to_lowercase(),
                "Microsoft.HealthcareApis/services/read",
                Some("myfhir"),
            ),
            (
                Method::PUT,
                format!("{svc}/privateEndpointConnections/pe1"),
                "Microsoft.HealthcareApis/services/privateEndpointConnections/write",
                Some("myfhir"),
            ),
            (
                Method::PUT,
                format!("{svc}/providers/Microsoft.Insights/diagnosticSettings/export"),
                "Microsoft.Insights/diagnosticSettings/write",
                Some("myfhir"),
            ),
            (
                Method::PUT,
                format!("{rg}/providers/Microsoft.Network/privateEndpoints/pe1"),
                "Microsoft.Network/privateEndpoints/write",
                None,
            ),
            (
                Method::POST,
                format!("{rg}/moveResources"),
                "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action",
                None,
            ),
            (
                Method::GET,
                "/metrics".into(),
                "Microsoft.Insights/metrics/read",
                None,
            ),
            (
                Method::GET,
                "/fhirlink/diagnose".into(),
                "Microsoft.HealthcareApis/services/read",
                None,
            ),
            (
                Method::GET,
                format!("{rg}/providers/Contoso.Widgets/gadgets/g1"),
                "unknown/read",
                None,
            ),
            (Method::DELETE, "/".into(), "unknown/delete", None),
        ];
        for (method, path, name, service) in cases {
            let a = arm_action(&method, &path, None);
            assert_eq!(a.name, name, "{method} {path}");
            assert_eq!(a.service.as_deref(), service, "{method} {path}");
        }
        let a = arm_action(&Method::PUT, &svc, None);
        assert_eq!(a.resource_id.as_deref(), Some(svc.as_str()));
        assert_eq!(a.resource_type, Some("Microsoft.HealthcareApis/services"));
    }

    #[test]
    fn path_components_cannot_climb_out() {
        assert_eq!(path_component(".."), "_.");
        assert_eq!(path_component("."), "_");
        assert_eq!(path_component(""), "_");
        assert_eq!(path_component("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(path_component("export 1"), "export_1");
        assert_eq!(path_component("naïve"), "na_ve");
        assert_eq!(path_component(&"x".repeat(300)).len(), MAX_COMPONENT);
        let f = export_file(
            "myfhir",
            "to storage",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/logs/",
        );
        assert_eq!(f, Path::new("diagnostics/myfhir/to_storage/logs.ndjson"));
        assert_eq!(
            export_file("a", "b", ""),
            Path::new("diagnostics/a/b/destination.ndjson")
        );
        assert_eq!(
            export_file("a", "b", "/x/.."),
            Path::new("diagnostics/a/b/_..ndjson")
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        for (secs, nanos) in [
            (0, 0),
            (1_764_581_888, 520_999_999),
            (1_764_581_889, 1_000_000),
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let want = chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let got = serde_json::to_value(Timestamp(t)).expect("serialise");
            assert_eq!(got, want.as_str());
        }
    }

    #[test]
    fn writer_syncs_the_files_it_wrote_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = Arc::new(Shared {
            slots: (0..1).map(|_| Slot::default()).collect(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            started: Instant::now(),
            last_warning: AtomicU64::new(0),
        });
        let mut w = Writer {
            dir: dir.path().to_path_buf(),
            files: HashMap::new(),
            last_sync: Instant::now(),
            shared,
            last_warning: None,
        };
        w.append(Path::new("a.ndjson"), b"{}\n");
        w.append(Path::new("b.ndjson"), b"{}\n");
        w.append(Path::new("a.ndjson"), b"{}\n");
        let unsynced = |w: &Writer| {
            let mut v: Vec<_> = w
                .files
                .iter()
                .filter(|(_, f)| f.unsynced)
                .map(|(p, _)| p.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(unsynced(&w).len(), 2, "both files wait for a sync");
        w.flush();
        w.sync();
        assert!(unsynced(&w).is_empty(), "synced");
        assert_eq!(w.files.len(), 2, "files stay open");
        assert_eq!(w.shared.write_errors.load(Ordering::Relaxed), 0);
        let a = std::fs::read_to_string(dir.path().join("a.ndjson")).expect("a");
        assert_eq!(a, "{}\n{}\n");
        w.append(Path::new("b.ndjson"), b"{}\n");
        assert_eq!(
            unsynced(&w),
            [Path::new("b.ndjson")],
            "only what was written since"
        );
    }

    fn bare_writer(dir: &Path) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            last_sync: Instant::now(),
            shared: Arc::new(Shared {
                slots: (0..1).map(|_| Slot::default()).collect(),
                closed: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
                write_errors: AtomicU64::new(0),
                started: Instant::now(),
                last_warning: AtomicU64::new(0),
            }),
            last_warning: None,
        }
    }

    // Regression (issue #15, defect 5): a record torn by a failed write was glued to the
    // next one. A file that ends in a partial line is cut back to its last whole line before
    // anything is appended.
    #[test]
    fn regression_15_5_a_partial_last_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.ndjson");
        std::fs::write(&path, format!("{{\"a\":1}}\n{{\"b\":{}", "2".repeat(5000))).expect("write");
        let mut w = bare_writer(dir.path());
        w.append(Path::new("audit.ndjson"), b"{\"c\":3}\n");
        w.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"a\":1}\n{\"c\":3}\n");
        // A file of one partial line is emptied.
        std::fs::write(dir.path().join("x.ndjson"), "{\"torn").expect("write");
        w.append(Path::new("x.ndjson"), b"{}\n");
        w.flush();
        let text = std::fs::read_to_string(dir.path().join("x.ndjson")).expect("read");
        assert_eq!(text, "{}\n");
    }

    /// A tmpfs of `size` at a fresh folder, unmounted when dropped (needs root, as the suite
    /// runs: it fails, never skips, without it).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().expect("mount point");
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mount -t tmpfs failed: this test must run as root");
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    // Regression (issue #15, defect 5): a write cut short by a full disk left a partial
    // record in audit.ndjson, which the next record was glued to. The file is cut back to
    // its last whole line, the records are counted as dropped, and writing resumes once
    // there is room.
    #[test]
    fn regression_15_5_a_write_cut_short_by_a_full_disk_leaves_no_partial_line() {
        let fs = Tmpfs::mount("1m");
        let main = Path::new("audit.ndjson");
        let mut w = bare_writer(fs.0.path());
        w.append(main, b"{\"first\":1}\n");
        w.flush();
        // Fill the disk, then give back 16 KiB: room for part of the next write only.
        let filler = fs.0.path().join("filler");
        let mut f = File::create(&filler).expect("filler");
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let len = f.metadata().expect("len").len();
        f.set_len(len.saturating_sub(16 * 1024)).expect("give back");
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
        let records = line.repeat(200);
        w.append(main, records.as_bytes());
        w.flush();
        let text = std::fs::read_to_string(fs.0.path().join(main)).expect("read");
        assert_eq!(text, "{\"first\":1}\n", "cut back to the last whole line");
        assert_eq!(w.shared.dropped.load(Ordering::Relaxed), 200);
        assert_eq!(w.shared.write_errors.load(Ordering::Relaxed), 1);
        // Room again: the next records are written, whole, after the first.
        drop(f);
        std::fs::remove_file(&filler).expect("free");
        w.append(main, b"{\"after\":1}\n");
        w.flush();
        let text = std::fs::read_to_string(fs.0.path().join(main)).expect("read");
        assert_eq!(text, "{\"first\":1}\n{\"after\":1}\n");
    }

    // Regression (issue #15, defect 5): records lost to a failed write were only logged.
    // They are counted as dropped, record by record, and the failure as a write error.
    #[test]
    fn regression_15_5_records_of_a_failed_write_are_counted_as_dropped() {
        if !Path::new("/dev/full").exists() {
            panic!("/dev/full is needed: every write to it fails with ENOSPC");
        }
        // `/dev/full`: every write fails with ENOSPC, as on a full disk.
        let mut w = bare_writer(Path::new("/dev"));
        w.append(Path::new("full"), b"{}\n{}\n");
        w.append(Path::new("full"), &[b'\n'; FILE_BUFFER]);
        w.flush();
        assert_eq!(
            w.shared.dropped.load(Ordering::Relaxed),
            2 + FILE_BUFFER as u64
        );
        assert!(w.shared.write_errors.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn writer_appends_to_main_and_export_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::start(dir.path()).expect("start");
        let exports: Arc<[PathBuf]> = vec![export_file("svc", "ds", "/x/acct")].into();
        let record = Record {
            time: Record::arrival(Duration::from_millis(3)),
            service: Some("svc".into()),
            action: "read".into(),
            resource_type: Some("Patient".into()),
            resource_id: Some("p1"),
            method: "GET",
            path: "/Patient/p1",
            query: Some("a=b"),
            network_path: "public",
            source_address: Some([127, 0, 0, 1].into()),
            source_port: Some(1),
            status: 200,
            duration_ms: 3.0,
            correlation_id: "c1",
            principal: None,
            client_id: None,
            verdict: "allowed",
        };
        log.write(&record, Some(exports));
        log.write(&record, None);
        log.close();
        let main = std::fs::read_to_string(dir.path().join("audit.ndjson")).expect("main");
        assert_eq!(main.lines().count(), 2);
        let v: serde_json::Value =
            serde_json::from_str(main.lines().next().unwrap_or("")).expect("json");
        assert_eq!(v["query"], "a=b");
        assert_eq!(v["principal"], serde_json::Value::Null);
        let export = std::fs::read_to_string(dir.path().join("diagnostics/svc/ds/acct.ndjson"))
            .expect("export");
        assert_eq!(export.lines().count(), 1);
        assert_eq!(log.dropped(), 0);
        // After close nothing is written, and that is counted.
        log.write(&record, None);
        assert_eq!(log.dropped(), 1);
    }
}
