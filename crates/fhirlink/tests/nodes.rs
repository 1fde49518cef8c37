//! Several nodes serving one deployment (issue #17): three `fhirlink serve` processes on one
//! scratch PostgreSQL database, each with its own data folder (holding copies of the first
//! node's keys and CA, as an operator would share them), its own ports and its own DNS
//! server. Networks live in 127.0.0.0/8 (../shared/DESIGN.md): every node binds an approved
//! endpoint's IP on its own port. The seed's flows are driven through different nodes and
//! checked on every node with `dig` and HTTPS from the clients' source addresses; public
//! access is toggled through node A with a request on B and C after each answer; a node is
//! killed and restarted and catches up. Nothing here opens a connection outside 127.0.0.0/8.
//! Fails, never skips, without PostgreSQL.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{AdminServer, SUB};
use common::seed::ZONE;
use fhir_store_postgres::scratch::ScratchDatabase;
use serde_json::{json, Value};

const SVC: &str = "myfhir";
const FQDN: &str = "myfhir.azurehealthcareapis.com";
const HUB_VM: &str = "127.10.2.5";
/// In no virtual network: the public internet, as far as fhirlink can tell.
const OUTSIDER: &str = "127.30.1.5";
/// The header that names lagging nodes (link_api::LAGGING_NODES_HEADER).
const LAGGING: &str = "x-fhirlink-lagging-nodes";

fn scratch() -> ScratchDatabase {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(ScratchDatabase::create())
        .unwrap_or_else(|e| panic!("scratch database: {e}"))
}

/// Copies the first node's keys and CA (everything but audit and export files) into a new
/// node's data folder.
fn share_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "audit" || name == "bulk" {
            continue;
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(to.join(&name))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn start(data: &Path, url: &str, id: &str) -> AdminServer {
    AdminServer::start_in(
        data,
        &["--store", url, "--node-id", id, "--plan-wait", "3s"],
    )
}

fn port(s: &AdminServer) -> u16 {
    s.base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// `dig` from `from` at a node's DNS server: the answer section as (type, data) pairs.
fn dig(s: &AdminServer, from: &str, name: &str) -> Vec<(String, String)> {
    let (ip, dns_port) = s.dns.split_once(':').expect("dns addr");
    let out = Command::new("dig")
        .args([
            "-b",
            from,
            "-p",
            dns_port,
            &format!("@{ip}"),
            name,
            "A",
            "+time=2",
            "+tries=2",
            "+noall",
            "+answer",
        ])
        .output()
        .expect("dig (Debian's bind9-dnsutils; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig failed: {text}");
    text.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[3].to_owned(), f[4].trim_end_matches('.').to_owned()))
        })
        .collect()
}

/// A data-plane client from source address `from` that sends the service's name to `addr`
/// on node `s`'s port, trusting the shared CA.
fn data_client(s: &AdminServer, from: &str, addr: &str) -> reqwest::blocking::Client {
    common::admin::init_tls();
    let pem = std::fs::read(s.ca.as_ref().expect("CA")).unwrap();
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_certs_only(certs)
        .local_address(from.parse::<IpAddr>().unwrap())
        .resolve(FQDN, format!("{addr}:{}", port(s)).parse().unwrap())
        .build()
        .unwrap()
}

/// `GET /metadata` from `from` to `addr` on node `s`: the status, or None when nothing
/// listens there.
fn metadata(client: &reqwest::blocking::Client, s: &AdminServer) -> Option<u16> {
    match client
        .get(format!("https://{FQDN}:{}/metadata", port(s)))
        .send()
    {
        Ok(r) => Some(r.status().as_u16()),
        Err(e) if e.is_connect() => None,
        Err(e) => panic!("GET /metadata: {e}"),
    }
}

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1")
}

fn service_path(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.HealthcareApis/services/{name}",
        rg()
    )
}

fn private_chain(ip: &str) -> Vec<(String, String)> {
    vec![
        ("CNAME".to_owned(), format!("{SVC}.{ZONE}")),
        ("A".to_owned(), ip.to_owned()),
    ]
}

