//! Bulk data for fhirlink: durable asynchronous jobs (the FHIR asynchronous request pattern
//! as the Bulk Data Access IG 2.0.0 uses it) and `$export`.
//!
//! [`Bulk`] is the engine fhir-api hands kick-offs, polls, cancellations and file downloads
//! to; it knows nothing of HTTP. A kick-off checks its parameters ([`ExportParams`]), takes a
//! store [`Snapshot`](fhir_store::Snapshot) and writes the job's document before it answers,
//! so an accepted job survives a restart: [`Bulk::start`] takes up every job that was
//! running, again from its snapshot (the same data, whatever was written since), and marks a
//! job failed after [`MAX_ATTEMPTS`] starts. A job is reported complete only after every file
//! it lists is written and synced. Files live in `<dir>/<service>/<job id>/`, one type per
//! file, split at [`BulkConfig::max_resources_per_file`], named `Type-N.ndjson` as Azure
//! named them; completed and failed jobs are deleted with their files after
//! [`BulkConfig::retention`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fhir_store::{DocumentWrite, Expected, Store, StoreError};
use serde_json::{json, Value};

pub mod import;
pub mod job;
pub mod params;
pub mod remote;
mod run;

pub use import::{ImportJob, ImportMode, ImportParams, ImportStatus};
pub use job::{Job, JobState, OutputFile};
pub use params::{ExportLevel, ExportParams, TypeFilter};

/// Starts of one job (the first run and runs after restarts) before it is failed.
pub const MAX_ATTEMPTS: u32 = 3;

/// The limits and places of bulk jobs.
#[derive(Debug, Clone)]
pub struct BulkConfig {
    /// Where output files are written (`<data>/bulk`).
    pub dir: PathBuf,
    /// Jobs running at once per service; a further kick-off gets 429.
    pub max_jobs_per_service: usize,
    /// How long a finished job's manifest and files are kept.
    pub retention: Duration,
    /// Lines per output file before the next file of the type is started.
    pub max_resources_per_file: u64,
    /// A poll of the same job sooner than this after the previous one gets 429.
    pub min_poll_interval: Duration,
    /// What a running job's poll tells the client to wait (`Retry-After`).
    pub retry_after: Duration,
    /// Folders `$import` may read `file:` inputs from (`--import-dir`); none: no file inputs.
    pub import_dirs: Vec<PathBuf>,
    /// URL prefixes `$import` may read `https:` inputs from (`--import-url`); none: no
    /// https inputs.
    pub import_urls: Vec<remote::RemoteSource>,
    /// The client `https:` inputs are fetched with ([`remote::client`]); made with the
    /// system's roots when not given.
    pub import_http: Option<reqwest::Client>,
    /// Lines per import chunk: parsed and indexed together, written in one transaction.
    pub import_chunk_lines: usize,
}

impl BulkConfig {
    /// Two jobs per service, kept 24 hours, 100,000 lines per file, polls at most every
    /// 200 ms (Medplum polls every second), `Retry-After: 1`.
    pub fn new(dir: impl Into<PathBuf>) -> BulkConfig {
        BulkConfig {
            dir: dir.into(),
            max_jobs_per_service: 2,
            retention: Duration::from_secs(24 * 3600),
            max_resources_per_file: 100_000,
            min_poll_interval: Duration::from_millis(200),
            retry_after: Duration::from_secs(1),
            import_dirs: Vec::new(),
            import_urls: Vec::new(),
            import_http: None,
            import_chunk_lines: 2000,
        }
    }
}

/// Why a bulk request was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BulkError {
    /// A parameter cannot be taken (400, its name as the OperationOutcome's expression).
    #[error("{message}")]
    Invalid { param: String, message: String },
    /// No such job (or file): never made, cancelled, or expired (404).
    #[error("{0}")]
    NotFound(String),
    /// The service runs as many jobs as it may (429 with `Retry-After`).
    #[error(
        "{running} export jobs are running on this service, the most allowed; try again later"
    )]
    TooMany {
        running: usize,
        retry_after: Duration,
    },
    /// Polled again sooner than allowed (429 with `Retry-After`).
    #[error("polled too often; wait before polling again")]
    PolledTooFast { retry_after: Duration },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing or reading the output failed.
    #[error("bulk output: {0}")]
    Io(String),
}

