//! The export engine on a real SQLite store: what the files hold, the snapshot, the
//! parameters that select, deletions, cancel, the job limit, a restart and expiry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fhir_bulk::{
    Bulk, BulkConfig, BulkError, ExportLevel, ExportParams, Job, JobState, KickOff, Status,
};
use fhir_store::{DocumentWrite, Expected, Method, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    bulk: Arc<Bulk>,
    out: std::path::PathBuf,
}

async fn fixture(config: impl FnOnce(&mut BulkConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("data")).expect("store"));
    store.create_service("default").await.expect("service");
    let out = dir.path().join("bulk");
    let mut c = BulkConfig::new(&out);
    c.min_poll_interval = Duration::ZERO;
    config(&mut c);
    let bulk = Bulk::new(store.clone(), c);
    bulk.start().await.expect("start");
    Fixture {
        _dir: dir,
        store,
        bulk,
        out,
    }
}

async fn put(store: &dyn Store, rtype: &str, id: &str, body: Value) {
    let mut tx = store.begin("default").await.expect("begin");
    tx.put(rtype, id, body, Method::Put).await.expect("put");
    tx.commit().await.expect("commit");
}

async fn delete(store: &dyn Store, rtype: &str, id: &str) {
    let mut tx = store.begin("default").await.expect("begin");
    tx.delete(rtype, id).await.expect("delete");
    tx.commit().await.expect("commit");
}

fn patient(id: &str, gender: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": gender, "name": [{"family": id}]})
}

fn observation(id: &str, subject: &str, status: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": status,
           "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
           "subject": {"reference": format!("Patient/{subject}")}})
}

fn who() -> KickOff {
    KickOff {
        service: "default".into(),
        base: "https://fhir.example/".into(),
        request: "https://fhir.example/$export".into(),
        owner: "alice".into(),
    }
}

fn params(level: ExportLevel, pairs: &[(&str, &str)]) -> ExportParams {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    ExportParams::from_query(level, &pairs, false).expect("valid parameters")
}

async fn finish(f: &Fixture, job: &Job) -> Value {
    assert!(f.bulk.idle(Duration::from_secs(30)).await, "the job ends");
    match f
        .bulk
        .status("default", &job.id, "https://fhir.example")
        .await
        .expect("status")
    {
        Status::Completed { manifest, .. } => manifest,
        other => panic!("not completed: {other:?}"),
    }
}

/// Every line of every output file of the manifest, by type: `(id, versionId)`.
async fn lines(
    f: &Fixture,
    job: &Job,
    manifest: &Value,
    list: &str,
) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in manifest[list].as_array().expect("a list") {
        let url = o["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!(
                "https://fhir.example/_operations/export/{}/",
                job.id
            )),
            "{url}"
        );
        let name = url.rsplit('/').next().unwrap();
        let (path, _) = f
            .bulk
            .file("default", &job.id, name)
            .await
            .expect("listed file");
        let text = std::fs::read_to_string(path).expect("file");
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON per line"))
            .collect();
        assert_eq!(
            parsed.len() as u64,
            o["count"].as_u64().unwrap(),
            "count of {name}"
        );
        out.entry(o["type"].as_str().unwrap().to_owned())
            .or_default()
            .extend(parsed);
    }
    out
}

