//! Faults at the store's boundary (issue #15): a database file that is not fhirlink's is
//! refused at open and left as it was, and a full disk fails writes with
//! [`StoreError::StorageFull`], loses nothing acknowledged, and passes by itself once space
//! is freed.

use std::path::{Path, PathBuf};
use std::process::Command;

use fhir_store::{Method, Store, StoreError};
use fhir_store_sqlite::{SqliteStore, DATABASE_FILE};
use serde_json::json;

fn refusal(dir: &Path) -> String {
    match SqliteStore::open(dir) {
        Ok(_) => panic!("{} was opened", dir.display()),
        Err(StoreError::Backend(m)) => m,
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

fn application_id(path: &Path) -> i32 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA application_id", [], |r| r.get(0))
        .expect("application_id")
}

#[test]
fn regression_15_faults_garbage_bytes_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DATABASE_FILE);
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write");
    let m = refusal(dir.path());
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("not a SQLite database"), "{m}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "file unchanged"
    );
}

#[test]
fn regression_15_faults_a_damaged_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path()).expect("create"));
    let path = dir.path().join(DATABASE_FILE);
    // Keep SQLite's header, overwrite the rest of page 1 (the schema) with noise.
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() >= 4096, "a checkpointed database");
    for (i, b) in bytes[100..4096].iter_mut().enumerate() {
        *b = ((i as u32).wrapping_mul(2_654_435_761) >> 7) as u8;
    }
    std::fs::write(&path, &bytes).expect("write");
    let m = refusal(dir.path());
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("damaged"), "{m}");
}

#[test]
fn regression_15_faults_a_foreign_sqlite_database_is_refused_and_left_alone() {
    for setup in [
        // Another application's tables, no application id.
        "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT); \
         INSERT INTO moz_places (url) VALUES ('https://example.org');",
        // Even with fhirlink-looking tables: another application's id.
        "CREATE TABLE services (sid INTEGER PRIMARY KEY, name TEXT); \
         CREATE TABLE versions (seq INTEGER PRIMARY KEY); \
         CREATE TABLE resources (sid INTEGER); \
         PRAGMA application_id = 1179012168; PRAGMA user_version = 3;",
        // A schema version fhirlink never had, with one unrelated table.
        "CREATE TABLE t (x); PRAGMA user_version = 7;",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DATABASE_FILE);
        {
            let conn = rusqlite::Connection::open(&path).expect("create");
            conn.execute_batch(setup).expect("setup");
        }
        let before = std::fs::read(&path).expect("read");
        let m = refusal(dir.path());
        assert!(m.contains(&path.display().to_string()), "{m}");
        assert!(m.contains("is not a fhirlink database"), "{m}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "{setup}: file unchanged"
        );
        assert!(
            !dir.path().join(format!("{DATABASE_FILE}-wal")).exists(),
            "not switched to WAL"
        );
    }
}

#[tokio::test]
async fn a_new_database_is_stamped_and_one_from_before_the_stamp_still_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DATABASE_FILE);
    {
        let store = SqliteStore::open(dir.path()).expect("create");
        store.create_service("a").await.expect("service");
        let mut tx = store.begin("a").await.expect("begin");
        tx.put(
            "Patient",
            "p1",
            json!({"resourceType": "Patient"}),
            Method::Put,
        )
        .await
        .expect("put");
        tx.commit().await.expect("commit");
    }
    assert_eq!(application_id(&path), 0x4648_4C4B, "FHLK");
    // As a database made before fhirlink stamped its files.
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA application_id = 0")
            .expect("unstamp");
    }
    assert_eq!(application_id(&path), 0);
    let store = SqliteStore::open(dir.path()).expect("an older fhirlink database opens");
    let p1 = store.read("a", "Patient", "p1").await.expect("read");
    assert!(p1.is_some(), "its data is there");
    drop(store);
    assert_eq!(application_id(&path), 0x4648_4C4B, "stamped at open");
}

/// A small tmpfs, unmounted when dropped. Mounting needs root, which the suite runs as (CI
/// too): the test fails, never skips, without it.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the disk-full tests mount a tmpfs and must run as root"
        );
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with zeros, leaving about `leave` bytes free.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            let free = free_bytes(self.path());
            if free <= leave {
                break;
            }
            let n = usize::try_from((free - leave).min(block.len() as u64)).unwrap_or(0);
            if n == 0 || f.write_all(&block[..n]).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

async fn put(store: &SqliteStore, id: &str) -> Result<(), StoreError> {
    let mut tx = store.begin("a").await?;
    let filler = "x".repeat(2000);
    tx.put(
        "Patient",
        id,
        json!({"resourceType": "Patient", "name": [{"text": filler}]}),
        Method::Put,
    )
    .await?;
    tx.commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regression_15_5_a_full_disk_is_storage_full_and_passes_by_itself() {
    let fs = Tmpfs::mount("16m");
    let data = fs.path().join("data");
    let store = SqliteStore::open(&data).expect("open");
    store.create_service("a").await.expect("service");
    let filler = fs.fill(256 * 1024);
    let mut acknowledged = Vec::new();
    let mut full = None;
    for i in 0..2000 {
        let id = format!("p{i}");
        // Concurrent writers too, so that whole groups fail together.
        let other = format!("{id}b");
        let (a, b) = tokio::join!(put(&store, &id), put(&store, &other));
        for (r, id) in [(a, id.clone()), (b, other)] {
            match r {
                Ok(()) => acknowledged.push(id),
                Err(StoreError::StorageFull(m)) => full = Some(m),
                Err(e) => panic!("a write on a full disk failed otherwise: {e:?}"),
            }
        }
        if full.is_some() {
            break;
        }
    }
    let full = full.expect("the disk filled up");
    assert!(!acknowledged.is_empty(), "some writes went through first");
    // Every acknowledged write is there (a commit that failed on the disk was never
    // acknowledged).
    println!("full: {full}");
    for id in &acknowledged {
        assert!(
            store
                .read("a", "Patient", id)
                .await
                .expect("read")
                .is_some(),
            "{id} was acknowledged"
        );
    }
    std::fs::remove_file(&filler).expect("free the space");
    put(&store, "after")
        .await
        .expect("writes pass once space is freed");
    put(&store, "after2").await.expect("and keep passing");
    assert!(store
        .read("a", "Patient", "after")
        .await
        .expect("read")
        .is_some());
    drop(store);
    // Nothing was damaged: the folder opens again with everything acknowledged.
    let store = SqliteStore::open(&data).expect("reopen");
    for id in acknowledged.iter().chain([&"after".to_owned()]) {
        assert!(
            store
                .read("a", "Patient", id)
                .await
                .expect("read")
                .is_some(),
            "{id} after reopening"
        );
    }
}
