//! The network plane seen from a client: `nslookup` sends a real DNS query from the client's
//! address and prints the answer the way the seed's nslookup does; `diagnose` asks the
//! server to explain the whole path from that address and prints each link and its fix.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::client::{ArmClient, Connection, Output};
use super::output::print_json;
use crate::diagnose::Diagnosis;

/// How long one DNS attempt waits for the answer.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const DNS_ATTEMPTS: usize = 3;

#[derive(Args)]
pub(crate) struct NslookupArgs {
    /// The name to look up, e.g. myfhir.azurehealthcareapis.com.
    name: String,
    /// The client's address: the query is sent from it, so the answer is the one a client
    /// there gets (the DNS server chooses its view by source address).
    #[arg(long)]
    from: Ipv4Addr,
    /// The DNS server (fhirlink's --dns-listen).
    #[arg(long, env = "FHIRLINK_DNS_SERVER", default_value = "127.0.0.1:5353")]
    server: SocketAddr,
}

/// `fhirlink nslookup NAME --from IP`.
pub(crate) async fn nslookup(args: NslookupArgs) -> anyhow::Result<()> {
    let name = Name::from_ascii(args.name.trim_end_matches('.'))
        .with_context(|| format!("'{}' is not a domain name", args.name))?;
    let reply = query(&name, args.from, args.server).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Server:  {}", args.server.ip())?;
    writeln!(out, "Address:  {}#{}", args.server.ip(), args.server.port())?;
    writeln!(out)?;
    let code = reply.metadata.response_code;
    if code != ResponseCode::NoError {
        let why = match code {
            ResponseCode::NXDomain => "Non-existent domain",
            ResponseCode::Refused => "Query refused",
            ResponseCode::ServFail => "Server failed",
            _ => "No answer",
        };
        writeln!(
            out,
            "*** {} can't find {}: {why}",
            args.server.ip(),
            args.name
        )?;
        drop(out);
        bail!("{} did not resolve ({code})", args.name);
    }
    // The chain: the first name asked, each CNAME target, then the addresses of the last.
    let mut aliases = Vec::new();
    let mut canonical = name.to_ascii();
    let mut addresses = Vec::new();
    for r in &reply.answers {
        match &r.data {
            RData::CNAME(target) => {
                aliases.push(r.name.to_ascii());
                canonical = target.0.to_ascii();
            }
            RData::A(a) => addresses.push(a.0.to_string()),
            _ => {}
        }
    }
    if addresses.is_empty() {
        writeln!(
            out,
            "*** No address (A) records available for {}",
            args.name
        )?;
        drop(out);
        bail!("{} has no address", args.name);
    }
    writeln!(out, "Name:    {}", canonical.trim_end_matches('.'))?;
    for (i, a) in addresses.iter().enumerate() {
        let label = if i == 0 { "Address:  " } else { "          " };
        writeln!(out, "{label}{a}")?;
    }
    for (i, a) in aliases.iter().enumerate() {
        let label = if i == 0 { "Aliases:  " } else { "          " };
        writeln!(out, "{label}{}", a.trim_end_matches('.'))?;
    }
    Ok(())
}

/// One A query over UDP from `from`, retried on silence.
async fn query(name: &Name, from: Ipv4Addr, server: SocketAddr) -> anyhow::Result<Message> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::from((from, 0)))
        .await
        .with_context(|| format!("binding a UDP socket to {from}"))?;
    let id: u16 = rand_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let mut fqdn = name.clone();
    fqdn.set_fqdn(true);
    msg.add_query(Query::query(fqdn, RecordType::A));
    let bytes = msg.to_vec().context("encoding the DNS query")?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..DNS_ATTEMPTS {
        socket
            .send_to(&bytes, server)
            .await
            .with_context(|| format!("sending the query to {server}"))?;
        let Ok(received) = tokio::time::timeout(DNS_TIMEOUT, socket.recv_from(&mut buf)).await
        else {
            continue;
        };
        let (n, peer) = received.with_context(|| format!("reading the answer from {server}"))?;
        if peer != server {
            continue;
        }
        let reply = Message::from_vec(&buf[..n]).context("decoding the DNS answer")?;
        if reply.metadata.id == id {
            return Ok(reply);
        }
    }
    bail!("no answer from {server} after {DNS_ATTEMPTS} attempts")
}

fn rand_id() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[derive(Args)]
pub(crate) struct DiagnoseArgs {
    #[command(flatten)]
    conn: Connection,
    /// The FHIR service's name.
    service: String,
    /// The client's address.
    #[arg(long)]
    from: Ipv4Addr,
}

/// `fhirlink diagnose SERVICE --from IP`.
pub(crate) async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<()> {
    let client = ArmClient::new(&args.conn)?;
    let path = format!(
        "/fhirlink/diagnose?service={}&from={}",
        form_urlencoded::byte_serialize(args.service.as_bytes()).collect::<String>(),
        args.from
    );
    let v = client.get(&path, "2024-03-31").await?;
    if args.conn.output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    // One node of several: the nodes the store registers, live ones serving this path too.
    let nodes = v
        .get("nodes")
        .and_then(serde_json::Value::as_array)
        .cloned();
    let d: Diagnosis = serde_json::from_value(v).context("the server's diagnosis")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} from {}", d.service, d.from)?;
    let width = d
        .checks
        .iter()
        .map(|c| c.check.as_str().len())
        .max()
        .unwrap_or(0);
    for c in &d.checks {
        writeln!(
            out,
            "  {}  {:width$}  {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.check.as_str(),
            c.detail
        )?;
    }
    writeln!(out, "Result: {}", d.outcome)?;
    if !d.fixes.is_empty() {
        writeln!(out, "To fix:")?;
        for f in &d.fixes {
            writeln!(out, "  - {f}")?;
        }
    }
    if let Some(nodes) = nodes {
        writeln!(
            out,
            "Nodes (every live node serves this path as this one does):"
        )?;
        for n in &nodes {
            let text = |k: &str| n.get(k).and_then(serde_json::Value::as_str).unwrap_or("?");
            let addresses: Vec<&str> = n
                .get("addresses")
                .and_then(serde_json::Value::as_array)
                .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            writeln!(
                out,
                "  {}  {}{}  {}",
                text("id"),
                if n.get("live") == Some(&serde_json::Value::Bool(true)) {
                    "live"
                } else {
                    "not live"
                },
                if n.get("thisNode") == Some(&serde_json::Value::Bool(true)) {
                    " (this node)"
                } else {
                    ""
                },
                addresses.join(", ")
            )?;
        }
    }
    Ok(())
}
