//! Running an export: each type in turn, read from the job's snapshot in id-ordered pages
//! ([`fhir_store::Store::scan`]) and written as NDJSON, the stored bytes as they are when no
//! view or filter needs the parsed resource. The work runs on a blocking thread (file writes
//! and JSON), with the store's calls made from it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fhir_store::{
    HistoryQuery, HistoryScope, ScanQuery, ScanVersions, Snapshot, Store, StoredResource,
};
use serde_json::{json, Value};

use crate::job::{Job, OutputFile};
use crate::params::ExportLevel;
use crate::{io, BulkConfig, BulkError, Running};

/// Versions read per scan page.
const PAGE: usize = 1000;
/// Deletions per Bundle line of a `deleted` file.
const DELETIONS_PER_BUNDLE: usize = 500;
/// Azure's mark of a soft-deleted version in an export with `includeAssociatedData=_deleted`.
pub const DELETED_STATE: &str = "http://azurehealthcareapis.com/data-extensions/deleted-state";

/// The files a finished export wrote.
#[derive(Debug, Default)]
pub(crate) struct Files {
    pub(crate) output: Vec<OutputFile>,
    pub(crate) deleted: Vec<OutputFile>,
    pub(crate) error: Vec<OutputFile>,
}

pub(crate) async fn export(
    store: &Arc<dyn Store>,
    config: &BulkConfig,
    job: &Job,
    dir: &Path,
    running: &Arc<Running>,
) -> Result<Files, BulkError> {
    let store = store.clone();
    let config = config.clone();
    let job = job.clone();
    let dir = dir.to_path_buf();
    let running = running.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut run = Run {
            store: &*store,
            handle,
            config: &config,
            job: &job,
            dir,
            running: &running,
            files: Files::default(),
        };
        run.all()?;
        Ok(run.files)
    })
    .await
    .map_err(|e| BulkError::Io(format!("the export task ended: {e}")))?
}

struct Run<'a> {
    store: &'a dyn Store,
    handle: tokio::runtime::Handle,
    config: &'a BulkConfig,
    job: &'a Job,
    dir: PathBuf,
    running: &'a Running,
    files: Files,
}

/// Which patients' compartments a Patient or Group export reaches.
enum Patients {
    /// Every patient's (a Patient export without `patient`).
    Any,
    /// These patients' only.
    Only(HashSet<String>),
}

