//! The storage contract of fhirlink: FHIR services, versioned resources and their history.
//!
//! Backends (SQLite in `fhir-store-sqlite`, PostgreSQL later) implement [`Store`] and
//! [`WriteTx`], and must pass the shared [`conformance`] suite unchanged. This crate knows
//! nothing of HTTP: it moves resource JSON in and out, assigns versions and timestamps, and
//! guarantees that a committed [`WriteTx`] is durable and all-or-nothing.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

pub use fhir_search::{Cursor, IndexEntry, SearchQuery};

pub mod conformance;
pub mod copy;
pub mod feed;

/// A resource type name such as `Patient`, as it appears in `resourceType`.
pub type ResourceType = str;

/// How a version came to be: the HTTP verb that made it, as history Bundles report it
/// (FHIR R4 §3.1.0.1.7 `Bundle.entry.request.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    pub fn from_code(code: i64) -> Method {
        match code {
            0 => Method::Post,
            1 => Method::Put,
            2 => Method::Patch,
            _ => Method::Delete,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Method::Post => 0,
            Method::Put => 1,
            Method::Patch => 2,
            Method::Delete => 3,
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    /// 1, 2, 3, … per resource; `meta.versionId` is its decimal form.
    pub version: u64,
    pub last_updated: DateTime<Utc>,
    pub method: Method,
    /// The resource JSON exactly as stored, with `id` and `meta.versionId`/`meta.lastUpdated`
    /// stamped. `None` for a deletion.
    pub body: Option<Bytes>,
}

impl StoredResource {
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// Which history to list (FHIR R4 §3.1.0.11).
#[derive(Debug, Clone)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

/// A page request on a history: newest first.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Only versions with `lastUpdated >= since` (`_since`).
    pub since: Option<DateTime<Utc>>,
    /// Only versions with `lastUpdated <= at` (`_at` in its simple form).
    pub at: Option<DateTime<Utc>>,
    /// Page size.
    pub count: usize,
    /// Opaque position from a previous page's [`HistoryPage::next`]: only older versions.
    pub before: Option<i64>,
}

/// One page of a history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub entries: Vec<StoredResource>,
    /// Total number of versions matching the scope and filters (ignoring paging).
    pub total: u64,
    /// The cursor for the next (older) page, if there is one.
    pub next: Option<i64>,
}

/// A control-plane document: JSON kept under (collection, key), with a version that grows
/// by one on every write, for optimistic concurrency between writers and processes.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub collection: String,
    pub key: String,
    pub version: u64,
    pub body: Value,
}

/// What a document write expects to find, checked before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever is there (or nothing).
    Any,
    /// No document under the key.
    Absent,
    /// The document at exactly this version.
    Version(u64),
}

/// One change in [`DocumentStore::write_documents`].
#[derive(Debug, Clone)]
pub enum DocumentWrite {
    Put {
        collection: String,
        key: String,
        body: Value,
        expected: Expected,
    },
    Delete {
        collection: String,
        key: String,
        expected: Expected,
    },
    /// A precondition, not a change: the batch is refused ([`StoreError::Conflict`], nothing
    /// written) when a document of `collection` was written or deleted after position
    /// `since` of the change feed ([`DocumentStore::document_changes`]), or when the store
    /// cannot tell (`since` beyond the feed, or older than what it remembers). Checked
    /// against the documents as they were before the batch, wherever it stands in it. A
    /// writer that decided on everything in `collection` as of `since` (the control plane,
    /// whose rules span documents) thus never commits a decision another process's write
    /// made stale: it catches up and decides again.
    Unchanged { collection: String, since: u64 },
}

/// One entry of the documents' change feed ([`DocumentStore::document_changes`]): a document that
/// was written (`version` is the version now there) or deleted (`version` `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChange {
    pub collection: String,
    pub key: String,
    pub version: Option<u64>,
}