impl BulkError {
    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> BulkError {
        BulkError::Invalid {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    /// The parameter an [`BulkError::Invalid`] is about.
    pub fn param(&self) -> Option<&str> {
        match self {
            BulkError::Invalid { param, .. } => Some(param),
            _ => None,
        }
    }
}

fn io(context: &str, e: std::io::Error) -> BulkError {
    BulkError::Io(format!("{context}: {e}"))
}

/// An id as FHIR R4 allows it: 1–64 of `A-Za-z0-9-.`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Who kicks off a job, and where.
#[derive(Debug, Clone)]
pub struct KickOff {
    pub service: String,
    /// The service's base URL as the client addressed it (`https://host/` for the default
    /// service): the status URL and file URLs are under it.
    pub base: String,
    /// The kick-off URL as sent.
    pub request: String,
    pub owner: String,
}

/// What a poll finds.
#[derive(Debug, Clone)]
pub enum Status {
    /// Running: `X-Progress` and `Retry-After`.
    InProgress {
        progress: String,
        retry_after: Duration,
    },
    /// Done: the manifest, and when it expires.
    Completed {
        manifest: Value,
        expires: DateTime<Utc>,
    },
    /// Stopped for good.
    Failed { message: String },
}

/// How far a running job is, for `X-Progress`.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) types_done: AtomicUsize,
    pub(crate) types_total: AtomicUsize,
    pub(crate) resources: AtomicU64,
}

/// A job being run by this process.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) cancelled: AtomicBool,
    pub(crate) progress: Progress,
}

/// What the job documents of each kind have in common, for writing and sweeping them.
pub(crate) trait JobDoc: serde::Serialize + serde::de::DeserializeOwned {
    const COLLECTION: &'static str;
    fn key(&self) -> String;
    fn service(&self) -> &str;
    fn id(&self) -> &str;
    fn state(&self) -> JobState;
    fn finished(&self) -> Option<DateTime<Utc>>;
}

impl JobDoc for Job {
    const COLLECTION: &'static str = job::COLLECTION;
    fn key(&self) -> String {
        Job::key(self)
    }
    fn service(&self) -> &str {
        &self.service
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn state(&self) -> JobState {
        self.state
    }
    fn finished(&self) -> Option<DateTime<Utc>> {
        self.finished
    }
}

impl JobDoc for ImportJob {
    const COLLECTION: &'static str = import::COLLECTION;
    fn key(&self) -> String {
        ImportJob::key(self)
    }
    fn service(&self) -> &str {
        &self.service
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn state(&self) -> JobState {
        self.state
    }
    fn finished(&self) -> Option<DateTime<Utc>> {
        self.finished
    }
}

/// The bulk engine of one server.
pub struct Bulk {
    store: Arc<dyn Store>,
    config: BulkConfig,
    running: Mutex<HashMap<String, Arc<Running>>>,
    imports: Mutex<HashMap<String, Arc<import::Running>>>,
    polls: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk")
            .field("config", &self.config)
            .finish()
    }
}

impl Bulk {
    pub fn new(store: Arc<dyn Store>, config: BulkConfig) -> Arc<Bulk> {
        Arc::new(Bulk {
            store,
            config,
            running: Mutex::new(HashMap::new()),
            imports: Mutex::new(HashMap::new()),
            polls: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &BulkConfig {
        &self.config
    }

    /// Takes up the jobs a previous process left running (each again from its snapshot,
    /// or failed after [`MAX_ATTEMPTS`]), removes folders no job owns, and starts the sweep
    /// that deletes expired jobs. Call once, on a Tokio runtime, before serving.
    pub async fn start(self: &Arc<Self>) -> Result<usize, BulkError> {
        std::fs::create_dir_all(&self.config.dir).map_err(|e| io("creating the bulk folder", e))?;
        let docs = self.store.list_documents(job::COLLECTION).await?;
        let mut resumed = 0;
        let mut owned = std::collections::HashSet::new();
        for doc in docs {
            let Ok(mut job) = serde_json::from_value::<Job>(doc.body.clone()) else {
                tracing::warn!(key = %doc.key, "an unreadable bulk job document was removed");
                self.store
                    .write_documents(vec![DocumentWrite::Delete {
                        collection: job::COLLECTION.into(),
                        key: doc.key,
                        expected: Expected::Version(doc.version),
                    }])
                    .await?;
                continue;
            };
            owned.insert((job.service.clone(), job.id.clone()));
            if job.state != JobState::Running {
                continue;
            }
            if job.attempts >= MAX_ATTEMPTS {
                job.state = JobState::Failed;
                job.finished = Some(Utc::now());
                job.failure = Some(format!(
                    "the export was interrupted {} times (server restarts) and was given up",
                    job.attempts
                ));
                self.write(&job, Expected::Version(doc.version)).await?;
                self.remove_files(&job.service, &job.id);
                continue;
            }
            tracing::info!(service = %job.service, job = %job.id, attempt = job.attempts + 1, "bulk export taken up again after a restart");
            self.remove_files(&job.service, &job.id);
            self.spawn(job, doc.version);
            resumed += 1;
        }
        owned.extend(self.start_imports().await?);
        self.remove_orphans(&owned);
        let bulk = Arc::downgrade(self);
        // Often enough that a job is gone within a third of its retention past it.
        let every =
            (self.config.retention / 3).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(bulk) = bulk.upgrade() else { return };
                if let Err(e) = bulk.sweep(Utc::now()).await {
                    tracing::warn!(error = %e, "the bulk job sweep failed");
                }
            }
        });
        Ok(resumed)
    }

