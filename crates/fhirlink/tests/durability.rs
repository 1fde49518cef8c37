//! Crash safety: SIGKILL while transactions are being written, restart, and find every
//! acknowledged transaction complete and no partial one.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{json, Server};
use serde_json::{json, Value};

const PER_TX: usize = 20;

fn transaction(tag: &str) -> Value {
    let entries: Vec<Value> = (0..PER_TX)
        .map(|i| {
            json!({
                "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:test:tx", "value": tag}],
                    "name": [{"family": format!("Member{i}")}]
                },
                "request": {"method": "POST", "url": "Patient"}
            })
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Every Patient in the service, grouped by the transaction tag it carries.
fn members_by_tag(s: &Server) -> HashMap<String, usize> {
    let mut by_tag = HashMap::new();
    let mut url = s.url("Patient/_history?_count=1000");
    loop {
        let page = json(reqwest::blocking::get(&url).unwrap());
        for e in page["entry"].as_array().into_iter().flatten() {
            let tag = e["resource"]["identifier"][0]["value"]
                .as_str()
                .unwrap()
                .to_string();
            *by_tag.entry(tag).or_insert(0) += 1;
        }
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => return by_tag,
        }
    }
}

#[test]
fn sigkill_during_transactions_loses_no_acknowledged_write_and_leaves_no_partial_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start_in(&data, &[]);
    let acked: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for w in 0..4 {
            let (s, acked, stop) = (&s, &acked, &stop);
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let tag = format!("w{w}-{k}");
                    k += 1;
                    let r = client
                        .post(s.url(""))
                        .header("content-type", "application/fhir+json")
                        .body(transaction(&tag).to_string())
                        .send();
                    // A connection cut by the kill is not an acknowledgement.
                    if let Ok(r) = r {
                        if r.status() == 200 && r.bytes().is_ok() {
                            acked.lock().unwrap().push(tag);
                        }
                    }
                }
            });
        }
        // Let writes pile up, then kill the server in the middle of them.
        std::thread::sleep(Duration::from_millis(1500));
        // SIGKILL the server while the writers are still sending.
        let killed = std::process::Command::new("kill")
            .args(["-9", &s.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    drop(s);
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() >= 4,
        "the writers got acknowledgements before the kill"
    );

    let s = Server::start_in(&data, &[]);
    let found = members_by_tag(&s);
    for tag in &acked {
        assert_eq!(
            found.get(tag).copied(),
            Some(PER_TX),
            "acknowledged transaction {tag} is complete"
        );
    }
    for (tag, n) in &found {
        assert_eq!(*n, PER_TX, "transaction {tag} is whole, never partial");
    }
    // The store still takes writes after the crash.
    s.create(&json!({"resourceType": "Patient"}));
}