/// What [`DocumentStore::document_changes`] found after a position of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentChanges {
    /// The feed's position as of this answer: every document write committed up to it is
    /// in `changes` (or was before `after`); hand it back as the next `after`.
    pub position: u64,
    /// The documents changed after `after`, each once (its latest change), in the order of
    /// their latest change.
    pub changes: Vec<DocumentChange>,
    /// The store no longer remembers every change after `after` (the SQLite store keeps a
    /// bounded window in memory): the caller must read again whatever it follows.
    pub truncated: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("service {0} does not exist")]
    NoSuchService(String),
    #[error("resource {0}/{1} already exists")]
    AlreadyExists(String, String),
    #[error("storage failure: {0}")]
    Backend(String),
    #[error("the store is busy, try again")]
    Busy,
    /// The disk (or the file system the store is on) is full: nothing was written, and the
    /// same write succeeds once space is freed, without a restart.
    #[error("storage is full: {0}")]
    StorageFull(String),
    /// A search ran past the store's time limit and was stopped (nothing was changed).
    #[error("{0}")]
    TooCostly(String),
    /// A document write found something other than what it expected; nothing was written.
    #[error("document {collection}/{key} changed: {detail}")]
    Conflict {
        collection: String,
        key: String,
        detail: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One page of a search (FHIR R4 §3.1.1): the matches in order, the resources that
/// `_include`/`_revinclude` brought in, and cursors for the neighbouring pages.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub matches: Vec<StoredResource>,
    pub includes: Vec<StoredResource>,
    /// Number of matches over all pages (FHIR R4 search.html#total): always with
    /// `_total=accurate` or `estimate`, never with `_total=none`, and by default only when it
    /// costs nothing extra ([`TotalSource`]).
    pub total: Option<u64>,
    pub next: Option<Cursor>,
    pub previous: Option<Cursor>,
    /// The backend's query and its plan, when the query asked to explain itself.
    pub plan: Option<String>,
}

/// Where a search page's `total` comes from (FHIR R4 search.html#total), decided the same way
/// by every backend once the page's rows are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalSource {
    /// The first page holds every match (fewer than `_count + 1` rows came back): its length.
    Page(u64),
    /// No filter: the kept number of the type's (or types') live resources, O(1).
    Counter,
    /// Count every match: `_total=accurate` (and `estimate`, which this store answers
    /// exactly) of a filtered search whose matches do not fit on its first page.
    Count,
    /// No `total`: `_total=none`, or by default when it would cost a count of its own.
    Omitted,
}

/// How the `total` of a page of `query` is found, given the rows of the page (`rows`, after
/// the one extra row that tells whether there is a next page was dropped) and whether there
/// are more. The default (no `_total`) gives a total only when it is free: R4 lets a server
/// leave it out, and counting every match is what makes a page's cost follow the data.
pub fn total_source(query: &SearchQuery, rows: usize, more: bool) -> TotalSource {
    use fhir_search::Total;
    if query.total == Some(Total::None) {
        return TotalSource::Omitted;
    }
    if query.count > 0 && query.cursor.is_none() && !more {
        return TotalSource::Page(u64::try_from(rows).unwrap_or(u64::MAX));
    }
    if query.filters.is_empty() {
        return TotalSource::Counter;
    }
    match query.total {
        Some(Total::Accurate | Total::Estimate) => TotalSource::Count,
        _ => TotalSource::Omitted,
    }
}

/// A consistent point in a service's data, for reading a whole service as it was at one
/// moment while writes go on (bulk export): every version committed before the snapshot was
/// taken and none after. `position` is the backend's own ordering (opaque to callers, only
/// handed back to [`Store::scan`]); `time` is the newest `lastUpdated` it holds (the
/// store's clock when it holds nothing), the Bulk Data manifest's `transactionTime`: a later
/// export with `_since` of it misses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub position: i64,
    pub time: DateTime<Utc>,
}

/// Which versions a [`Store::scan`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanVersions {
    /// Each resource's version as of the snapshot, when it is not a deletion.
    Current,
    /// Each resource's version as of the snapshot, deletions included.
    CurrentAndDeleted,
    /// Every version up to the snapshot, deletions included, oldest first per resource.
    All,
}