fn connection_status(s: &AdminServer, name: &str) -> String {
    let c = s.cli_json(&[
        "fhir",
        "private-endpoint-connection",
        "show",
        "-g",
        "rg1",
        "--service",
        SVC,
        "-n",
        name,
    ]);
    c["properties"]["privateLinkServiceConnectionState"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn three_nodes_enforce_every_change_before_the_answer() {
    let db = scratch();
    let url = db.url();
    let tmp = tempfile::tempdir().unwrap();
    let (da, db_, dc) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let a = start(&da, &url, "a");
    share_keys(&da, &db_);
    share_keys(&da, &dc);
    let b = start(&db_, &url, "b");
    let mut c = start(&dc, &url, "c");

    // Through A: the group, the service, hub with its subnets, the zone and hub's link.
    a.cli_json(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    a.cli_json(&["fhir", "create", "-g", "rg1", "-n", SVC]);
    common::seed::hub(&a);
    // Every node answers the public chain, and serves the public endpoint.
    for n in [&a, &b, &c] {
        let outside = data_client(n, OUTSIDER, "127.0.0.1");
        assert_eq!(metadata(&outside, n), Some(200), "public at {}", n.base);
    }

    // Through B: an auto-approved endpoint with its zone group. Once B answers, every node
    // listens at the endpoint, resolves it from hub, and refuses the public path (the first
    // approval switched public access off).
    common::seed::endpoint(&b, "pe1", SVC);
    for n in [&a, &b, &c] {
        assert_eq!(
            dig(n, HUB_VM, FQDN),
            private_chain("127.10.1.4"),
            "{}",
            n.dns
        );
        let public = dig(n, OUTSIDER, FQDN);
        assert_eq!(
            public.last().map(|(_, ip)| ip.as_str()),
            Some("127.0.0.1"),
            "{public:?}"
        );
        let vm = data_client(n, HUB_VM, "127.10.1.4");
        assert_eq!(metadata(&vm, n), Some(200), "pe1 on {}", n.base);
        let outside = data_client(n, OUTSIDER, "127.0.0.1");
        assert_eq!(metadata(&outside, n), Some(403), "public off on {}", n.base);
    }

    // `diagnose` on any node names the nodes that serve the path: all three, live.
    let (status, d, _) = b.call(
        "GET",
        &format!("/fhirlink/diagnose?service={SVC}&from={HUB_VM}"),
        Some(&b.token("admin")),
        None,
    );
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], 200, "{d}");
    let mut live: Vec<&str> = d["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {d}"))
        .iter()
        .filter(|n| n["live"] == true)
        .filter_map(|n| n["id"].as_str())
        .collect();
    live.sort_unstable();
    assert_eq!(live, ["a", "b", "c"], "{d}");
    let out = c.cli(&["diagnose", SVC, "--from", HUB_VM]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("  c  live (this node)  data https://127.0.0.1:")
            && text.contains("  a  live  "),
        "{text}"
    );

    // Through C: bob, a Network Contributor, asks for an endpoint by hand; Pending carries
    // no traffic on any node. Approved through C, it does on every node.
    c.cli_json(&[
        "role",
        "assignment",
        "create",
        "-g",
        "rg1",
        "--assignee",
        "bob",
        "--role",
        "Network Contributor",
    ]);
    let pe = c.cli_json(&[
        "network",
        "private-endpoint",
        "create",
        "-g",
        "rg1",
        "-n",
        "pe2",
        "--vnet-name",
        "hub",
        "--subnet",
        "endpoints",
        "--service",
        SVC,
        "--manual-request",
        "--request-message",
        "For the hub VMs",
        "--principal",
        "bob",
    ]);
    let ip2 = pe
        .pointer("/properties/customDnsConfigs/0/ipAddresses/0")
        .and_then(Value::as_str)
        .unwrap_or("127.10.1.5")
        .to_owned();
    assert_eq!(connection_status(&a, "pe2"), "Pending");
    for n in [&a, &b, &c] {
        assert_eq!(metadata(&data_client(n, HUB_VM, &ip2), n), None, "Pending");
    }
    c.cli_json(&[
        "fhir",
        "private-endpoint-connection",
        "approve",
        "-g",
        "rg1",
        "--service",
        SVC,
        "-n",
        "pe2",
    ]);
    assert_eq!(connection_status(&b, "pe2"), "Approved");
    for n in [&a, &b, &c] {
        assert_eq!(
            metadata(&data_client(n, HUB_VM, &ip2), n),
            Some(200),
            "pe2 Approved, on {}",
            n.base
        );
    }

    // Public access toggled through A, a request on B and on C after every answer: none may
    // be served the old way. 1,000 toggles, or as many as fit in 60 seconds.
    let admin = a.client();
    let token = a.token("admin");
    let path = format!("{}?api-version=2024-03-31", service_path(SVC));
    let (b_out, c_out) = (
        data_client(&b, OUTSIDER, "127.0.0.1"),
        data_client(&c, OUTSIDER, "127.0.0.1"),
    );
    let started = Instant::now();
    let mut toggles = 0;
    let mut stale = Vec::new();
    while toggles < 1000 && started.elapsed() < Duration::from_secs(60) {
        let enabled = toggles % 2 == 0;
        let access = if enabled { "Enabled" } else { "Disabled" };
        let r = admin
            .patch(format!("{}{}", a.admin_url, path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(json!({"properties": {"publicNetworkAccess": access}}).to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "toggle {toggles}");
        assert!(
            r.headers().get(LAGGING).is_none(),
            "toggle {toggles}: {:?}",
            r.headers().get(LAGGING)
        );
        let want = if enabled { 200 } else { 403 };
        for (name, client, node) in [("b", &b_out, &b), ("c", &c_out, &c)] {
            let got = metadata(client, node);
            if got != Some(want) {
                stale.push((toggles, name, got));
            }
        }
        toggles += 1;
    }
    let took = started.elapsed();
    eprintln!(
        "{toggles} public-access toggles through A, each checked on B and C, in {took:?} ({:?} each)",
        took / toggles
    );
    assert!(stale.is_empty(), "served the old way: {stale:?}");
    assert!(toggles >= 100, "only {toggles} toggles in {took:?}");

    // C killed: a change through A still answers (after the bound, naming C), and C,
    // restarted on its folder, serves the new state from the start.
    let toggle = |enabled: bool| {
        let access = if enabled { "Enabled" } else { "Disabled" };
        let r = admin
            .patch(format!("{}{}", a.admin_url, path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(json!({"properties": {"publicNetworkAccess": access}}).to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()
            .get(LAGGING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = |enabled: bool| Some(if enabled { 200 } else { 403 });
    let enabled = (toggles - 1) % 2 == 0;
    c.kill();
    let lagging = toggle(!enabled);
    assert_eq!(
        lagging.as_deref(),
        Some("c"),
        "the answer names the node that is gone"
    );
    assert_eq!(metadata(&b_out, &b), status(!enabled));
    c = start(&dc, &url, "c");
    let c_out = data_client(&c, OUTSIDER, "127.0.0.1");
    assert_eq!(
        metadata(&c_out, &c),
        status(!enabled),
        "restarted C serves the current state"
    );
    assert_eq!(dig(&c, HUB_VM, FQDN), private_chain("127.10.1.4"));
    // And takes part again: the next change waits for it and names nobody.
    assert_eq!(toggle(enabled), None);
    assert_eq!(metadata(&c_out, &c), status(enabled));
    drop((a, b, c));
}

/// 16 writers spread over three nodes increment one counter (a tag of a virtual network)
/// by read, then write with `If-Match`; a 412 (someone wrote first) or a 503 (the resource
/// kept changing) is read again and retried. No increment is lost: the counter ends at the
/// number of successful writes.
#[test]
fn sixteen_writers_over_three_nodes_lose_no_update() {
    const WRITERS: usize = 16;
    const EACH: usize = 3;
    let db = scratch();
    let url = db.url();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();
    let a = start(&dirs[0], &url, "a");
    share_keys(&dirs[0], &dirs[1]);
    share_keys(&dirs[0], &dirs[2]);
    let nodes = [a, start(&dirs[1], &url, "b"), start(&dirs[2], &url, "c")];
    nodes[0].cli_json(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    let vnet = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/counter?api-version=2024-07-01",
        rg()
    );
    let token = nodes[0].token("admin");
    let body = json!({
        "location": "westus2",
        "tags": {"n": "0"},
        "properties": {"addressSpace": {"addressPrefixes": ["127.40.0.0/16"]}}
    });
    let (status, created, _) = nodes[0].call("PUT", &vnet, Some(&token), Some(&body));
    assert!(status == 200 || status == 201, "{status} {created}");

    let written = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let node = &nodes[w % 3];
                let (vnet, token) = (&vnet, &token);
                scope.spawn(move || {
                    let client = node.client();
                    let url = format!("{}{}", node.admin_url, vnet);
                    let mut done = 0;
                    let mut attempts = 0;
                    while done < EACH {
                        attempts += 1;
                        assert!(attempts < 2000, "writer {w} made no progress");
                        let r = client.get(&url).bearer_auth(token).send().unwrap();
                        assert_eq!(r.status(), 200);
                        let mut current: Value = r.json().unwrap();
                        let etag = current["etag"].as_str().expect("etag").to_owned();
                        let n: u64 = current["tags"]["n"].as_str().unwrap().parse().unwrap();
                        current["tags"]["n"] = json!((n + 1).to_string());
                        let r = client
                            .put(&url)
                            .bearer_auth(token)
                            .header("content-type", "application/json")
                            .header("if-match", &etag)
                            .body(current.to_string())
                            .send()
                            .unwrap();
                        match r.status().as_u16() {
                            200 | 201 => done += 1,
                            412 | 503 => {}
                            other => panic!("writer {w}: {other} {}", r.text().unwrap()),
                        }
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(written, WRITERS * EACH);
    for node in &nodes {
        let (status, v, _) = node.call("GET", &vnet, Some(&token), None);
        assert_eq!(status, 200);
        assert_eq!(
            v["tags"]["n"],
            json!((WRITERS * EACH).to_string()),
            "on {}: {v}",
            node.admin_url
        );
    }
}

/// A session of the test's own on a scratch database: to hold a lock the node needs, or to
/// end the node's connections to that database. It never touches the server itself (other
/// databases, other sessions' databases, a restart): the PostgreSQL is shared.
struct Session {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Session {
    fn open(url: &str) -> Session {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("the test's own session");
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        });
        Session { rt, client }
    }

    fn run(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Ends every other session on this database (the node's pool, its feed listener):
    /// how many there were.
    fn drop_the_nodes_connections(&self) -> i64 {
        self.rt
            .block_on(self.client.query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            ))
            .expect("pg_terminate_backend")
            .get(0)
    }
}

/// `GET /metadata` on a node's default service: status, `Retry-After`, body.
fn default_metadata(
    client: &reqwest::blocking::Client,
    s: &AdminServer,
) -> (u16, Option<String>, Value) {
    let r = client
        .get(format!("{}/metadata", s.base))
        .send()
        .expect("GET /metadata");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, r.json().unwrap_or(Value::Null))
}

/// Asks `probe` (every 100 ms, at most 600 times) until it returns `want`; the last answer.
fn until<T>(what: &str, mut probe: impl FnMut() -> T, want: impl Fn(&T) -> bool) -> T {
    let mut last = probe();
    for _ in 0..600 {
        if want(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
        last = probe();
    }
    panic!("{what} never happened");
}

/// The fence, black-box: a node whose reads of the change feed block (the test's own
/// session holds the feed's table in `ACCESS EXCLUSIVE` mode in its scratch database) for
/// longer than `--plan-wait` answers its data plane with 503, `Retry-After` and an
/// OperationOutcome rather than serve a plan it cannot vouch for; once the feed reads
/// again it serves again, and follows changes as before.
#[test]
fn a_node_that_cannot_read_the_feed_answers_503_until_it_can() {
    let db = scratch();
    let url = db.url();
    let tmp = tempfile::tempdir().unwrap();
    let a = start(&tmp.path().join("a"), &url, "a");
    let http = common::admin::client_trusting(a.ca.as_deref());
    let (status, _, body) = default_metadata(&http, &a);
    assert_eq!(status, 200, "{body}");

    let session = Session::open(&url);
    session.run("BEGIN; LOCK TABLE document_changes IN ACCESS EXCLUSIVE MODE");
    let (status, retry, body) = until(
        "the fence",
        || default_metadata(&http, &a),
        |(s, _, _)| *s != 200,
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], "transient", "{body}");
    // Fenced, not a blip: it goes on refusing while the feed stays blocked.
    for _ in 0..5 {
        assert_eq!(default_metadata(&http, &a).0, 503);
    }

    session.run("ROLLBACK");
    until(
        "serving again",
        || default_metadata(&http, &a).0,
        |s| *s == 200,
    );
    // And it follows the deployment again: a change through it is answered at once (no
    // lagging node) and in force.
    let (status, created, headers) = a.call(
        "PUT",
        &format!("{}?api-version=2025-04-01", rg()),
        Some(&a.token("admin")),
        Some(&json!({"location": "westus2"})),
    );
    assert!(status == 200 || status == 201, "{status} {created}");
    assert!(headers.get(LAGGING).is_none(), "{headers:?}");
    assert_eq!(default_metadata(&http, &a).0, 200);
    drop(a);
}

/// "PostgreSQL restarted mid-load", as far as a shared server allows: the server itself is
/// never restarted (other sessions use it); instead every connection the node has to its
/// own scratch database is ended (`pg_terminate_backend`) three times while four clients
/// write patients. Every request is answered, with success or 503 + `Retry-After` + an
/// OperationOutcome (never a 500, a hang or a dropped connection); every acknowledged
/// write is there afterwards; the node reconnects by itself and serves and writes again.
#[test]
fn dropped_database_connections_mid_load_lose_no_acknowledged_write() {
    const CLIENTS: usize = 4;
    const EACH: usize = 60;
    let db = scratch();
    let url = db.url();
    let tmp = tempfile::tempdir().unwrap();
    let a = start(&tmp.path().join("a"), &url, "a");
    let owner = common::admin::data_token(&a.data, "admin", "default", &[]);
    let session = Session::open(&url);
    let acknowledged = std::sync::atomic::AtomicUsize::new(0);

    let (written, refused, dropped) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (a, owner, acknowledged) = (&a, &owner, &acknowledged);
                scope.spawn(move || {
                    let http = common::admin::client_trusting(a.ca.as_deref());
                    let mut written = Vec::new();
                    let mut refused = 0;
                    for i in 0..EACH {
                        let id = format!("w{c}-{i}");
                        let r = http
                            .put(format!("{}/Patient/{id}", a.base))
                            .bearer_auth(owner)
                            .header("content-type", "application/fhir+json")
                            .body(
                                json!({"resourceType": "Patient", "id": id, "name": [{"family": format!("F{c}x{i}")}]})
                                    .to_string(),
                            )
                            .send()
                            .unwrap_or_else(|e| panic!("PUT {id}: no answer: {e}"));
                        let status = r.status().as_u16();
                        let retry = r.headers().get("retry-after").cloned();
                        let body: Value = r.json().unwrap_or(Value::Null);
                        match status {
                            200 | 201 => {
                                written.push(id);
                                acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            503 => {
                                assert!(retry.is_some(), "503 without Retry-After: {body}");
                                assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
                                refused += 1;
                            }
                            other => panic!("PUT {id}: {other} {body}"),
                        }
                    }
                    (written, refused)
                })
            })
            .collect();
        // Three times, once some writes were acknowledged since the last time.
        let mut dropped = Vec::new();
        for round in 1..=3 {
            until(
                "acknowledged writes",
                || acknowledged.load(std::sync::atomic::Ordering::Relaxed),
                |n| *n >= round * CLIENTS * EACH / 5,
            );
            // The pool may be between connections right after the last round (it
            // reconnects on demand): end them once there are some again (its heartbeat
            // and feed reader need one within a second).
            dropped.push(until(
                "a connection of the node to end",
                || session.drop_the_nodes_connections(),
                |n| *n > 0,
            ));
        }
        let mut written = Vec::new();
        let mut refused = 0;
        for w in writers {
            let (ids, r) = w.join().unwrap();
            written.extend(ids);
            refused += r;
        }
        (written, refused, dropped)
    });
    eprintln!(
        "{} writes acknowledged, {refused} refused with 503; node connections ended: {dropped:?}",
        written.len()
    );
    assert!(
        dropped.iter().all(|n| *n > 0),
        "the node had no connection to end: {dropped:?}"
    );
    assert_eq!(written.len() + refused, CLIENTS * EACH);

    // Every acknowledged write is there, read through the node (its pool reconnected).
    let http = common::admin::client_trusting(a.ca.as_deref());
    for id in &written {
        let r = http
            .get(format!("{}/Patient/{id}", a.base))
            .bearer_auth(&owner)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged {id} is gone");
        let p: Value = r.json().unwrap();
        assert_eq!(p["id"], id.as_str());
    }
    // And through a node started afterwards on the same database.
    let dir_b = tmp.path().join("b");
    share_keys(&a.data, &dir_b);
    let b = start(&dir_b, &url, "b");
    let http_b = common::admin::client_trusting(b.ca.as_deref());
    let r = http_b
        .get(format!("{}/Patient?_summary=count", b.base))
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().unwrap();
    // At least the acknowledged ones: a write refused with 503 because its connection ended
    // may still have committed just before (its outcome unknown to the client, as with any
    // lost answer), never more than were sent.
    let total = bundle["total"].as_u64().expect("total") as usize;
    assert!(
        (written.len()..=CLIENTS * EACH).contains(&total),
        "{total} patients, {} acknowledged: {bundle}",
        written.len()
    );
    // The first node writes again.
    let r = http
        .put(format!("{}/Patient/after", a.base))
        .bearer_auth(&owner)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": "after"}).to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(default_metadata(&http, &a).0, 200);
    drop((a, b));
}
