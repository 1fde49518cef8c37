//! The real corpora, on each backend: every official R4 example that is valid round-trips
//! (created, read back, semantically equal), and every Synthea patient bundle loads as one
//! transaction. The examples are the npm package `hl7.fhir.r4.examples@4.0.1`
//! (scripts/fetch-test-data); the Synthea bundles are the five patients of `testdata/synthea`,
//! or with FHIRLINK_FULL_DATA (a shared/data folder) all 615 of the team's set.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::common::{backends, full_data, synthea_fixtures, test_data, Server};

const FHIR: (&str, &str) = ("content-type", "application/fhir+json");

/// Removes what the server adds (`meta.versionId`, `meta.lastUpdated`, and `meta` when that
/// leaves it empty) so that a read-back can be compared with what was sent.
fn without_server_meta(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            if meta.is_empty() {
                obj.remove("meta");
            }
        }
    }
    v
}

pub(crate) fn official_examples() -> Vec<(String, Value)> {
    let path = test_data("fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let Some(file) = name.strip_prefix("package/") else {
            continue;
        };
        if !file.ends_with(".json") || file.contains('/') || file.starts_with('.') {
            continue;
        }
        if file == "package.json" || file == "ig-r4.json" {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        out.push((file.to_string(), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn official_examples_round_trip() {
    let examples = official_examples();
    assert!(examples.len() > 5000, "{} examples", examples.len());
    for b in backends() {
        let s = Server::start(&b).await;
        let mut rejected: BTreeMap<String, String> = BTreeMap::new();
        let mut round_tripped = 0;
        for (file, resource) in &examples {
            let t = resource["resourceType"].as_str().unwrap();
            // Keep the example's own id where it has one, so references among examples hold.
            let (method, path) = match resource["id"].as_str() {
                Some(id) => ("PUT", format!("/{t}/{id}")),
                None => ("POST", format!("/{t}")),
            };
            let r = s.raw_json(method, &path, resource, &[]).await;
            let (status, v) = r.status_json();
            if status >= 300 {
                assert!(
                    status == 400 || status == 422,
                    "{}: {file}: a rejection is 400 or 422, not {status}: {v}",
                    b.name
                );
                let first = &v["issue"][0];
                rejected.insert(
                    file.clone(),
                    format!(
                        "{} at {}",
                        first["diagnostics"].as_str().unwrap_or("?"),
                        first["expression"][0].as_str().unwrap_or("?")
                    ),
                );
                continue;
            }
            let id = v["id"].as_str().unwrap();
            let back = s.raw_get(&format!("/{t}/{id}"), &[]).await.json();
            let mut sent = resource.clone();
            sent["id"] = Value::String(id.to_string());
            assert_eq!(
                without_server_meta(back),
                without_server_meta(sent),
                "{}: {file} reads back as sent",
                b.name
            );
            round_tripped += 1;
        }
        println!(
            "{}: {round_tripped} official examples round-tripped; {} rejected:",
            b.name,
            rejected.len()
        );
        for (file, why) in &rejected {
            println!("  {file}: {why}");
        }
        // Every rejection must be one the validator's own test justifies as a real R4
        // violation.
        let justified: std::collections::BTreeSet<&str> =
            KNOWN_INVALID.iter().map(|(file, _)| *file).collect();
        for file in rejected.keys() {
            assert!(
                justified.contains(file.as_str()),
                "{}: {file} was rejected ({}) but is not a known-invalid example",
                b.name,
                rejected[file]
            );
        }
        assert!(
            round_tripped + rejected.len() == examples.len(),
            "{}",
            b.name
        );
    }
}

// The examples the R4 package ships that break R4's own rules, each with its reason.
include!("../../../fhir-model/tests/known_invalid_examples.rs.in");

/// Calls `load` with each Synthea bundle (file name, JSON), one at a time (the full set is
/// 689 MB unpacked): the five patients of testdata/synthea, or with FHIRLINK_FULL_DATA every
/// bundle of its Synthea set. Returns how many patient bundles and resources the set has.
async fn for_each_synthea_bundle(mut load: impl AsyncFnMut(&str, Vec<u8>)) -> (usize, u64) {
    let Some(full) = full_data() else {
        let files = synthea_fixtures();
        for f in &files {
            let mut body = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())
                .read_to_end(&mut body)
                .unwrap();
            load(&f.file_name().unwrap().to_string_lossy(), body).await;
        }
        // Five patient bundles of 476 resources, and nothing else (testdata/README.md).
        assert_eq!(files.len(), 5);
        return (5, 476);
    };
    let path = full.join("synthea-r4/smart-generated-sample-data-r4-synthea.tar.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        load(&name, body).await;
    }
    // Besides the 615 patients the set has one hospital and one practitioner bundle; 191,093
    // resources in all (shared/data/README.md).
    (615, 191_093)
}

#[tokio::test]
async fn every_synthea_bundle_loads_as_one_transaction() {
    for b in backends() {
        let s = Server::start(&b).await;
        let (mut bundles, mut resources) = (0, 0u64);
        let (patients, total) = for_each_synthea_bundle(async |name: &str, body: Vec<u8>| {
            let sent: Value = serde_json::from_slice(&body).unwrap();
            let n = sent["entry"].as_array().unwrap().len();
            let (status, v) = s.raw("POST", "/", &[FHIR], body).await.status_json();
            assert_eq!(status, 200, "{}: {name}: {v}", b.name);
            let entries = v["entry"].as_array().unwrap();
            assert_eq!(entries.len(), n, "{}: {name}", b.name);
            assert!(entries
                .iter()
                .all(|e| e["response"]["status"] == "201 Created"));
            if !name.contains("Information") {
                bundles += 1;
            }
            resources += n as u64;
        })
        .await;
        assert_eq!(bundles, patients, "{}: patient bundles", b.name);
        assert_eq!(resources, total, "{}: resources in the bundles", b.name);
        let h = s.raw_get("/_history?_count=0", &[]).await.json();
        assert_eq!(h["total"].as_u64(), Some(resources), "{}", b.name);
    }
}
