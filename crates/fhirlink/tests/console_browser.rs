//! The web console in a real browser: headless Debian `chromium` driven by `playwright-core`
//! (console-tests/, pinned by its package-lock.json, installed by scripts/test) plays the
//! seed's whole private-link setup in the console only (console-tests/flow.mjs: a FHIR
//! service, hub and spoke, a private endpoint with a new private DNS zone that switches
//! public access off, a second endpoint requested by a Network Contributor and approved by
//! the owner in the Private endpoint connections tab, a VNet link), checks a Reader, CSRF,
//! a forged cookie and one-time sign-in codes, scans each blade with axe-core and writes
//! its screenshot to target/console-screenshots/. Then `dig` and `curl` confirm on the wire
//! what the console showed. Networks are in 127.0.0.0/8. Never skipped: without chromium,
//! Node or the packages this test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::admin::{AdminServer, BIN};

const FQDN: &str = "myfhir.azurehealthcareapis.com";
const HUB_VM: &str = "127.10.2.5";
const SPOKE_VM: &str = "127.20.1.5";
const OUTSIDER: &str = "127.30.1.5";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The A records `dig` from `from` gets for `name` from the server's DNS.
fn dig(s: &AdminServer, from: &str, name: &str) -> Vec<String> {
    let (ip, port) = s.dns.split_once(':').expect("dns addr");
    let out = Command::new("dig")
        .args(["-b", from, "-p", port, &format!("@{ip}"), name, "A"])
        .args(["+time=2", "+tries=2", "+short"])
        .output()
        .expect("dig (Debian's bind9-dnsutils; scripts/test installs it)");
    assert!(out.status.success(), "dig failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// The HTTP status of `GET /metadata` from `from` at `addr` over HTTPS (Host and SNI the
/// service's name), or curl's exit code.
fn curl(s: &AdminServer, from: &str, addr: &str) -> Result<u16, i32> {
    let port = s.base.rsplit(':').next().expect("port");
    let ca = s.ca.as_ref().expect("the generated CA");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([
            "--interface",
            from,
            "--resolve",
            &format!("{FQDN}:{port}:{addr}"),
        ])
        .args([
            "-w",
            "%{http_code}",
            &format!("https://{FQDN}:{port}/metadata"),
        ])
        .output()
        .expect("curl");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("status"))
}

#[test]
fn seed_flow_in_the_console_then_on_the_wire() {
    let root = workspace();
    let tests = root.join("console-tests");
    for package in ["playwright-core", "axe-core"] {
        assert!(
            tests
                .join("node_modules")
                .join(package)
                .join("package.json")
                .is_file(),
            "{package} is not installed in console-tests/node_modules: run scripts/test, which \
             runs `npm ci` there"
        );
    }
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "Debian's chromium is missing: scripts/test installs it"
    );
    let s = AdminServer::start();
    let shots = root.join("target/console-screenshots");
    let out = Command::new("node")
        .arg("flow.mjs")
        .current_dir(&tests)
        .env("FHIRLINK_BIN", BIN)
        .env("FHIRLINK_ADMIN_URL", &s.admin_url)
        .env("FHIRLINK_DATA", &s.data)
        .env("FHIRLINK_SCREENSHOTS", &shots)
        .env("FHIRLINK_LOG", "warn")
        .env_remove("FHIRLINK_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("run node (Node.js 20 or later is needed): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all passed"),
        "the console's browser flow failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}"));
    let pe1 = result["pe1Ip"].as_str().expect("pe1Ip").to_owned();
    let pe2 = result["pe2Ip"].as_str().expect("pe2Ip").to_owned();
    for blade in [
        "resource-groups",
        "fhir-service-overview",
        "fhir-service-networking",
        "create-private-endpoint",
        "private-endpoint",
        "virtual-network",
        "private-dns-zone",
        "network-security-group",
        "diagnose",
        "metrics",
        "audit-log",
    ] {
        assert!(
            shots.join(format!("{blade}.png")).is_file(),
            "no screenshot of {blade}"
        );
    }

    // DNS: the zone the console created answers pe1's IP, as the console showed it, in hub
    // and (through the link added in the console) in spoke; the internet sees the public chain.
    assert_eq!(dig(&s, HUB_VM, FQDN), vec![pe1.clone()], "hub");
    assert_eq!(dig(&s, SPOKE_VM, FQDN), vec![pe1.clone()], "spoke, linked");
    let public = dig(&s, OUTSIDER, FQDN);
    assert!(
        !public.contains(&pe1),
        "the outsider gets the public address: {public:?}"
    );
    // HTTP: both approved endpoints answer a hub VM; public access is off as the console showed.
    assert_eq!(curl(&s, HUB_VM, &pe1), Ok(200), "hub VM through pe1");
    assert_eq!(
        curl(&s, HUB_VM, &pe2),
        Ok(200),
        "hub VM through pe2, approved in the console"
    );
    let public = public
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());
    assert_eq!(
        curl(&s, OUTSIDER, &public),
        Ok(403),
        "public access Disabled"
    );
}
