//! Black-box harness for the management side: starts the real binary with its management
//! API on an ephemeral port, reads the URLs and the CA path it prints, mints tokens with
//! `fhirlink token`, and talks HTTPS to it trusting only the generated CA — or runs the
//! `fhirlink` CLI against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_fhirlink");
pub const SUB: &str = "00000000-0000-0000-0000-000000000000";

pub struct AdminServer {
    child: Child,
    /// The data plane's base URL.
    pub base: String,
    /// The management API's base URL (https://127.0.0.1:PORT).
    pub admin_url: String,
    /// The DNS server's address (IP:PORT, UDP and TCP).
    pub dns: String,
    /// The CA certificate printed at start (None with --admin-plain-http or own certificates).
    pub ca: Option<PathBuf>,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Makes ring the process's TLS provider (the binary does the same).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl AdminServer {
    /// A server on a fresh data folder.
    pub fn start() -> AdminServer {
        AdminServer::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> AdminServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut s = AdminServer::start_in(&data, extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server on a given data folder (kept by the caller, e.g. across restarts).
    pub fn start_in(data: &Path, extra: &[&str]) -> AdminServer {
        init_tls();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("FHIRLINK_LOG", "warn")
            // Every server gets its own DNS port too.
            .env("FHIRLINK_DNS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fhirlink");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut next = || {
            lines
                .next()
                .expect("fhirlink ended before printing its addresses")
                .expect("read stdout")
        };
        let first = next();
        let base = first
            .strip_prefix("fhirlink listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .to_string();
        let second = next();
        let admin_url = second
            .strip_prefix("fhirlink admin listening on ")
            .unwrap_or_else(|| panic!("unexpected second line: {second:?}"))
            .to_string();
        let ca = if admin_url.starts_with("https://") && !extra.contains(&"--admin-tls-cert") {
            let third = next();
            let path = third
                .strip_prefix("fhirlink admin CA certificate: ")
                .unwrap_or_else(|| panic!("unexpected third line: {third:?}"));
            Some(PathBuf::from(path))
        } else {
            None
        };
        let dns_line = next();
        let dns = dns_line
            .strip_prefix("fhirlink DNS listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected DNS line: {dns_line:?}"))
            .to_string();
        AdminServer {
            child,
            base,
            admin_url,
            dns,
            ca,
            data: data.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A token from `fhirlink token` for `principal`.
    pub fn token(&self, principal: &str) -> String {
        token_for(&self.data, principal, "1h")
    }

    /// An HTTPS client that trusts the generated CA and nothing else.
    pub fn client(&self) -> Client {
        client_trusting(self.ca.as_deref())
    }

    /// One management call with `token` (None: no Authorization header); status and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.client().request(
            method.parse().expect("method"),
            format!("{}{}", self.admin_url, path),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().expect("management call");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v, headers)
    }

    /// Runs the `fhirlink` CLI against this server (as the root Owner unless the arguments
    /// say otherwise).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("FHIRLINK_ADMIN_URL", &self.admin_url)
            .env("FHIRLINK_DATA", &self.data)
            .env("FHIRLINK_LOG", "warn")
            .env_remove("FHIRLINK_TOKEN")
            .output()
            .expect("run the fhirlink CLI")
    }

    /// Runs the CLI with `--output json`, asserts success, and returns the JSON it printed.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "fhirlink {}: {}\n{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
        }
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit; its exit status.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < within,
                "fhirlink did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fhirlink token --principal P --expires E --data DATA`.
pub fn token_for(data: &Path, principal: &str, expires: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--principal", principal, "--expires", expires])
        .arg("--data")
        .arg(data)
        .output()
        .expect("run fhirlink token");
    assert!(
        out.status.success(),
        "fhirlink token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).expect("utf-8 token");
    assert_eq!(s.lines().count(), 1, "the token alone on stdout: {s:?}");
    s.trim().to_string()
}

/// A data-plane token from `fhirlink token --service SERVICE` with SMART `scopes`.
pub fn data_token(data: &Path, principal: &str, service: &str, scopes: &[&str]) -> String {
    data_token_with(data, principal, service, scopes, &[])
}

/// The same with more arguments (`--patient ID`, `--expires 5s`, …).
pub fn data_token_with(
    data: &Path,
    principal: &str,
    service: &str,
    scopes: &[&str],
    extra: &[&str],
) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--principal", principal, "--service", service])
        .arg("--data")
        .arg(data);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.args(extra).output().expect("run fhirlink token");
    assert!(
        out.status.success(),
        "fhirlink token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 token")
        .trim()
        .to_string()
}

/// A blocking client that trusts exactly the CA certificates in `ca` (or nothing extra).
pub fn client_trusting(ca: Option<&Path>) -> Client {
    init_tls();
    let mut b = Client::builder().timeout(Duration::from_secs(60));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("read ca.pem");
        let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM");
        b = b.tls_certs_only(certs);
    }
    b.build().expect("client")
}
