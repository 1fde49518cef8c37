//! Crash safety: a writer process killed with SIGKILL at an arbitrary moment leaves a store in
//! which every acknowledged commit is complete and no transaction is partly there.
//!
//! The test re-runs its own binary as the writer (the `crash_writer` test, which does nothing
//! unless `FHIRLINK_CRASH_DIR` is set), reads "committed N" lines from it, kills it, reopens
//! the store and checks it; several rounds, each continuing where the store left off.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fhir_store::{HistoryQuery, HistoryScope, Method, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::json;

/// Resources written by each transaction besides the counter.
const PER_TX: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_writer() {
    let Some(dir) = std::env::var_os("FHIRLINK_CRASH_DIR") else {
        return;
    };
    let store = SqliteStore::open(std::path::Path::new(&dir)).expect("open");
    store.create_service("s").await.expect("service");
    loop {
        let mut tx = store.begin("s").await.expect("begin");
        let count = match tx.current("Basic", "counter").await.expect("current") {
            Some(c) => {
                let body: serde_json::Value =
                    serde_json::from_slice(c.body.as_deref().expect("body")).expect("json");
                body["count"].as_u64().expect("count")
            }
            None => 0,
        };
        let n = count + 1;
        for i in 0..PER_TX {
            tx.put(
                "Basic",
                &format!("t{n}-{i}"),
                json!({"resourceType": "Basic", "tx": n, "padding": "x".repeat(200)}),
                Method::Post,
            )
            .await
            .expect("put");
        }
        tx.put(
            "Basic",
            "counter",
            json!({"resourceType": "Basic", "count": n}),
            Method::Put,
        )
        .await
        .expect("put");
        tx.commit().await.expect("commit");
        println!("committed {n}");
    }
}

#[tokio::test]
async fn sigkill_leaves_every_acknowledged_commit_and_no_partial_one() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let exe = std::env::current_exe().expect("test binary");
    let mut acknowledged = 0;
    for round in 0..6_u64 {
        let mut child = Command::new(&exe)
            .args(["crash_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env("FHIRLINK_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().expect("stdout");
        let (commits, committed) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            let mut last = 0;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("committed ") {
                    last = n.parse().expect("number");
                    let _ = commits.send(last);
                }
            }
            last
        });
        // Let it commit at least one transaction (however loaded the machine is), then kill it
        // a little later, somewhere in the middle of another.
        let first = committed
            .recv_timeout(Duration::from_secs(30))
            .expect("the writer commits within 30 s");
        assert!(
            first > acknowledged,
            "round {round}: the writer went backwards ({first} after {acknowledged})"
        );
        let wait = Duration::from_millis(20 + round * 37);
        let started = Instant::now();
        while started.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        let last = reader.join().expect("reader thread");
        assert!(last >= first, "round {round}: the writer went backwards");
        acknowledged = last;

        let store = SqliteStore::open(dir.path()).expect("reopen after SIGKILL");
        let count = match store.read("s", "Basic", "counter").await.expect("read") {
            Some(c) => {
                let body: serde_json::Value =
                    serde_json::from_slice(c.body.as_deref().expect("body")).expect("json");
                assert_eq!(c.version, body["count"].as_u64().expect("count"));
                body["count"].as_u64().expect("count")
            }
            None => 0,
        };
        assert!(
            count >= acknowledged,
            "round {round}: commit {acknowledged} was acknowledged but the store has {count}"
        );
        let query = HistoryQuery {
            since: None,
            at: None,
            count: 0,
            before: None,
        };
        let page = store
            .history("s", &HistoryScope::Type("Basic".into()), &query)
            .await
            .expect("history");
        assert_eq!(
            page.total,
            count * (PER_TX as u64 + 1),
            "round {round}: exactly the versions of {count} whole transactions"
        );
        // Transactions are numbered from 1: with nothing committed yet there is no t0.
        // Regression: the first write builds the search registry, so a short round may end
        // before the first commit.
        for n in [count, count + 1].into_iter().filter(|n| *n >= 1) {
            let present = store
                .read("s", "Basic", &format!("t{n}-{}", PER_TX - 1))
                .await
                .expect("read")
                .is_some();
            assert_eq!(
                present,
                n <= count,
                "round {round}: last resource of transaction {n}"
            );
        }
        drop(store);
    }
    assert!(
        acknowledged > 0,
        "the writer never committed; the test proved nothing"
    );
}