/// A page request of [`Store::scan`]: one type of one service as of a [`Snapshot`], in `id`
/// order (then version order), after a cursor.
#[derive(Debug, Clone)]
pub struct ScanQuery {
    pub snapshot: Snapshot,
    pub versions: ScanVersions,
    /// Only versions with `lastUpdated >= since` (`_since`).
    pub since: Option<DateTime<Utc>>,
    /// Only versions with `lastUpdated <= till` (Azure's `_till`).
    pub till: Option<DateTime<Utc>>,
    /// Only after this `(id, version)`: the last one of the previous page.
    pub after: Option<(String, u64)>,
    /// Page size; a page shorter than it is the last.
    pub limit: usize,
}

/// The control plane's documents and their change feed: the half of the contract that the
/// control plane, the bulk jobs and the nodes' registry use. Every [`Store`] is one.
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// One control-plane document, if it exists.
    async fn get_document(&self, collection: &str, key: &str) -> Result<Option<Document>>;
    /// Every document of a collection, ordered by key.
    async fn list_documents(&self, collection: &str) -> Result<Vec<Document>>;
    /// Applies every write at once, durably, or none of them when an expectation fails
    /// ([`StoreError::Conflict`]). Returns the documents written, in order (deletions omitted).
    async fn write_documents(&self, writes: Vec<DocumentWrite>) -> Result<Vec<Document>>;

    /// The documents' change feed: the documents written or deleted after position `after`
    /// (0: since the store was opened, or on a store shared by processes since it was
    /// created), waiting up to `wait` for one when there is none yet. Every committed
    /// [`DocumentStore::write_documents`] moves the position on, in commit order, for every process
    /// using the store: a reader that hands each answer's `position` back as the next
    /// `after` misses no change. A store shared by processes finds other processes' writes
    /// by polling (and may be woken early by its engine's notifications).
    async fn document_changes(&self, after: u64, wait: Duration) -> Result<DocumentChanges>;
}

/// The store of every FHIR service's resources, and (as a [`DocumentStore`]) of the
/// control plane's documents.
#[async_trait]
pub trait Store: DocumentStore {
    /// Creates the service if it does not exist yet. Idempotent.
    async fn create_service(&self, name: &str) -> Result<()>;
    /// Deletes the service and every version of every resource in it.
    async fn delete_service(&self, name: &str) -> Result<bool>;
    /// The names of all services, sorted.
    async fn list_services(&self) -> Result<Vec<String>>;
    async fn service_exists(&self, name: &str) -> Result<bool>;

    /// The current version of a resource, a deletion included; `None` if it never existed.
    async fn read(&self, service: &str, rtype: &str, id: &str) -> Result<Option<StoredResource>>;
    /// One version of a resource; `None` if that version does not exist.
    async fn vread(
        &self,
        service: &str,
        rtype: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>>;
    async fn history(
        &self,
        service: &str,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> Result<HistoryPage>;

    /// One page of a search on a service. Only current, non-deleted versions match. With the
    /// default order (no `_sort`) resources come in the order their current version was
    /// written, so a page cursor stays correct while resources are added.
    async fn search(&self, service: &str, query: &SearchQuery) -> Result<SearchPage>;

    /// The service's data as of now, to [`Store::scan`] while writes go on.
    async fn snapshot(&self, service: &str) -> Result<Snapshot>;
    /// One page of the versions of type `rtype` as of `query.snapshot` (see [`ScanQuery`]):
    /// what a write made after the snapshot changed is read as it was before.
    async fn scan(
        &self,
        service: &str,
        rtype: &str,
        query: &ScanQuery,
    ) -> Result<Vec<StoredResource>>;

    /// Starts a write transaction on one service. Writers are serialised: a transaction
    /// sees the current versions and no other writer changes them until it ends. Nothing is
    /// visible to readers before [`WriteTx::commit`]; dropping the transaction rolls it back.
    async fn begin(&self, service: &str) -> Result<Box<dyn WriteTx>>;

    /// The base URLs resources were written through ([`Prepared::with_base`]): what an index
    /// rebuild, or a copy into another store, extracts references with.
    async fn own_bases(&self) -> Result<Vec<String>>;
}

/// A resource made ready for [`WriteTx::put_prepared`] before its transaction begins: its id
/// is set and its search index extracted here, on the caller's task, so that the one writer
/// does not spend its turn on FHIRPath. Only `_lastUpdated` is extracted again once the store
/// has stamped the version (see [`fhir_search::restamp_last_updated`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    resource: Value,
    index: Vec<IndexEntry>,
    bases: Vec<String>,
    /// The stored form serialised ahead ([`Prepared::stamp_ahead`]): version, instant
    /// (microseconds) and body.
    ahead: Option<(u64, i64, Vec<u8>)>,
}

impl Prepared {
    pub fn new(id: &str, mut resource: Value) -> Prepared {
        set_id(&mut resource, id);
        let index = fhir_search::extract(&resource);
        Prepared {
            resource,
            index,
            bases: Vec::new(),
            ahead: None,
        }
    }

