//! `fhirlink export`: a Bulk Data export from a FHIR service (fhirlink's, or any server that
//! speaks the IG) into a folder, with [`fhir_bulk_client`] doing the protocol and indicatif
//! the progress (bars on a terminal, plain log lines otherwise).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fhir_bulk_client::{ExportRequest, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use link_auth::identity::{unix_now, LocalIssuer, TokenRequest};

/// Lifetime of the token `export` mints for itself.
const SELF_TOKEN_SECS: i64 = 3600;

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The FHIR base URL (`https://<service>.azurehealthcareapis.com:8080`, or the server's
    /// address for the default service).
    #[arg(
        long,
        env = "FHIRLINK_FHIR_URL",
        default_value = "https://127.0.0.1:8080"
    )]
    fhir_url: String,
    /// Connect to this address instead of what the URL's host resolves to (`IP:PORT`), as
    /// `curl --resolve` does: the URL's name still goes in the Host header and the TLS SNI.
    #[arg(long)]
    connect_to: Option<std::net::SocketAddr>,
    /// The FHIR service: the audience of the token minted with --data's key.
    #[arg(long, default_value = "default")]
    service: String,
    /// Export level: `system` (default), `patient`, or `group/<id>`.
    #[arg(long, default_value = "system")]
    level: String,
    /// Resource types to export (repeat, or comma-separated); default all.
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only resources changed since this instant (`2026-01-01T00:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// `_typeFilter` queries (repeat): `Observation?status=final`.
    #[arg(long = "type-filter")]
    type_filters: Vec<String>,
    /// The folder the files and manifest.json are written to.
    #[arg(long)]
    out: PathBuf,
    /// A bearer token to send instead of minting one.
    #[arg(long, env = "FHIRLINK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's data folder: its CA certificate is trusted and its signing key mints the
    /// token (principal --principal, scope system/*.read) unless --token is given.
    #[arg(long, env = "FHIRLINK_DATA", default_value = "./fhirlink-data")]
    data: PathBuf,
    /// The principal a minted token names (it needs the FHIR Data Exporter role).
    #[arg(long, env = "FHIRLINK_PRINCIPAL", default_value = "admin")]
    principal: String,
    /// CA certificate (PEM) to trust [default: <data>/tls/ca.pem when it exists, else the
    /// system's roots].
    #[arg(long, env = "FHIRLINK_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Give up when the export has not finished after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// indicatif on a terminal; log lines when stderr is not one.
struct Bars {
    terminal: bool,
    bar: ProgressBar,
    state: Mutex<(u64, u64)>,
}

impl Bars {
    fn new() -> Bars {
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Bars {
            terminal,
            bar,
            state: Mutex::new((0, 0)),
        }
    }

    fn log(&self, line: &str) {
        if self.terminal {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

impl Progress for Bars {
    fn accepted(&self, status_url: &str) {
        self.log(&format!("export accepted: {status_url}"));
        self.bar.set_message("waiting for the server");
    }
    fn running(&self, progress: &str) {
        if self.terminal {
            self.bar.set_message(format!("server: {progress}"));
        } else {
            eprintln!("running: {progress}");
        }
    }
    fn manifest(&self, files: usize, resources: u64) {
        self.log(&format!("{files} files, {resources} resources to download"));
        if self.terminal {
            self.bar.set_length(resources);
            self.bar.set_position(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} resources ({per_sec}, ETA {eta}) {msg}",
            ) {
                self.bar.set_style(style);
            }
        }
    }
    fn file(&self, name: &str, _resources: u64) {
        self.bar.set_message(name.to_owned());
    }
    fn file_done(&self, name: &str, lines: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        s.1 += lines;
        if self.terminal {
            self.bar.inc(lines);
        } else {
            eprintln!(
                "downloaded {name}: {lines} resources ({} files, {} resources so far)",
                s.0, s.1
            );
        }
    }
}

fn level(s: &str) -> anyhow::Result<String> {
    let lower = s.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "system" | "" => String::new(),
        "patient" => "Patient".into(),
        _ => match lower.strip_prefix("group/") {
            Some(_) => format!("Group/{}", &s[6..]),
            None => anyhow::bail!("--level must be system, patient or group/<id>, not '{s}'"),
        },
    })
}

pub(crate) async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let base = args.fhir_url.trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&base).with_context(|| format!("--fhir-url '{base}'"))?;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("fhirlink-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600));
    let ca = args
        .ca_cert
        .clone()
        .or_else(|| Some(args.data.join("tls").join("ca.pem")).filter(|p| p.exists()));
    if let (Some(ca), "https") = (&ca, url.scheme()) {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    if let (Some(addr), Some(host)) = (args.connect_to, url.host_str()) {
        builder = builder.resolve(host, addr);
    }
    let http = builder.build().context("building the HTTP client")?;
    let token = match &args.token {
        Some(t) => t.trim().to_owned(),
        None => LocalIssuer::load(&args.data)?.mint_with(&TokenRequest {
            subject: args.principal.clone(),
            audience: format!(
                "https://{}.{}",
                args.service.to_lowercase(),
                link_model::SERVICE_DNS_SUFFIX
            ),
            scopes: vec!["system/*.read".into()],
            patient: None,
            fhir_user: None,
            client_id: None,
            now: unix_now(),
            lifetime_secs: SELF_TOKEN_SECS,
        })?,
    };
    let request = ExportRequest {
        base,
        level: level(&args.level)?,
        types: args
            .types
            .iter()
            .flat_map(|t| t.split(','))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        since: args.since.clone(),
        type_filters: args.type_filters.clone(),
        token: Some(token),
        out: args.out.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let started = Instant::now();
    let bars = Bars::new();
    let result = fhir_bulk_client::export(&http, &request, &bars).await;
    bars.bar.finish_and_clear();
    let done = result.context("the export")?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "exported {} resources in {} files ({} deleted, {} error files) to {} in {secs:.1} s ({:.0} resources/s); transactionTime {}",
        done.resources(),
        done.output.len(),
        done.deleted.len(),
        done.errors.len(),
        args.out.display(),
        done.resources() as f64 / secs.max(0.001),
        done.manifest["transactionTime"].as_str().unwrap_or("?"),
    );
    Ok(())
}
