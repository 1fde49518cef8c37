//! The store's share of the Synthea ingest, without HTTP: each patient's transaction Bundle
//! becomes one store transaction (fullUrls replaced by new ids, references rewritten, every
//! resource put with its search index), run by several concurrent tasks like the HTTP
//! benchmark's clients. Prints the rate and where the time went; asserts nothing.
//!
//! `cargo run --release -p fhir-store-sqlite --example ingest -- DIR [PATIENTS] [TASKS]`
//! where DIR holds the unpacked `R4-SYNTHEA/*.json` bundles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fhir_store::{Method, Prepared, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::Value;

/// Nanoseconds spent in each phase, summed over all transactions.
#[derive(Default)]
struct Phases {
    prepare: AtomicU64,
    /// The part of `prepare` spent extracting search index entries.
    extract: AtomicU64,
    wait: AtomicU64,
    write: AtomicU64,
    commit: AtomicU64,
}

fn add(a: &AtomicU64, since: Instant) {
    let n = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    a.fetch_add(n, Ordering::Relaxed);
}

fn rewrite(v: &mut Value, ids: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("reference") {
                if let Some(t) = ids.get(r.as_str()) {
                    *r = t.clone();
                }
            }
            m.values_mut().for_each(|c| rewrite(c, ids));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite(c, ids)),
        _ => {}
    }
}

/// An id in the shape of a version-7 UUID, as the server assigns them (`RANDOM_IDS=1`: of a
/// version-4 one, to see what time order saves).
fn random_id() -> String {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    let next = || {
        STATE.with(|s| {
            // xorshift64*
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
    };
    let (mut a, b) = (next(), next());
    if std::env::var_os("RANDOM_IDS").is_none() {
        // Version-7 style, as the server assigns them: milliseconds since the epoch first.
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        a = (ms << 16) | (a & 0xffff);
    }
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// (type, id, resource) of every entry, with references between entries resolved and the
/// search index extracted, as the server does before it takes the writer.
fn prepare(bundle: &[u8], phases: &Phases) -> Vec<(String, String, Prepared)> {
    let mut doc: Value = serde_json::from_slice(bundle).expect("bundle JSON");
    let entries = doc["entry"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut ids = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for mut e in entries {
        let mut r = e["resource"].take();
        let rtype = r["resourceType"].as_str().unwrap_or_default().to_string();
        let id = random_id();
        if let Some(full) = e["fullUrl"].as_str() {
            ids.insert(full.to_string(), format!("{rtype}/{id}"));
        }
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
        }
        out.push((rtype, id, r));
    }
    for (_, _, r) in &mut out {
        rewrite(r, &ids);
    }
    let t = Instant::now();
    let prepared = out
        .into_iter()
        .map(|(t, id, r)| {
            let p = Prepared::new(&id, r);
            (t, id, p)
        })
        .collect();
    add(&phases.extract, t);
    prepared
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: ingest DIR [PATIENTS] [TASKS]"));
    let patients: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(615);
    let tasks: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("bundle folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.to_string_lossy().contains("Information")
        })
        .collect();
    files.sort();
    files.truncate(patients);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(files, tasks));
}

async fn run(files: Vec<PathBuf>, tasks: usize) {
    let data = tempfile::tempdir().expect("temporary folder");
    let store = Arc::new(SqliteStore::open(data.path()).expect("open"));
    store.create_service("bench").await.expect("service");
    let phases = Arc::new(Phases::default());
    let queue = Arc::new(std::sync::Mutex::new(files));
    let resources = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, phases, queue, resources) = (
            store.clone(),
            phases.clone(),
            queue.clone(),
            resources.clone(),
        );
        handles.push(tokio::spawn(async move {
            loop {
                let Some(file) = queue.lock().expect("queue").pop() else {
                    return;
                };
                let bytes = std::fs::read(&file).expect("bundle file");
                let t = Instant::now();
                let entries = prepare(&bytes, &phases);
                add(&phases.prepare, t);
                let t = Instant::now();
                let mut tx = store.begin("bench").await.expect("begin");
                add(&phases.wait, t);
                let t = Instant::now();
                let n = entries.len();
                for (rtype, id, r) in entries {
                    tx.put_prepared(&rtype, &id, r, Method::Post)
                        .await
                        .expect("put");
                }
                add(&phases.write, t);
                let t = Instant::now();
                tx.commit().await.expect("commit");
                add(&phases.commit, t);
                resources.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let secs = started.elapsed().as_secs_f64();
    let n = resources.load(Ordering::Relaxed);
    let ms = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
    let size: u64 = std::fs::read_dir(data.path())
        .expect("data folder")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{n} resources in {secs:.1} s: {:.0} resources/s; database {} MB",
        n as f64 / secs,
        size / 1_000_000
    );
    println!(
        "summed over tasks (ms): prepare {:.0} (extraction {:.0}), waiting for the writer {:.0}, \
         puts {:.0}, commit {:.0}",
        ms(&phases.prepare),
        ms(&phases.extract),
        ms(&phases.wait),
        ms(&phases.write),
        ms(&phases.commit)
    );
    // What the process wrote (Linux): WAL frames and checkpoints dominate.
    if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
        let field = |k: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        println!(
            "written: {} MB by write calls, {} MB to the device",
            field("wchar:") / 1_000_000,
            field("write_bytes:") / 1_000_000
        );
    }
}