    /// [`Prepared::new`] for a resource written through `base` (the server's base URL the
    /// request came to): references under it are indexed as relative ones
    /// ([`fhir_search::extract_with_bases`]). The store remembers the base, so that a rebuilt
    /// index treats such references the same way.
    pub fn with_base(id: &str, mut resource: Value, base: &str) -> Prepared {
        set_id(&mut resource, id);
        let base = base.trim_end_matches('/').to_string();
        let index = fhir_search::extract_with_bases(&resource, std::slice::from_ref(&base));
        Prepared {
            resource,
            index,
            bases: vec![base],
            ahead: None,
        }
    }

    /// [`Prepared::with_base`] with every base a store recorded ([`Store::own_bases`]), for a
    /// version copied from it.
    pub fn with_bases(id: &str, mut resource: Value, bases: &[String]) -> Prepared {
        set_id(&mut resource, id);
        let index = fhir_search::extract_with_bases(&resource, bases);
        Prepared {
            resource,
            index,
            bases: bases.to_vec(),
            ahead: None,
        }
    }

    /// The resource (`null` once [`Prepared::stamp_ahead`] has serialised it).
    pub fn resource(&self) -> &Value {
        &self.resource
    }

    /// The base URLs given to [`Prepared::with_base`] or [`Prepared::with_bases`].
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    pub fn into_parts(self) -> (Value, Vec<IndexEntry>) {
        (self.resource, self.index)
    }

    /// The stored form of this resource as version `version` of `rtype/id` at
    /// `last_updated`, as every backend writes it: `id` and `meta` stamped ([`stamp`]), the
    /// `_lastUpdated` index rows restamped, the JSON serialised. Returns the body, the index
    /// rows and the base URLs it was written through.
    pub fn into_version(
        mut self,
        rtype: &str,
        id: &str,
        version: u64,
        last_updated: &DateTime<Utc>,
    ) -> Result<(Vec<u8>, Vec<IndexEntry>, Vec<String>)> {
        if let Some((v, micros, body)) = self.ahead {
            if v == version && micros == last_updated.timestamp_micros() {
                return Ok((body, self.index, self.bases));
            }
            // Stamped ahead for another version or instant: from its bytes again.
            self.resource = serde_json::from_slice(&body)
                .map_err(|e| StoreError::Backend(format!("cannot read back {rtype}/{id}: {e}")))?;
        }
        let (mut resource, mut entries) = (self.resource, self.index);
        stamp(&mut resource, id, version, last_updated);
        fhir_search::restamp_last_updated(&resource, &mut entries);
        let body = serde_json::to_vec(&resource)
            .map_err(|e| StoreError::Backend(format!("cannot serialise {rtype}/{id}: {e}")))?;
        Ok((body, entries, self.bases))
    }

