//! A bulk job as it is kept in the store: one control-plane document per job (collection
//! [`COLLECTION`], key `service/id`), written when the job is made, when it ends, and when a
//! restarted server takes it up again. The document is the truth: a job whose document is
//! gone (cancelled, expired) is not reported, and its files are removed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::params::ExportParams;

/// The store collection of job documents.
pub const COLLECTION: &str = "bulk-jobs";

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted and being run (or to be run again after a restart).
    Running,
    /// Every file written; the manifest may be served.
    Completed,
    /// Stopped for good; `failure` says why.
    Failed,
}

/// One output file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// The resource type of its lines (`OperationOutcome` for error files, `Bundle` for the
    /// deleted files).
    #[serde(rename = "type")]
    pub rtype: String,
    /// Its file name in the job's folder (`Patient-1.ndjson`).
    pub file: String,
    /// Lines in it.
    pub count: u64,
}

/// A job's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub service: String,
    pub state: JobState,
    /// The kick-off request's URL, as the manifest's `request` repeats it.
    pub request: String,
    /// The service's base URL the kick-off came to: file URLs are under it.
    pub base: String,
    /// Who kicked it off: the principal that may poll it and fetch its files besides the
    /// holders of the export right.
    pub owner: String,
    pub created: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub export: ExportParams,
    /// The store snapshot the export reads (the same on every attempt).
    pub snapshot_position: i64,
    /// The manifest's `transactionTime`: the snapshot's time.
    pub transaction_time: DateTime<Utc>,
    pub output: Vec<OutputFile>,
    pub deleted: Vec<OutputFile>,
    pub error: Vec<OutputFile>,
    pub failure: Option<String>,
    /// How many times a server has started running it (a restart mid-job runs it again
    /// from its snapshot; after [`crate::MAX_ATTEMPTS`] it fails).
    pub attempts: u32,
}

impl Job {
    pub fn key(&self) -> String {
        key(&self.service, &self.id)
    }
}

/// The document key of job `id` of `service`.
pub fn key(service: &str, id: &str) -> String {
    format!("{service}/{id}")
}