fn ids(v: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = v
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_export_writes_every_type_as_of_its_snapshot() {
    let f = fixture(|c| c.max_resources_per_file = 2).await;
    for (id, g) in [("p1", "female"), ("p2", "male"), ("p3", "female")] {
        put(&*f.store, "Patient", id, patient(id, g)).await;
    }
    put(
        &*f.store,
        "Observation",
        "o1",
        observation("o1", "p1", "final"),
    )
    .await;
    // Stored bytes as written: the decimal and the key order survive.
    put(
        &*f.store,
        "Observation",
        "o2",
        serde_json::from_str(r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}"#).unwrap(),
    )
    .await;
    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
        .expect("kick-off");
    // Written after the kick-off: not in the export.
    put(&*f.store, "Patient", "p4", patient("p4", "male")).await;
    put(&*f.store, "Patient", "p1", patient("p1", "other")).await;
    let manifest = finish(&f, &job).await;
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["request"], "https://fhir.example/$export");
    assert_eq!(manifest["error"], json!([]));
    assert!(manifest.get("deleted").is_none());
    let files: Vec<&str> = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["url"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "Observation-1.ndjson",
            "Patient-1.ndjson",
            "Patient-2.ndjson"
        ]
    );
    let got = lines(&f, &job, &manifest, "output").await;
    assert_eq!(ids(&got["Patient"]), ["p1", "p2", "p3"]);
    let p1 = got["Patient"].iter().find(|p| p["id"] == "p1").unwrap();
    assert_eq!(p1["gender"], "female", "the version of the snapshot");
    let (path, _) = f
        .bulk
        .file("default", &job.id, "Observation-1.ndjson")
        .await
        .unwrap();
    let raw = std::fs::read_to_string(path).unwrap();
    assert!(raw.contains(r#""valueQuantity":{"value":1.50}"#), "{raw}");
    assert!(matches!(
        f.bulk
            .file("default", &job.id, "../../data/fhirlink.db")
            .await,
        Err(BulkError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_type_filters_and_elements_select() {
    let f = fixture(|_| {}).await;
    put(&*f.store, "Patient", "p1", patient("p1", "female")).await;
    put(&*f.store, "Patient", "p2", patient("p2", "male")).await;
    put(
        &*f.store,
        "Observation",
        "o1",
        observation("o1", "p1", "final"),
    )
    .await;
    put(
        &*f.store,
        "Observation",
        "o2",
        observation("o2", "p2", "preliminary"),
    )
    .await;
    let job = f
        .bulk
        .kick_off_export(
            who(),
            params(
                ExportLevel::System,
                &[
                    ("_type", "Observation,Patient"),
                    ("_typeFilter", "Observation?status=final"),
                    ("_elements", "gender"),
                ],
            ),
        )
        .await
        .unwrap();
    let manifest = finish(&f, &job).await;
    let got = lines(&f, &job, &manifest, "output").await;
    assert_eq!(ids(&got["Observation"]), ["o1"]);
    assert_eq!(ids(&got["Patient"]), ["p1", "p2"]);
    let p = &got["Patient"][0];
    assert!(
        p.get("name").is_none(),
        "_elements drops what it does not list"
    );
    assert_eq!(
        p["meta"]["tag"][0]["code"], "SUBSETTED",
        "and marks the view: {p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_and_group_exports_take_the_compartments() {
    let f = fixture(|_| {}).await;
    put(&*f.store, "Patient", "p1", patient("p1", "female")).await;
    put(&*f.store, "Patient", "p2", patient("p2", "male")).await;
    put(
        &*f.store,
        "Observation",
        "o1",
        observation("o1", "p1", "final"),
    )
    .await;
    put(
        &*f.store,
        "Observation",
        "o2",
        observation("o2", "p2", "final"),
    )
    .await;
    put(
        &*f.store,
        "Observation",
        "o3",
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "no subject"}}),
    )
    .await;
    put(
        &*f.store,
        "Organization",
        "org",
        json!({"resourceType": "Organization", "name": "x"}),
    )
    .await;
    put(
        &*f.store,
        "Group",
        "g",
        json!({"resourceType": "Group", "type": "person", "actual": true,
               "member": [{"entity": {"reference": "Patient/p2"}}]}),
    )
    .await;
    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::Patient, &[]))
        .await
        .unwrap();
    let got = lines(&f, &job, &finish(&f, &job).await, "output").await;
    assert_eq!(ids(&got["Patient"]), ["p1", "p2"]);
    assert_eq!(ids(&got["Observation"]), ["o1", "o2"]);
    assert!(!got.contains_key("Organization"), "not in the compartment");

    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::Group("g".into()), &[]))
        .await
        .unwrap();
    let got = lines(&f, &job, &finish(&f, &job).await, "output").await;
    assert_eq!(ids(&got["Patient"]), ["p2"]);
    assert_eq!(ids(&got["Observation"]), ["o2"]);
    assert!(matches!(
        f.bulk
            .kick_off_export(who(), params(ExportLevel::Group("nope".into()), &[]))
            .await,
        Err(BulkError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_lists_deletions_and_associated_data_marks_them() {
    let f = fixture(|_| {}).await;
    put(&*f.store, "Patient", "old", patient("old", "male")).await;
    put(&*f.store, "Patient", "gone", patient("gone", "male")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    put(&*f.store, "Patient", "new", patient("new", "female")).await;
    delete(&*f.store, "Patient", "gone").await;
    let since = fhir_store::format_instant(&since);

    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[("_since", &since)]))
        .await
        .unwrap();
    let manifest = finish(&f, &job).await;
    let got = lines(&f, &job, &manifest, "output").await;
    assert_eq!(ids(&got["Patient"]), ["new"]);
    let deleted = lines(&f, &job, &manifest, "deleted").await;
    assert_eq!(
        deleted["Bundle"][0]["entry"],
        json!([{"request": {"method": "DELETE", "url": "Patient/gone"}}])
    );

    let job = f
        .bulk
        .kick_off_export(
            who(),
            params(
                ExportLevel::System,
                &[("includeAssociatedData", "_history,_deleted")],
            ),
        )
        .await
        .unwrap();
    let manifest = finish(&f, &job).await;
    assert!(manifest.get("deleted").is_none());
    let got = lines(&f, &job, &manifest, "output").await;
    let versions: Vec<(String, String)> = got["Patient"]
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["meta"]["versionId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("gone".to_owned(), "1".to_owned()),
            ("gone".to_owned(), "2".to_owned()),
            ("new".to_owned(), "1".to_owned()),
            ("old".to_owned(), "1".to_owned())
        ]
    );
    let gone = &got["Patient"][1];
    assert_eq!(
        gone["meta"]["extension"][0],
        json!({"url": "http://azurehealthcareapis.com/data-extensions/deleted-state", "valueString": "soft-deleted"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_404_and_the_job_limit() {
    let f = fixture(|c| c.max_jobs_per_service = 1).await;
    for i in 0..3000 {
        put(&*f.store, "Patient", &format!("p{i}"), patient("x", "male")).await;
    }
    let first = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
        .unwrap();
    match f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
    {
        Err(BulkError::TooMany { running: 1, .. }) => {}
        other => panic!("a second job over the limit: {other:?}"),
    }
    f.bulk.cancel("default", &first.id).await.expect("cancel");
    assert!(matches!(
        f.bulk
            .status("default", &first.id, "https://fhir.example")
            .await,
        Err(BulkError::NotFound(_))
    ));
    assert!(f.bulk.idle(Duration::from_secs(30)).await);
    assert!(
        !fhir_bulk::job_folder(&f.out, "default", &first.id).exists(),
        "the files of a cancelled job are removed"
    );
    // Room again.
    let second = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[("_type", "Patient")]))
        .await
        .expect("a job after the cancel");
    let manifest = finish(&f, &second).await;
    assert_eq!(manifest["output"][0]["count"], 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_too_fast_is_refused() {
    let f = fixture(|c| c.min_poll_interval = Duration::from_secs(60)).await;
    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
        .unwrap();
    f.bulk
        .status("default", &job.id, "https://fhir.example")
        .await
        .expect("first poll");
    assert!(matches!(
        f.bulk
            .status("default", &job.id, "https://fhir.example")
            .await,
        Err(BulkError::PolledTooFast { .. })
    ));
}

/// A client polling faster than allowed is refused, but its refused polls do not start the
/// interval again: once the interval since its last answered poll has passed, it is answered
/// (found by scripts/bench-export, whose 50 ms polls were refused for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_polls_do_not_starve_a_fast_poller() {
    let f = fixture(|c| c.min_poll_interval = Duration::from_millis(300)).await;
    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
        .unwrap();
    let poll = || f.bulk.status("default", &job.id, "https://fhir.example");
    poll().await.expect("first poll");
    let started = std::time::Instant::now();
    let mut refused = 0;
    loop {
        match poll().await {
            Ok(_) => break,
            Err(BulkError::PolledTooFast { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a poll every 20 ms was never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused > 0, "the polls in between were refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_running_is_run_again_from_its_snapshot_or_failed() {
    let f = fixture(|_| {}).await;
    put(&*f.store, "Patient", "p1", patient("p1", "female")).await;
    let done = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
        .unwrap();
    finish(&f, &done).await;
    // A job a crashed process left running: its document says so, with half its files.
    let doc = f
        .store
        .get_document("bulk-jobs", &done.key())
        .await
        .unwrap()
        .unwrap();
    let mut job: Job = serde_json::from_value(doc.body).unwrap();
    job.state = JobState::Running;
    job.output.clear();
    job.finished = None;
    f.store
        .write_documents(vec![DocumentWrite::Put {
            collection: "bulk-jobs".into(),
            key: job.key(),
            body: serde_json::to_value(&job).unwrap(),
            expected: Expected::Any,
        }])
        .await
        .unwrap();
    let dir = fhir_bulk::job_folder(&f.out, "default", &job.id);
    std::fs::write(dir.join("Patient-1.ndjson"), b"{\"half").unwrap();
    // Written after the snapshot: a rerun does not see it.
    put(&*f.store, "Patient", "p2", patient("p2", "male")).await;

    let again = Bulk::new(f.store.clone(), f.bulk.config().clone());
    assert_eq!(again.start().await.unwrap(), 1, "one job taken up");
    assert!(again.idle(Duration::from_secs(30)).await);
    let manifest = match again
        .status("default", &job.id, "https://fhir.example")
        .await
        .unwrap()
    {
        Status::Completed { manifest, .. } => manifest,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        manifest["output"][0]["count"], 1,
        "the snapshot's one patient: {manifest}"
    );
    let text = std::fs::read_to_string(dir.join("Patient-1.ndjson")).unwrap();
    assert!(text.contains("\"p1\"") && !text.contains("half"), "{text}");

    // Interrupted too often: failed, not run again.
    let doc = f
        .store
        .get_document("bulk-jobs", &job.key())
        .await
        .unwrap()
        .unwrap();
    let mut job: Job = serde_json::from_value(doc.body).unwrap();
    job.state = JobState::Running;
    job.attempts = fhir_bulk::MAX_ATTEMPTS;
    f.store
        .write_documents(vec![DocumentWrite::Put {
            collection: "bulk-jobs".into(),
            key: job.key(),
            body: serde_json::to_value(&job).unwrap(),
            expected: Expected::Any,
        }])
        .await
        .unwrap();
    let third = Bulk::new(f.store.clone(), f.bulk.config().clone());
    assert_eq!(third.start().await.unwrap(), 0);
    assert!(matches!(
        third
            .status("default", &job.id, "https://fhir.example")
            .await
            .unwrap(),
        Status::Failed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_with_their_files() {
    let f = fixture(|c| c.retention = Duration::from_secs(3600)).await;
    put(&*f.store, "Patient", "p1", patient("p1", "female")).await;
    let job = f
        .bulk
        .kick_off_export(who(), params(ExportLevel::System, &[]))
        .await
        .unwrap();
    finish(&f, &job).await;
    assert_eq!(
        f.bulk.sweep(chrono::Utc::now()).await.unwrap(),
        0,
        "not yet"
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    assert_eq!(f.bulk.sweep(later).await.unwrap(), 1);
    assert!(matches!(
        f.bulk
            .status("default", &job.id, "https://fhir.example")
            .await,
        Err(BulkError::NotFound(_))
    ));
    assert!(!fhir_bulk::job_folder(&f.out, "default", &job.id).exists());
}
