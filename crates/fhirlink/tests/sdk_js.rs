//! Two JavaScript FHIR clients from npm (pinned in sdk-tests/js/package.json and its
//! package-lock.json) drive batch and transaction Bundles whose entries are full interactions
//! against the real binary. sdk-tests/js/clients.mjs runs fhir-kit-client's `batch` (type,
//! compartment and system-level searches, a history, reads, HEAD, a conditional read) and
//! `transaction` (searches that see the transaction's writes, FHIR R4 http.html#trules;
//! failing entries, a refused search among them, that leave nothing behind), and
//! @medplum/core's auto-batching (concurrent `search`/`readResource` calls sent as one batch
//! Bundle, checked on the requests it made).
//!
//! The packages are installed by scripts/test (`npm ci` in sdk-tests/js). Never skipped:
//! without Node or the packages this test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn js_clients_batch_and_transaction_with_search_entries() {
    let root = workspace();
    let modules = root.join("sdk-tests/js/node_modules");
    for package in ["fhir-kit-client", "@medplum/core"] {
        assert!(
            modules.join(package).join("package.json").is_file(),
            "{} is not installed in {}: run scripts/test, which runs \
             `npm ci --no-audit --no-fund` in sdk-tests/js",
            package,
            modules.display()
        );
    }
    let s = common::Server::start();
    let out = Command::new("node")
        .arg("sdk-tests/js/clients.mjs")
        .arg(&s.base)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("run node (Node.js 20 or later is needed): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the JS clients failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}\n{stderr}");
}