impl Run<'_> {
    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(f)
    }

    fn cancelled(&self) -> bool {
        self.running.cancelled.load(Ordering::Relaxed)
    }

    fn all(&mut self) -> Result<(), BulkError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io("creating the job folder", e))?;
        let export = &self.job.export;
        let patients = match &export.level {
            ExportLevel::System => None,
            ExportLevel::Patient if export.patients.is_empty() => Some(Patients::Any),
            ExportLevel::Patient => Some(Patients::Only(export.patients.iter().cloned().collect())),
            ExportLevel::Group(id) => Some(Patients::Only(self.group_members(id)?)),
        };
        let types: Vec<String> = if export.types.is_empty() {
            fhir_model::r4().resource_types().to_vec()
        } else {
            export.types.clone()
        };
        // A Patient or Group export reaches the types of the Patient compartment only.
        let types: Vec<String> = types
            .into_iter()
            .filter(|t| {
                patients.is_none()
                    || t == "Patient"
                    || !fhir_search::compartment::params("Patient", t).is_empty()
            })
            .collect();
        self.running
            .progress
            .types_total
            .store(types.len(), Ordering::Relaxed);
        for rtype in &types {
            if self.cancelled() {
                return Ok(());
            }
            self.one_type(rtype, patients.as_ref())?;
            self.running
                .progress
                .types_done
                .fetch_add(1, Ordering::Relaxed);
        }
        // Durable before the job is reported complete: the files, then their folder.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The active members of Group `id` that are Patients (`member.entity`), as the group
    /// was at the snapshot (its newest version at or before the snapshot's time).
    fn group_members(&self, id: &str) -> Result<HashSet<String>, BulkError> {
        let page = self.block(self.store.history(
            &self.job.service,
            &HistoryScope::Instance("Group".into(), id.into()),
            &HistoryQuery {
                since: None,
                at: Some(self.job.transaction_time),
                count: 1,
                before: None,
            },
        ))?;
        let group = page
            .entries
            .into_iter()
            .next()
            .and_then(|g| g.body)
            .ok_or_else(|| BulkError::NotFound(format!("Group/{id} is not known")))?;
        let group: Value = parse(&group)?;
        let mut out = HashSet::new();
        for m in group
            .get("member")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if m.get("inactive").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(r) = m
                .get("entity")
                .and_then(|e| e.get("reference"))
                .and_then(Value::as_str)
            {
                if let Some((t, pid)) = fhir_search::extract::local_reference(r) {
                    if t == "Patient" {
                        out.insert(pid);
                    }
                }
            }
        }
        Ok(out)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            position: self.job.snapshot_position,
            time: self.job.transaction_time,
        }
    }

    /// The ids of `rtype` that its `_typeFilter`s select (`None`: no filter for the type).
    fn filtered_ids(&self, rtype: &str) -> Result<Option<HashSet<String>>, BulkError> {
        let filters: Vec<_> = self
            .job
            .export
            .type_filters
            .iter()
            .filter(|f| f.rtype == rtype)
            .collect();
        if filters.is_empty() {
            return Ok(None);
        }
        let mut ids = HashSet::new();
        for f in filters {
            let opts = fhir_search::ParseOptions {
                base: Some(self.job.base.clone()),
                default_count: PAGE,
                max_count: PAGE,
            };
            let mut q = fhir_search::parse(Some(rtype), &f.query, &opts)
                .map_err(|e| BulkError::invalid("_typeFilter", e.to_string()))?;
            q.count = PAGE;
            q.total = Some(fhir_search::query::Total::None);
            loop {
                let page = self.block(self.store.search(&self.job.service, &q))?;
                ids.extend(page.matches.into_iter().map(|m| m.id));
                match page.next {
                    Some(next) if !self.cancelled() => q.cursor = Some(next),
                    _ => break,
                }
            }
        }
        Ok(Some(ids))
    }

    fn one_type(&mut self, rtype: &str, patients: Option<&Patients>) -> Result<(), BulkError> {
        let export = &self.job.export;
        let versions = if export.history {
            ScanVersions::All
        } else if export.deleted || export.since.is_some() {
            ScanVersions::CurrentAndDeleted
        } else {
            ScanVersions::Current
        };
        // Deletions go in the output, marked (Azure's includeAssociatedData), or, for a
        // `_since` export without it, to the `deleted` files (IG 2.0.0).
        let deletions_in_output = export.history || export.deleted;
        let selected = self.filtered_ids(rtype)?;
        let compartment = patients.map(|p| Compartment::new(rtype, p));
        let mut out = Splitter::new(&self.dir, rtype, self.config.max_resources_per_file);
        let mut deleted: Vec<String> = Vec::new();
        let mut deleted_files =
            Splitter::new(&self.dir, "deleted", self.config.max_resources_per_file);
        // The previous version's body of each id, for marking a deletion (All: in order).
        let mut previous: Option<(String, bytes::Bytes)> = None;
        let mut after = None;
        loop {
            if self.cancelled() {
                return Ok(());
            }
            let page = self.block(self.store.scan(
                &self.job.service,
                rtype,
                &ScanQuery {
                    snapshot: self.snapshot(),
                    versions,
                    since: export.since,
                    till: export.till,
                    after: after.clone(),
                    limit: PAGE,
                },
            ))?;
            let full = page.len() == PAGE;
            if let Some(last) = page.last() {
                after = Some((last.id.clone(), last.version));
            }
            for r in page {
                if let Some(ids) = &selected {
                    if !ids.contains(&r.id) {
                        continue;
                    }
                }
                let line = match &r.body {
                    Some(body) => {
                        if export.history {
                            previous = Some((r.id.clone(), body.clone()));
                        }
                        let keep = match &compartment {
                            None => true,
                            Some(c) => c.holds(&r.id, body),
                        };
                        if !keep {
                            continue;
                        }
                        self.line(body)?
                    }
                    None if deletions_in_output => {
                        let before = match previous.take() {
                            Some((id, body)) if id == r.id => Some(body),
                            _ => self.previous_body(rtype, &r)?,
                        };
                        let Some(before) = before else { continue };
                        if let Some(c) = &compartment {
                            if !c.holds(&r.id, &before) {
                                continue;
                            }
                        }
                        soft_deleted(&before, &r)?
                    }
                    None => {
                        if compartment.is_none() {
                            deleted.push(format!("{rtype}/{}", r.id));
                            if deleted.len() == DELETIONS_PER_BUNDLE {
                                deleted_files.write(&deletion_bundle(&deleted))?;
                                deleted.clear();
                            }
                        }
                        continue;
                    }
                };
                out.write(&line)?;
                self.running
                    .progress
                    .resources
                    .fetch_add(1, Ordering::Relaxed);
            }
            if !full {
                break;
            }
        }
        if !deleted.is_empty() {
            deleted_files.write(&deletion_bundle(&deleted))?;
        }
        self.files.output.extend(out.finish(rtype)?);
        self.files.deleted.extend(deleted_files.finish("Bundle")?);
        Ok(())
    }

    /// The body of the version before deletion `r` (for a deletion read without it).
    fn previous_body(
        &self,
        rtype: &str,
        r: &StoredResource,
    ) -> Result<Option<bytes::Bytes>, BulkError> {
        if r.version < 2 {
            return Ok(None);
        }
        let before =
            self.block(
                self.store
                    .vread(&self.job.service, rtype, &r.id, r.version - 1),
            )?;
        Ok(before.and_then(|b| b.body))
    }

    /// One NDJSON line of a stored body: the bytes as stored, unless `_elements` asks for a
    /// view or the stored JSON spans lines (a pretty-printed write), then re-serialised.
    fn line(&self, body: &[u8]) -> Result<Vec<u8>, BulkError> {
        match &self.job.export.elements {
            Some(elements) => {
                let v: Value = parse(body)?;
                let view = fhir_model::r4().select_elements(&v, elements);
                serde_json::to_vec(&view).map_err(|e| BulkError::Io(e.to_string()))
            }
            None if body.contains(&b'\n') || body.contains(&b'\r') => {
                let v: Value = parse(body)?;
                serde_json::to_vec(&v).map_err(|e| BulkError::Io(e.to_string()))
            }
            None => Ok(body.to_vec()),
        }
    }
}