    /// Deletes the finished jobs older than the retention, with their files. Returns how
    /// many.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, BulkError> {
        Ok(self.sweep_jobs::<Job>(now).await? + self.sweep_jobs::<ImportJob>(now).await?)
    }

    /// [`Bulk::sweep`] of one kind of job.
    async fn sweep_jobs<J: JobDoc>(&self, now: DateTime<Utc>) -> Result<usize, BulkError> {
        let retention =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::MAX);
        let mut removed = 0;
        for doc in self.store.list_documents(J::COLLECTION).await? {
            let Ok(job) = serde_json::from_value::<J>(doc.body) else {
                continue;
            };
            let expired = job
                .finished()
                .is_some_and(|f| f.checked_add_signed(retention).is_none_or(|e| e <= now));
            if job.state() != JobState::Running && expired {
                let deleted = self
                    .store
                    .write_documents(vec![DocumentWrite::Delete {
                        collection: J::COLLECTION.into(),
                        key: doc.key,
                        expected: Expected::Version(doc.version),
                    }])
                    .await;
                if deleted.is_ok() {
                    self.remove_files(job.service(), job.id());
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Accepts an export: checks the Group of a group export, the job limit, takes the
    /// snapshot and writes the job's document. Returns the job; its status URL is
    /// [`status_url`].
    pub async fn kick_off_export(
        self: &Arc<Self>,
        who: KickOff,
        params: ExportParams,
    ) -> Result<Job, BulkError> {
        if let ExportLevel::Group(id) = &params.level {
            let group = self.store.read(&who.service, "Group", id).await?;
            if group.as_ref().is_none_or(|g| g.is_deleted()) {
                return Err(BulkError::NotFound(format!("Group/{id} is not known")));
            }
        }
        let running = self
            .store
            .list_documents(job::COLLECTION)
            .await?
            .into_iter()
            .filter_map(|d| serde_json::from_value::<Job>(d.body).ok())
            .filter(|j| j.service == who.service && j.state == JobState::Running)
            .count();
        if running >= self.config.max_jobs_per_service {
            return Err(BulkError::TooMany {
                running,
                retry_after: Duration::from_secs(10),
            });
        }
        let snapshot = self.store.snapshot(&who.service).await?;
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            service: who.service,
            state: JobState::Running,
            request: who.request,
            base: who.base.trim_end_matches('/').to_owned(),
            owner: who.owner,
            created: Utc::now(),
            finished: None,
            export: params,
            snapshot_position: snapshot.position,
            transaction_time: snapshot.time,
            output: Vec::new(),
            deleted: Vec::new(),
            error: Vec::new(),
            failure: None,
            attempts: 0,
        };
        let written = self.write(&job, Expected::Absent).await?;
        self.spawn(job.clone(), written);
        Ok(job)
    }

    /// The job, if it exists.
    pub async fn job(&self, service: &str, id: &str) -> Result<Job, BulkError> {
        if !valid_job_id(id) {
            return Err(not_found(id));
        }
        let doc = self
            .store
            .get_document(job::COLLECTION, &job::key(service, id))
            .await?
            .ok_or_else(|| not_found(id))?;
        serde_json::from_value(doc.body).map_err(|e| BulkError::Io(format!("job {id}: {e}")))
    }

    /// A poll of job `id`, addressed at `base` (the manifest's file URLs are under it, so
    /// that a client polling through a private endpoint's name gets files under that name):
    /// `429` when it comes too soon after the previous poll.
    pub async fn status(&self, service: &str, id: &str, base: &str) -> Result<Status, BulkError> {
        let job = self.job(service, id).await?;
        self.check_poll(&job.key())?;
        Ok(match job.state {
            JobState::Running => {
                let progress = self.running_of(&job.key()).map_or_else(
                    || "queued".to_owned(),
                    |r| {
                        let p = &r.progress;
                        format!(
                            "{} resources; {} of {} types",
                            p.resources.load(Ordering::Relaxed),
                            p.types_done.load(Ordering::Relaxed),
                            p.types_total.load(Ordering::Relaxed)
                        )
                    },
                );
                Status::InProgress {
                    progress,
                    retry_after: self.config.retry_after,
                }
            }
            JobState::Completed => {
                let retention = chrono::Duration::from_std(self.config.retention)
                    .unwrap_or(chrono::Duration::MAX);
                let finished = job.finished.unwrap_or(job.created);
                Status::Completed {
                    manifest: manifest(&job, base),
                    expires: finished.checked_add_signed(retention).unwrap_or(finished),
                }
            }
            JobState::Failed => Status::Failed {
                message: job
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the export failed".into()),
            },
        })
    }

    /// Cancels a running job, or deletes a finished one with its files (IG 2.0.0: after
    /// this the status URL answers 404).
    pub async fn cancel(&self, service: &str, id: &str) -> Result<(), BulkError> {
        let job = self.job(service, id).await?;
        if let Some(r) = self.running_of(&job.key()) {
            r.cancelled.store(true, Ordering::Relaxed);
        }
        self.store
            .write_documents(vec![DocumentWrite::Delete {
                collection: job::COLLECTION.into(),
                key: job.key(),
                expected: Expected::Any,
            }])
            .await?;
        self.remove_files(service, id);
        Ok(())
    }

    /// The path of output file `name` of a completed job, and the job (for its owner).
    pub async fn file(
        &self,
        service: &str,
        id: &str,
        name: &str,
    ) -> Result<(PathBuf, Job), BulkError> {
        let job = self.job(service, id).await?;
        let listed = job.state == JobState::Completed
            && job
                .output
                .iter()
                .chain(&job.deleted)
                .chain(&job.error)
                .any(|f| f.file == name);
        if !listed {
            return Err(BulkError::NotFound(format!(
                "job {id} has no output file {name:?}"
            )));
        }
        Ok((self.job_dir(service, id).join(name), job))
    }

    /// 429 for a poll of job `key` sooner than the poll interval after the last answered one.
    fn check_poll(&self, key: &str) -> Result<(), BulkError> {
        let now = Instant::now();
        let mut polls = self.polls.lock().unwrap_or_else(PoisonError::into_inner);
        if polls.len() > 10_000 {
            polls.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
        }
        // Only an answered poll starts the interval again: a client that polls too fast is
        // told to wait, never kept waiting for ever by its own refusals.
        if let Some(last) = polls.get(key) {
            if now.duration_since(*last) < self.config.min_poll_interval {
                return Err(BulkError::PolledTooFast {
                    retry_after: self.config.retry_after,
                });
            }
        }
        polls.insert(key.to_owned(), now);
        Ok(())
    }

    fn running_of(&self, key: &str) -> Option<Arc<Running>> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub(crate) fn job_dir(&self, service: &str, id: &str) -> PathBuf {
        self.config.dir.join(service).join(id)
    }

    fn remove_files(&self, service: &str, id: &str) {
        let dir = self.job_dir(service, id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "bulk output not removed");
            }
        }
    }

