//! The import engine on a real SQLite store: broken lines reported by number while the good
//! ones land, IncrementalLoad keeping versions, instants, history and soft deletes, a run
//! again writing nothing twice, InitialLoad refusing what exists, the folder rule, cancel,
//! and a job taken up again after a restart from where its document says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fhir_bulk::{Bulk, BulkConfig, BulkError, ImportJob, ImportParams, ImportStatus, KickOff};
use fhir_store::{DocumentWrite, Expected, HistoryQuery, HistoryScope, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::{json, Value};

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    bulk: Arc<Bulk>,
}

impl Fixture {
    fn inbox(&self) -> PathBuf {
        self.dir.path().join("inbox")
    }
}

fn config(dir: &Path, chunk: usize) -> BulkConfig {
    let mut c = BulkConfig::new(dir.join("bulk"));
    c.min_poll_interval = Duration::ZERO;
    c.import_dirs = vec![dir.join("inbox")];
    c.import_chunk_lines = chunk;
    c
}

async fn fixture(chunk: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("inbox")).expect("inbox");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("data")).expect("store"));
    store.create_service("default").await.expect("service");
    let bulk = Bulk::new(store.clone(), config(dir.path(), chunk));
    bulk.start().await.expect("start");
    Fixture { dir, store, bulk }
}

fn who() -> KickOff {
    KickOff {
        service: "default".into(),
        base: "https://fhir.example/".into(),
        request: "https://fhir.example/$import".into(),
        owner: "importer".into(),
    }
}

fn write_file(f: &Fixture, name: &str, lines: &[String]) -> String {
    let path = f.inbox().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    format!("file://{}", path.display())
}

