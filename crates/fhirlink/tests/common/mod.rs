//! Black-box harness: starts the real `fhirlink` binary on an ephemeral loopback port with
//! its own data folder, and talks to it over HTTP like any client (plain HTTP, `--auth none`:
//! `admin::AdminServer` runs the defaults, TLS and tokens).
#![allow(dead_code)]

pub mod admin;
pub mod seed;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

pub struct Server {
    child: Child,
    pub base: String,
    pub addr: String,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    client: Client,
}

impl Server {
    /// A server on a fresh data folder.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut s = Server::start_in(&data, extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server on a given data folder (kept by the caller, e.g. across restarts).
    pub fn start_in(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhirlink"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            // These tests are about FHIR itself: plain HTTP and no tokens. Identity, TLS and
            // the network rules have their own tests (data_security.rs, network_plane.rs),
            // which run the defaults.
            .args(["--plain-http", "--auth", "none"])
            .args(extra)
            .env("FHIRLINK_LOG", "warn")
            // Every server gets its own DNS port too.
            .env("FHIRLINK_DNS_LISTEN", "127.0.0.1:0")
            // Every server gets its own management port, so that tests run side by side.
            .env("FHIRLINK_ADMIN_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fhirlink");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("fhirlink listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let addr = base.trim_start_matches("http://").to_string();
        Server {
            child,
            base,
            addr,
            data: data.to_path_buf(),
            _tmp: None,
            client: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .post(self.url(path))
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).expect("json"))
    }

    pub fn put_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .put(self.url(path))
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).expect("json"))
    }

    /// Creates a resource and returns its stored form.
    pub fn create(&self, resource: &Value) -> Value {
        let t = resource["resourceType"].as_str().expect("resourceType");
        let r = self.post_json(t, resource).send().expect("create");
        let status = r.status().as_u16();
        let body = json(r);
        assert_eq!(status, 201, "create {t}: {body}");
        body
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a response as JSON (panics with the text when it is not JSON).
pub fn json(r: Response) -> Value {
    let text = r.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts that `v` is an OperationOutcome whose first issue has this code, and that some
/// issue's expression equals `expression` when given.
pub fn assert_outcome(v: &Value, code: &str, expression: Option<&str>) {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    let issues = v["issue"].as_array().expect("issues");
    assert!(
        issues.iter().any(|i| i["code"] == code),
        "no issue with code {code}: {v}"
    );
    if let Some(e) = expression {
        assert!(
            issues.iter().any(|i| i["expression"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == e))),
            "no issue at {e}: {v}"
        );
    }
}