    /// Removes job folders that no job document owns (left by a cancel during a crash).
    fn remove_orphans(&self, owned: &std::collections::HashSet<(String, String)>) {
        let Ok(services) = std::fs::read_dir(&self.config.dir) else {
            return;
        };
        for service in services.flatten() {
            let Ok(jobs) = std::fs::read_dir(service.path()) else {
                continue;
            };
            let sname = service.file_name().to_string_lossy().into_owned();
            for job in jobs.flatten() {
                let jname = job.file_name().to_string_lossy().into_owned();
                if !owned.contains(&(sname.clone(), jname)) {
                    let _ = std::fs::remove_dir_all(job.path());
                }
            }
        }
    }

    /// Writes a job's document (export or import); its new version.
    pub(crate) async fn write<J: JobDoc>(
        &self,
        job: &J,
        expected: Expected,
    ) -> Result<u64, BulkError> {
        let body = serde_json::to_value(job).map_err(|e| BulkError::Io(e.to_string()))?;
        let written = self
            .store
            .write_documents(vec![DocumentWrite::Put {
                collection: J::COLLECTION.into(),
                key: job.key(),
                body,
                expected,
            }])
            .await?;
        Ok(written.first().map_or(0, |d| d.version))
    }

    /// Runs `job` (document at `version`) on a task of its own.
    fn spawn(self: &Arc<Self>, mut job: Job, version: u64) {
        let running = Arc::new(Running {
            cancelled: AtomicBool::new(false),
            progress: Progress::default(),
        });
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.key(), running.clone());
        let bulk = self.clone();
        tokio::spawn(async move {
            let key = job.key();
            // The attempt is counted before any work, so that a job that crashes the server
            // every time is given up.
            job.attempts += 1;
            let version = match bulk.write(&job, Expected::Version(version)).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::info!(job = %job.id, error = %e, "bulk job gone before it started");
                    bulk.forget(&key);
                    return;
                }
            };
            let dir = bulk.job_dir(&job.service, &job.id);
            let outcome = run::export(&bulk.store, &bulk.config, &job, &dir, &running).await;
            if running.cancelled.load(Ordering::Relaxed) {
                bulk.remove_files(&job.service, &job.id);
                bulk.forget(&key);
                return;
            }
            job.finished = Some(Utc::now());
            match outcome {
                Ok(files) => {
                    let resources: u64 = files.output.iter().map(|f| f.count).sum();
                    let seconds = (Utc::now() - job.created).num_milliseconds() as f64 / 1000.0;
                    tracing::info!(
                        service = %job.service,
                        job = %job.id,
                        resources,
                        files = files.output.len(),
                        seconds,
                        "bulk export completed"
                    );
                    job.state = JobState::Completed;
                    job.output = files.output;
                    job.deleted = files.deleted;
                    job.error = files.error;
                }
                Err(e) => {
                    tracing::warn!(service = %job.service, job = %job.id, error = %e, "bulk export failed");
                    job.state = JobState::Failed;
                    job.failure = Some(e.to_string());
                    bulk.remove_files(&job.service, &job.id);
                }
            }
            if let Err(e) = bulk.write(&job, Expected::Version(version)).await {
                // Cancelled meanwhile (the document is gone): nothing to report.
                tracing::info!(job = %job.id, error = %e, "bulk job not recorded as finished");
                bulk.remove_files(&job.service, &job.id);
            }
            bulk.forget(&key);
        });
    }

    fn forget(&self, key: &str) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Waits until no job runs in this process (for tests and shutdown), at most `limit`.
    pub async fn idle(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
                && self
                    .imports
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

fn not_found(id: &str) -> BulkError {
    BulkError::NotFound(format!(
        "there is no export job {id:?} (it may have been cancelled or expired)"
    ))
}

/// Job ids are UUIDs; anything else is refused before it reaches a path or the store.
fn valid_job_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// The status URL of a job under `base`: `[base]/_operations/export/[id]` (Azure's form).
pub fn status_url(base: &str, job: &Job) -> String {
    format!(
        "{}/_operations/export/{}",
        base.trim_end_matches('/'),
        job.id
    )
}

/// The completion manifest (IG 2.0.0 §response-complete-status), its file URLs under `base`.
pub fn manifest(job: &Job, base: &str) -> Value {
    let status = status_url(base, job);
    let files = |list: &[OutputFile]| -> Vec<Value> {
        list.iter()
            .map(|f| json!({"type": f.rtype, "url": format!("{status}/{}", f.file), "count": f.count}))
            .collect()
    };
    let mut m = json!({
        "transactionTime": fhir_store::format_instant(&job.transaction_time),
        "request": job.request,
        "requiresAccessToken": true,
        "output": files(&job.output),
        "error": files(&job.error),
    });
    if job.export.since.is_some() && !job.export.deleted && !job.export.history {
        m["deleted"] = files(&job.deleted).into();
    }
    if let Some(c) = &job.export.container {
        m["extension"] = json!({"container": c});
    }
    m
}

/// The job folder's path for `service`/`id` under `dir` (for tests).
pub fn job_folder(dir: &Path, service: &str, id: &str) -> PathBuf {
    dir.join(service).join(id)
}