fn body(mode: Option<&str>, inputs: &[(&str, &str)]) -> Value {
    let mut parameter =
        vec![json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"})];
    if let Some(m) = mode {
        parameter.push(json!({"name": "mode", "valueString": m}));
    }
    for (t, url) in inputs {
        parameter.push(json!({"name": "input", "part": [
            {"name": "type", "valueString": t},
            {"name": "url", "valueUri": url}
        ]}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

fn params(f: &Fixture, body: &Value) -> ImportParams {
    ImportParams::from_parameters(body, false, &[f.inbox()], &[]).expect("valid parameters")
}

async fn finish(f: &Fixture, job: &ImportJob) -> (Value, bool) {
    assert!(
        f.bulk.idle(Duration::from_secs(30)).await,
        "the import ends"
    );
    match f
        .bulk
        .import_status("default", &job.id, "https://fhir.example")
        .await
        .expect("status")
    {
        ImportStatus::Completed { manifest, .. } => (manifest, true),
        ImportStatus::Failed { manifest, message } => {
            (json!({"failed": message, "manifest": manifest}), false)
        }
        ImportStatus::InProgress { progress } => panic!("still running: {progress}"),
    }
}

fn patient(id: &str, family: &str) -> String {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]}).to_string()
}

fn versioned(id: &str, family: &str, version: u64, instant: &str) -> String {
    json!({"resourceType": "Patient", "id": id,
           "meta": {"versionId": version.to_string(), "lastUpdated": instant},
           "name": [{"family": family}]})
    .to_string()
}

fn error_lines(f: &Fixture, job: &ImportJob, i: usize) -> Vec<Value> {
    let path = fhir_bulk::import::job_error_file(&f.dir.path().join("bulk"), "default", &job.id, i);
    std::fs::read_to_string(path)
        .expect("error file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an OperationOutcome line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_lines_are_reported_by_number_and_the_good_ones_land() {
    // Small chunks, so good and bad lines are spread over several transactions.
    let f = fixture(3).await;
    let lines = vec![
        patient("p1", "One"),
        "{not json".to_owned(),
        patient("p2", "Two"),
        String::new(),
        json!({"resourceType": "Patient", "id": "p3", "gender": "sometimes"}).to_string(),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"text": "x"}})
        .to_string(),
        json!({"resourceType": "Patient", "id": "bad id!"}).to_string(),
        json!({"resourceType": "NotAType", "id": "x"}).to_string(),
        patient("p4", "Four"),
    ];
    let url = write_file(&f, "Patient.ndjson", &lines);
    let job = f
        .bulk
        .kick_off_import(who(), params(&f, &body(None, &[("Patient", &url)])))
        .await
        .expect("kick-off");
    let (manifest, ok) = finish(&f, &job).await;
    assert!(ok, "{manifest}");
    assert_eq!(
        manifest["output"],
        json!([{"type": "Patient", "count": 3, "inputUrl": url}])
    );
    assert_eq!(manifest["error"][0]["count"], 5, "{manifest}");
    assert_eq!(
        manifest["error"][0]["url"],
        format!(
            "https://fhir.example/_operations/import/{}/Errors-1.ndjson",
            job.id
        )
    );
    for id in ["p1", "p2", "p4"] {
        let r = f.store.read("default", "Patient", id).await.expect("read");
        assert!(r.is_some_and(|r| !r.is_deleted()), "Patient/{id} landed");
    }
    assert!(f
        .store
        .read("default", "Patient", "p3")
        .await
        .expect("read")
        .is_none());
    let errors = error_lines(&f, &job, 0);
    let said: Vec<String> = errors
        .iter()
        .map(|e| {
            e["issue"][0]["diagnostics"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let lines_named: Vec<&str> = ["line 2 ", "line 5 ", "line 6 ", "line 7 ", "line 8 "].to_vec();
    assert_eq!(said.len(), 5, "{said:?}");
    for (s, want) in said.iter().zip(lines_named) {
        assert!(s.starts_with(want), "{s:?} names {want:?}");
        assert!(s.contains(&url), "{s:?} names the file");
    }
    assert!(said[2].contains("Observation"), "{}", said[2]);
    assert_eq!(
        errors[1]["issue"][0]["expression"][0], "Patient.gender",
        "a validation issue keeps its element path"
    );
    // The error file is listed and served.
    f.bulk
        .import_file("default", &job.id, "Errors-1.ndjson")
        .await
        .expect("the error file");
    assert!(matches!(
        f.bulk.import_file("default", &job.id, "../x").await,
        Err(BulkError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_load_keeps_versions_instants_history_and_soft_deletes() {
    let f = fixture(2).await;
    let soft = json!({"resourceType": "Patient", "id": "gone",
        "meta": {"versionId": "2", "lastUpdated": "2021-06-01T00:00:00Z",
                 "extension": [{"url": fhir_bulk::import::DELETED_STATE, "valueString": "soft-deleted"}]},
        "name": [{"family": "Gone"}]})
    .to_string();
    let lines = vec![
        versioned("a", "First", 1, "2021-01-01T10:00:00Z"),
        versioned("a", "Second", 2, "2021-02-01T10:00:00.5+01:00"),
        versioned("a", "Fifth", 5, "2021-05-01T10:00:00Z"),
        versioned("gone", "Gone", 1, "2021-01-15T00:00:00Z"),
        soft,
        patient("plain", "NoMeta"),
    ];
    let url = write_file(&f, "history.ndjson", &lines);
    let p = params(&f, &body(Some("IncrementalLoad"), &[("Patient", &url)]));
    let job = f
        .bulk
        .kick_off_import(who(), p.clone())
        .await
        .expect("kick-off");
    let (manifest, ok) = finish(&f, &job).await;
    assert!(ok, "{manifest}");
    assert_eq!(manifest["output"][0]["count"], 6, "{manifest}");
    assert_eq!(manifest["error"], json!([]));

    let a = f
        .store
        .read("default", "Patient", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.version, 5);
    let body: Value = serde_json::from_slice(a.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["meta"]["versionId"], "5");
    assert_eq!(body["meta"]["lastUpdated"], "2021-05-01T10:00:00.000000Z");
    let hist = f
        .store
        .history(
            "default",
            &HistoryScope::Instance("Patient".into(), "a".into()),
            &HistoryQuery {
                since: None,
                at: None,
                count: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    let versions: Vec<u64> = hist.entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![5, 2, 1], "the history as imported");
    assert_eq!(
        fhir_store::format_instant(&hist.entries[1].last_updated),
        "2021-02-01T09:00:00.500000Z",
        "an offset instant is kept as the same instant in UTC"
    );
    let gone = f
        .store
        .read("default", "Patient", "gone")
        .await
        .unwrap()
        .unwrap();
    assert!(
        gone.is_deleted() && gone.version == 2,
        "the soft delete is a deletion at version 2"
    );
    let plain = f
        .store
        .read("default", "Patient", "plain")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.version, 1, "a line without meta is a first version");

    // The same file again: every versioned line is already stored; the plain one is a new
    // version (it carries none to compare).
    let again = f
        .bulk
        .kick_off_import(who(), p)
        .await
        .expect("kick-off again");
    let (manifest, ok) = finish(&f, &again).await;
    assert!(ok, "{manifest}");
    assert_eq!(manifest["extension"]["skipped"], 5, "{manifest}");
    assert_eq!(manifest["output"][0]["count"], 1, "{manifest}");
    let a = f
        .store
        .read("default", "Patient", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.version, 5, "nothing written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_only_creates() {
    let f = fixture(100).await;
    let first = write_file(&f, "one.ndjson", &[patient("x", "X"), patient("y", "Y")]);
    let job = f
        .bulk
        .kick_off_import(
            who(),
            params(&f, &body(Some("InitialLoad"), &[("Patient", &first)])),
        )
        .await
        .unwrap();
    let (manifest, ok) = finish(&f, &job).await;
    assert!(ok && manifest["output"][0]["count"] == 2, "{manifest}");
    let second = write_file(
        &f,
        "two.ndjson",
        &[patient("x", "Again"), patient("z", "Z")],
    );
    let job = f
        .bulk
        .kick_off_import(
            who(),
            params(&f, &body(Some("InitialLoad"), &[("Patient", &second)])),
        )
        .await
        .unwrap();
    let (manifest, ok) = finish(&f, &job).await;
    assert!(ok, "{manifest}");
    assert_eq!(manifest["output"][0]["count"], 1, "{manifest}");
    assert_eq!(manifest["error"][0]["count"], 1, "{manifest}");
    let errors = error_lines(&f, &job, 0);
    let said = errors[0]["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        said.starts_with("line 1 ") && said.contains("InitialLoad only creates"),
        "{said}"
    );
    let x = f
        .store
        .read("default", "Patient", "x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.version, 1, "the existing resource is untouched");
}

#[tokio::test]
async fn inputs_must_be_files_under_the_import_folder() {
    let f = fixture(10).await;
    let outside = f.dir.path().join("outside.ndjson");
    std::fs::write(&outside, patient("x", "X")).unwrap();
    let inside = write_file(&f, "ok.ndjson", &[patient("x", "X")]);
    std::os::unix::fs::symlink(&outside, f.inbox().join("link.ndjson")).unwrap();
    let dirs = [f.inbox()];
    let refused = |url: String| {
        let e = ImportParams::from_parameters(&body(None, &[("Patient", &url)]), false, &dirs, &[])
            .expect_err(&url);
        assert_eq!(
            e.param(),
            Some("Parameters.parameter[1].part[1]"),
            "{url}: {e}"
        );
        e.to_string()
    };
    assert!(refused(format!("file://{}", outside.display())).contains("not under an import folder"));
    assert!(
        refused(format!("file://{}/../outside.ndjson", f.inbox().display()))
            .contains("not under an import folder")
    );
    assert!(
        refused(format!("file://{}/link.ndjson", f.inbox().display()))
            .contains("not under an import folder")
    );
    assert!(
        refused(format!("file://{}/missing.ndjson", f.inbox().display()))
            .contains("cannot be opened")
    );
    assert!(refused("https://storage.example/x.ndjson".into()).contains("--import-url"));
    assert!(refused("http://storage.example/x.ndjson".into()).contains("https: URLs"));
    assert!(refused("relative.ndjson".into()).contains("not a file: URL"));
    // The body's other rules.
    let no_format = json!({"resourceType": "Parameters", "parameter": [
        {"name": "input", "part": [{"name": "url", "valueString": inside}]}]});
    assert!(ImportParams::from_parameters(&no_format, false, &dirs, &[])
        .unwrap_err()
        .to_string()
        .contains("inputFormat is required"));
    let mut unknown = body(None, &[("Patient", &inside)]);
    unknown["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "frobnicate", "valueString": "yes"}));
    assert!(ImportParams::from_parameters(&unknown, false, &dirs, &[]).is_err());
    assert!(
        ImportParams::from_parameters(&unknown, true, &dirs, &[]).is_ok(),
        "lenient"
    );
    let mut bad_mode = body(Some("Sometimes"), &[("Patient", &inside)]);
    bad_mode["parameter"][1]["valueString"] = json!("Sometimes");
    assert!(ImportParams::from_parameters(&bad_mode, false, &dirs, &[]).is_err());
    // A server with no import folder takes no files at all.
    assert!(
        ImportParams::from_parameters(&body(None, &[("Patient", &inside)]), false, &[], &[])
            .unwrap_err()
            .to_string()
            .contains("--import-dir")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_taken_up_after_a_restart_goes_on_from_its_progress() {
    let f = fixture(2).await;
    let lines: Vec<String> = (0..10)
        .map(|i| versioned(&format!("r{i}"), "R", 1, "2022-01-01T00:00:00Z"))
        .collect();
    let url = write_file(&f, "many.ndjson", &lines);
    // A job document as a killed server left it: running, its first 4 lines recorded as
    // done, and only those 4 resources in the store.
    let first_four = write_file(&f, "first.ndjson", &lines[..4]);
    let pre = f
        .bulk
        .kick_off_import(who(), params(&f, &body(None, &[("Patient", &first_four)])))
        .await
        .unwrap();
    finish(&f, &pre).await;
    let mut job = f
        .bulk
        .kick_off_import(who(), params(&f, &body(None, &[("Patient", &url)])))
        .await
        .unwrap();
    finish(&f, &job).await;
    // Rewrite it as interrupted after line 4 (byte offset of line 5), with a stale tail in
    // its error file, and start a new engine on the same store.
    let offset: usize = lines[..4].iter().map(|l| l.len() + 1).sum();
    job.state = fhir_bulk::JobState::Running;
    job.finished = None;
    job.attempts = 1;
    job.progress[0] = fhir_bulk::import::InputProgress {
        bytes: offset as u64,
        lines: 4,
        counts: [("Patient".to_owned(), 4)].into_iter().collect(),
        ..Default::default()
    };
    f.store
        .write_documents(vec![DocumentWrite::Put {
            collection: fhir_bulk::import::COLLECTION.into(),
            key: job.key(),
            body: serde_json::to_value(&job).unwrap(),
            expected: Expected::Any,
        }])
        .await
        .unwrap();
    let restarted = Bulk::new(f.store.clone(), config(f.dir.path(), 2));
    restarted.start().await.expect("start");
    assert!(restarted.idle(Duration::from_secs(30)).await);
    let ImportStatus::Completed { manifest, .. } = restarted
        .import_status("default", &job.id, "https://fhir.example")
        .await
        .unwrap()
    else {
        panic!("the import completed after the restart");
    };
    // 4 counted before the restart; lines 5-10 were already stored by the first run, so
    // they are skipped, not written twice.
    assert_eq!(manifest["output"][0]["count"], 4, "{manifest}");
    assert_eq!(manifest["extension"]["skipped"], 6, "{manifest}");
    for i in 0..10 {
        let r = f
            .store
            .read("default", "Patient", &format!("r{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.version, 1);
    }
    let doc = f
        .store
        .get_document(fhir_bulk::import::COLLECTION, &job.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        doc.body["attempts"], 2,
        "the restart is counted as an attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_import_answers_404_and_the_job_limit_holds() {
    let f = fixture(1).await;
    let lines: Vec<String> = (0..2000).map(|i| patient(&format!("c{i}"), "C")).collect();
    let url = write_file(&f, "big.ndjson", &lines);
    let p = params(&f, &body(None, &[("Patient", &url)]));
    let one = f.bulk.kick_off_import(who(), p.clone()).await.unwrap();
    let two = f.bulk.kick_off_import(who(), p.clone()).await.unwrap();
    let third = f.bulk.kick_off_import(who(), p).await;
    assert!(matches!(third, Err(BulkError::TooMany { .. })), "{third:?}");
    f.bulk
        .cancel_import("default", &one.id)
        .await
        .expect("cancel");
    f.bulk
        .cancel_import("default", &two.id)
        .await
        .expect("cancel");
    assert!(matches!(
        f.bulk.import_status("default", &one.id, "https://x").await,
        Err(BulkError::NotFound(_))
    ));
    assert!(f.bulk.idle(Duration::from_secs(30)).await);
}

/// SMART's ten-patient bulk set (testdata/bulk-ndjson-10-patients, 13 files as a Bulk Data
/// client wrote them) imports unchanged: every line lands, none is an error, and the counts
/// per type are the files' line counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ten_patient_bulk_set_imports_unchanged() {
    use std::io::Read;
    let f = fixture(1000).await;
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/bulk-ndjson-10-patients");
    let mut inputs = Vec::new();
    let mut expected = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&set).expect("the vendored set") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".ndjson.gz") else {
            continue;
        };
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let rtype = stem.split('.').next().unwrap().to_owned();
        expected.insert(
            rtype.clone(),
            text.lines().filter(|l| !l.trim().is_empty()).count() as u64,
        );
        let target = f.inbox().join(format!("{stem}.ndjson"));
        std::fs::write(&target, text).unwrap();
        inputs.push((rtype, format!("file://{}", target.display())));
    }
    assert_eq!(expected.len(), 13, "{expected:?}");
    let pairs: Vec<(&str, &str)> = inputs
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    let job = f
        .bulk
        .kick_off_import(who(), params(&f, &body(None, &pairs)))
        .await
        .unwrap();
    let (manifest, ok) = finish(&f, &job).await;
    assert!(ok, "{manifest}");
    assert_eq!(
        manifest["error"],
        json!([]),
        "no line is refused: {manifest}"
    );
    let mut got = std::collections::BTreeMap::new();
    for o in manifest["output"].as_array().unwrap() {
        *got.entry(o["type"].as_str().unwrap().to_owned())
            .or_insert(0) += o["count"].as_u64().unwrap();
    }
    assert_eq!(got, expected);
    assert_eq!(expected.values().sum::<u64>(), 7160);
    // Searchable as written: every Encounter of one patient by its reference.
    let patient = f
        .store
        .search(
            "default",
            &fhir_search::parse(
                Some("Patient"),
                &[("_count".into(), "1".into())],
                &Default::default(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let pid = &patient.matches[0].id;
    let q = fhir_search::parse(
        Some("Encounter"),
        &[("subject".into(), format!("Patient/{pid}"))],
        &Default::default(),
    )
    .unwrap();
    let encounters = f.store.search("default", &q).await.unwrap();
    // (No total by default for a page that does not hold every match: R4 search.html#total.)
    assert!(
        !encounters.matches.is_empty(),
        "Patient/{pid} has encounters"
    );
}