    /// Does the work of [`Prepared::into_version`] now, for a caller that knows the version
    /// and instant the store will write (a bulk import of versioned lines), so that it runs
    /// on the caller's thread, not on the store's one writer. `written` is the JSON the
    /// resource was parsed from (parsed refusing duplicate keys): when it already carries
    /// this id, version and instant (`format_instant`), stamping would change nothing and its
    /// bytes are kept as they were written, unserialised. The parsed tree is freed here too.
    /// `into_version` with the same version and instant then only hands the bytes over; with
    /// others it parses them back and stamps again.
    pub fn stamp_ahead(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        last_updated: &DateTime<Utc>,
        written: Option<&[u8]>,
    ) -> Result<()> {
        let meta = self.resource.get("meta");
        let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
        let unchanged = self.resource.get("id").and_then(Value::as_str) == Some(id)
            && text("versionId") == Some(version.to_string().as_str())
            && text("lastUpdated") == Some(format_instant(last_updated).as_str());
        if !unchanged {
            stamp(&mut self.resource, id, version, last_updated);
        }
        fhir_search::restamp_last_updated(&self.resource, &mut self.index);
        let body = match written {
            Some(bytes) if unchanged => bytes.trim_ascii().to_vec(),
            _ => serde_json::to_vec(&self.resource)
                .map_err(|e| StoreError::Backend(format!("cannot serialise {rtype}/{id}: {e}")))?,
        };
        self.resource = Value::Null;
        self.ahead = Some((version, last_updated.timestamp_micros(), body));
        Ok(())
    }
}

/// One version of [`WriteTx::put_versions`]: the arguments of [`WriteTx::put_version`].
#[derive(Debug, Clone)]
pub struct VersionWrite {
    pub rtype: String,
    pub id: String,
    pub version: u64,
    pub last_updated: DateTime<Utc>,
    /// `None` records a deletion.
    pub prepared: Option<Prepared>,
}

/// A write transaction on one service.
#[async_trait]
pub trait WriteTx: Send {
    /// The current version of a resource as this transaction sees it.
    async fn current(&mut self, rtype: &str, id: &str) -> Result<Option<StoredResource>>;
    /// Stores a new version of `rtype/id` (version 1 if it never existed, else current + 1),
    /// stamping `id`, `meta.versionId` and `meta.lastUpdated` into `resource`.
    async fn put(
        &mut self,
        rtype: &str,
        id: &str,
        resource: Value,
        method: Method,
    ) -> Result<StoredResource>;
    /// [`WriteTx::put`] of a resource whose index was extracted by [`Prepared::new`] with the
    /// same `id`.
    async fn put_prepared(
        &mut self,
        rtype: &str,
        id: &str,
        prepared: Prepared,
        method: Method,
    ) -> Result<StoredResource>;
    /// Records the deletion of `rtype/id` as a new version. Returns `None`, writing nothing,
    /// when the resource does not exist or is already deleted.
    async fn delete(&mut self, rtype: &str, id: &str) -> Result<Option<StoredResource>>;
    /// Stores a version as another server made it (bulk import in Azure's IncrementalLoad
    /// shape): `version` and `last_updated` are kept as given (`meta.versionId` and
    /// `meta.lastUpdated` are stamped with them), `prepared` `None` records a deletion, and
    /// the store's clock moves past `last_updated`, so a later write is still newer. Only a
    /// version above the current one is written: returns `None`, writing nothing, when the
    /// resource is already at `version` or beyond (an import run again is idempotent).
    async fn put_version(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        last_updated: DateTime<Utc>,
        prepared: Option<Prepared>,
    ) -> Result<Option<StoredResource>>;
    /// [`WriteTx::put_version`] of each version of `batch` in order, as one step: what a bulk
    /// import writes a chunk with. Returns, for each, whether it was written (false: the
    /// resource was already at its version or beyond). The result is the loop's; a backend
    /// may do it faster (the SQLite store writes the batch's index rows together, in key
    /// order, and its counts once per type).
    async fn put_versions(&mut self, batch: Vec<VersionWrite>) -> Result<Vec<bool>> {
        let mut written = Vec::with_capacity(batch.len());
        for v in batch {
            let put = self
                .put_version(&v.rtype, &v.id, v.version, v.last_updated, v.prepared)
                .await?;
            written.push(put.is_some());
        }
        Ok(written)
    }
    /// Replaces the content of the stored version `version` of `rtype/id` in place: the
    /// version keeps its number, `lastUpdated` and method (`meta.versionId` and
    /// `meta.lastUpdated` are stamped with them), and no version is added — what `$meta-add`
    /// and `$meta-delete` do (FHIR R4 resource-operation-meta-add: "does not cause a new
    /// version of the resource to be created"). When it is the current version its search
    /// index is replaced too. Returns the version as stored now, or `None`, writing nothing,
    /// when there is no such version or it is a deletion.
    async fn rewrite_version(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        prepared: Prepared,
    ) -> Result<Option<StoredResource>>;
    /// Removes every version of `rtype/id` but the current one (Azure's `$purge-history`):
    /// the current version, a deletion or not, stays exactly as it is, and history, vread and
    /// scans see only it afterwards. Returns how many versions were removed (0 when the
    /// resource has one version or does not exist).
    async fn purge_history(&mut self, rtype: &str, id: &str) -> Result<u64>;
    /// `(type, id)` of up to `limit` current resources matching the filters of `query`, as this
    /// transaction sees them: what conditional create, update, delete and conditional
    /// references decide on.
    async fn matching(
        &mut self,
        query: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<(String, String)>>;
    /// Makes every change durable and visible, all at once. Returns only when durable.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated` in a resource, keeping the order of
/// the other elements: `meta` goes right after `id` when the resource did not have one.
pub fn stamp(resource: &mut Value, id: &str, version: u64, last_updated: &DateTime<Utc>) {
    set_id(resource, id);
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let instant = format_instant(last_updated);
    match obj.get_mut("meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.insert("versionId".into(), Value::String(version.to_string()));
            meta.insert("lastUpdated".into(), Value::String(instant));
        }
        None => {
            let mut meta = serde_json::Map::new();
            meta.insert("versionId".into(), Value::String(version.to_string()));
            meta.insert("lastUpdated".into(), Value::String(instant));
            let at = obj.keys().position(|k| k == "id").map_or(0, |i| i + 1);
            obj.shift_insert(at, "meta".into(), Value::Object(meta));
        }
    }
}

/// Sets `id`, right after `resourceType` when the resource had none.
fn set_id(resource: &mut Value, id: &str) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    if obj.contains_key("id") {
        obj.insert("id".into(), Value::String(id.into()));
    } else {
        let at = usize::from(obj.contains_key("resourceType"));
        obj.shift_insert(at, "id".into(), Value::String(id.into()));
    }
}

/// A FHIR `instant` with microseconds, in UTC: `2026-11-23T00:14:29.123456Z`.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The clock of a store: UTC now, strictly increasing across calls so that every version has
/// its own `lastUpdated` and `_since` never misses a write made in the same microsecond.
#[derive(Debug, Default)]
pub struct MonotonicClock {
    last_micros: std::sync::atomic::AtomicI64,
}

impl MonotonicClock {
    pub fn now(&self) -> DateTime<Utc> {
        use std::sync::atomic::Ordering;
        let wall = Utc::now().timestamp_micros();
        let mut prev = self.last_micros.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev + 1);
            match self.last_micros.compare_exchange_weak(
                prev,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return DateTime::from_timestamp_micros(next).unwrap_or_default(),
                Err(p) => prev = p,
            }
        }
    }

    /// Makes sure the next instant is after `t` (the newest instant already stored).
    pub fn advance_past(&self, t: &DateTime<Utc>) {
        self.last_micros
            .fetch_max(t.timestamp_micros(), std::sync::atomic::Ordering::AcqRel);
    }
}
