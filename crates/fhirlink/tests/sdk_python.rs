//! The official Azure management SDKs for Python (from PyPI, pinned in
//! sdk-tests/requirements.txt) run the seed's Private Link flows, and ARM's generic endpoints
//! (azure-mgmt-resource's `providers.get`/`register`, `resources.list_by_resource_group` and
//! `resources.list` with `$filter` and `$top` paging), against the real binary:
//! sdk-tests/azure_sdk_flows.py with a credential that returns a `fhirlink token` (the root
//! Owner's, and a Network Contributor's for the manual approval flow) and the generated CA as
//! the verify bundle.
//!
//! The interpreter is `FHIRLINK_SDK_PYTHON` when set (scripts/test sets it), else the venv
//! that sdk-tests/setup-venv makes (and makes now, if missing). Never skipped: without
//! Python and the SDKs this test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::admin::AdminServer;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FHIRLINK_SDK_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new(workspace().join("sdk-tests/setup-venv"))
        .output()
        .expect("run sdk-tests/setup-venv");
    assert!(
        out.status.success(),
        "sdk-tests/setup-venv failed (python3 with venv and PyPI are needed):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn azure_sdks_run_the_seed_flows() {
    let python = python();
    let s = AdminServer::start();
    let ca = s.ca.clone().expect("generated CA");
    let out = Command::new(&python)
        .arg(workspace().join("sdk-tests/azure_sdk_flows.py"))
        .env("FHIRLINK_ADMIN_URL", &s.admin_url)
        .env("FHIRLINK_CA", &ca)
        .env("FHIRLINK_TOKEN", s.token("admin"))
        .env("FHIRLINK_USER_TOKEN", s.token("bob"))
        .env(
            "FHIRLINK_SUBSCRIPTION",
            "6a4e7a3c-0000-4000-8000-00000000c0de",
        )
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK flows failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