fn parse(body: &[u8]) -> Result<Value, BulkError> {
    serde_json::from_slice(body)
        .map_err(|e| BulkError::Io(format!("a stored resource is not JSON: {e}")))
}

/// A deletion as Azure exported it with `includeAssociatedData=_deleted`: the version before
/// it, with the deletion's `versionId` and `lastUpdated` and the `deleted-state` extension.
fn soft_deleted(before: &[u8], deletion: &StoredResource) -> Result<Vec<u8>, BulkError> {
    let mut v = parse(before)?;
    if let Some(obj) = v.as_object_mut() {
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), deletion.version.to_string().into());
            meta.insert(
                "lastUpdated".into(),
                fhir_store::format_instant(&deletion.last_updated).into(),
            );
            let ext = meta
                .entry("extension")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = ext.as_array_mut() {
                list.push(json!({"url": DELETED_STATE, "valueString": "soft-deleted"}));
            }
        }
    }
    serde_json::to_vec(&v).map_err(|e| BulkError::Io(e.to_string()))
}

/// A transaction Bundle of DELETE entries (IG 2.0.0 §deleted).
fn deletion_bundle(urls: &[String]) -> Vec<u8> {
    let entries: Vec<Value> = urls
        .iter()
        .map(|u| json!({"request": {"method": "DELETE", "url": u}}))
        .collect();
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
        .unwrap_or_default()
}

/// Whether a resource of one type is in the Patient compartment of the patients concerned.
struct Compartment<'p> {
    rtype: String,
    /// Registry numbers of the type's compartment parameters (`subject`, `performer`, …).
    params: HashSet<u32>,
    patients: &'p Patients,
}

impl<'p> Compartment<'p> {
    fn new(rtype: &str, patients: &'p Patients) -> Compartment<'p> {
        let reg = fhir_search::registry();
        let params = fhir_search::compartment::params("Patient", rtype)
            .iter()
            .filter_map(|code| reg.get(rtype, code).map(|p| p.id))
            .collect();
        Compartment {
            rtype: rtype.to_owned(),
            params,
            patients,
        }
    }

    fn holds(&self, id: &str, body: &[u8]) -> bool {
        if self.rtype == "Patient" {
            return match self.patients {
                Patients::Any => true,
                Patients::Only(ids) => ids.contains(id),
            };
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        fhir_search::extract(&v).iter().any(|e| {
            self.params.contains(&e.param)
                && match &e.value {
                    fhir_search::IndexValue::Reference {
                        ttype: Some(t),
                        tid: Some(pid),
                        ..
                    } if t == "Patient" => match self.patients {
                        Patients::Any => true,
                        Patients::Only(ids) => ids.contains(pid),
                    },
                    _ => false,
                }
        })
    }
}

/// The files of one type: `Type-1.ndjson`, `Type-2.ndjson`, … each of at most `max` lines,
/// made when their first line comes.
struct Splitter {
    dir: PathBuf,
    stem: String,
    max: u64,
    current: Option<(BufWriter<File>, u64)>,
    done: Vec<(String, u64)>,
}

impl Splitter {
    fn new(dir: &Path, stem: &str, max: u64) -> Splitter {
        Splitter {
            dir: dir.to_path_buf(),
            stem: stem.to_owned(),
            max: max.max(1),
            current: None,
            done: Vec::new(),
        }
    }

    fn name(&self, n: usize) -> String {
        format!("{}-{n}.ndjson", self.stem)
    }

    fn write(&mut self, line: &[u8]) -> Result<(), BulkError> {
        if self.current.as_ref().is_some_and(|(_, n)| *n >= self.max) {
            self.close()?;
        }
        if self.current.is_none() {
            let name = self.name(self.done.len() + 1);
            let file = File::create(self.dir.join(&name)).map_err(|e| io(&name, e))?;
            self.current = Some((BufWriter::with_capacity(1 << 20, file), 0));
        }
        let (w, n) = self.current.as_mut().expect("a file is open");
        w.write_all(line)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|e| io(&self.stem, e))?;
        *n += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<(), BulkError> {
        if let Some((w, n)) = self.current.take() {
            let file = w.into_inner().map_err(|e| io(&self.stem, e.into_error()))?;
            file.sync_all().map_err(|e| io(&self.stem, e))?;
            let name = self.name(self.done.len() + 1);
            self.done.push((name, n));
        }
        Ok(())
    }

    fn finish(mut self, rtype: &str) -> Result<Vec<OutputFile>, BulkError> {
        self.close()?;
        Ok(self
            .done
            .into_iter()
            .map(|(file, count)| OutputFile {
                rtype: rtype.to_owned(),
                file,
                count,
            })
            .collect())
    }
}
