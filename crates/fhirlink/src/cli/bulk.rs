//! `fhirlink export`: a Bulk Data export from a FHIR service (fhirlink's, or any server that
//! speaks the IG) into a folder, and `fhirlink import`: `$import` of NDJSON files (a folder of
//! Azure's or fhirlink's export output, unchanged) into a service, with [`fhir_bulk_client`]
//! doing the protocol and indicatif the progress (bars on a terminal, plain log lines
//! otherwise).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fhir_bulk_client::{ExportRequest, ImportRequest, Progress};
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

/// How the CLI reaches a server: its URL, address, trust and token.
struct Connection<'a> {
    fhir_url: &'a str,
    connect_to: Option<std::net::SocketAddr>,
    ca_cert: Option<&'a PathBuf>,
    data: &'a std::path::Path,
    token: Option<&'a str>,
    principal: &'a str,
    service: &'a str,
    scope: &'a str,
}

/// The HTTP client and the bearer token (`--token`, or one minted with the data folder's key).
fn connect(c: &Connection<'_>) -> anyhow::Result<(String, reqwest::Client, String)> {
    let base = c.fhir_url.trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&base).with_context(|| format!("--fhir-url '{base}'"))?;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("fhirlink-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600));
    let ca = c
        .ca_cert
        .cloned()
        .or_else(|| Some(c.data.join("tls").join("ca.pem")).filter(|p| p.exists()));
    if let (Some(ca), "https") = (&ca, url.scheme()) {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    if let (Some(addr), Some(host)) = (c.connect_to, url.host_str()) {
        builder = builder.resolve(host, addr);
    }
    let http = builder.build().context("building the HTTP client")?;
    let token = match c.token {
        Some(t) => t.trim().to_owned(),
        None => LocalIssuer::load(c.data)?.mint_with(&TokenRequest {
            subject: c.principal.to_owned(),
            audience: format!(
                "https://{}.{}",
                c.service.to_lowercase(),
                link_model::SERVICE_DNS_SUFFIX
            ),
            scopes: vec![c.scope.to_owned()],
            patient: None,
            fhir_user: None,
            client_id: None,
            now: unix_now(),
            lifetime_secs: SELF_TOKEN_SECS,
        })?,
    };
    Ok((base, http, token))
}

pub(crate) async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let (base, http, token) = connect(&Connection {
        fhir_url: &args.fhir_url,
        connect_to: args.connect_to,
        ca_cert: args.ca_cert.as_ref(),
        data: &args.data,
        token: args.token.as_deref(),
        principal: &args.principal,
        service: &args.service,
        scope: "system/*.read",
    })?;
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

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// NDJSON files, or folders of them (every `*.ndjson` directly inside, as an export
    /// wrote them: `Patient-1.ndjson`, `Patient.000.ndjson`); each file's type is its name up
    /// to the first `-` or `.`. They must be under one of the server's --import-dir folders:
    /// the server reads them itself.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The FHIR base URL (`https://<service>.azurehealthcareapis.com:8080`, or the server's
    /// address for the default service).
    #[arg(
        long,
        env = "FHIRLINK_FHIR_URL",
        default_value = "https://127.0.0.1:8080"
    )]
    fhir_url: String,
    /// Connect to this address instead of what the URL's host resolves to (`IP:PORT`).
    #[arg(long)]
    connect_to: Option<std::net::SocketAddr>,
    /// The FHIR service: the audience of the token minted with --data's key.
    #[arg(long, default_value = "default")]
    service: String,
    /// `IncrementalLoad` (keeps versionId, lastUpdated, history and soft deletes; the
    /// server's default) or `InitialLoad` (creates only).
    #[arg(long)]
    mode: Option<String>,
    /// A bearer token to send instead of minting one.
    #[arg(long, env = "FHIRLINK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's data folder: its CA certificate is trusted and its signing key mints the
    /// token (principal --principal, scope system/*.write) unless --token is given.
    #[arg(long, env = "FHIRLINK_DATA", default_value = "./fhirlink-data")]
    data: PathBuf,
    /// The principal a minted token names (it needs the FHIR Data Importer role).
    #[arg(long, env = "FHIRLINK_PRINCIPAL", default_value = "admin")]
    principal: String,
    /// CA certificate (PEM) to trust [default: <data>/tls/ca.pem when it exists].
    #[arg(long, env = "FHIRLINK_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Give up when the import has not finished after this many seconds.
    #[arg(long, default_value_t = 86_400)]
    timeout: u64,
}

/// The `(type, file: URL)` inputs of the paths given: files as they are, folders' `*.ndjson`
/// files sorted by name.
fn import_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "ndjson"))
                .collect();
            inside.sort();
            if inside.is_empty() {
                anyhow::bail!("{}: no .ndjson file in the folder", p.display());
            }
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    let mut inputs = Vec::new();
    for f in files {
        let real = std::fs::canonicalize(&f).with_context(|| format!("{}", f.display()))?;
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rtype = name.split(['-', '.']).next().unwrap_or_default().to_owned();
        if !fhir_model::r4().is_resource_type(&rtype) {
            anyhow::bail!(
                "{}: the file's name does not start with an R4 resource type (Patient-1.ndjson)",
                f.display()
            );
        }
        let path = real
            .to_str()
            .with_context(|| format!("{}: the path is not UTF-8", real.display()))?;
        let encoded: String = percent_encoding::utf8_percent_encode(path, PATH_SET).collect();
        inputs.push((rtype, format!("file://{encoded}")));
    }
    Ok(inputs)
}

/// What a path keeps unescaped in a `file:` URL.
const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let inputs = import_inputs(&args.paths)?;
    let (base, http, token) = connect(&Connection {
        fhir_url: &args.fhir_url,
        connect_to: args.connect_to,
        ca_cert: args.ca_cert.as_ref(),
        data: &args.data,
        token: args.token.as_deref(),
        principal: &args.principal,
        service: &args.service,
        scope: "system/*.write",
    })?;
    let files = inputs.len();
    let request = ImportRequest {
        base,
        inputs,
        mode: args.mode.clone(),
        token: Some(token),
        timeout: Duration::from_secs(args.timeout),
    };
    let started = Instant::now();
    let bars = Bars::new();
    bars.log(&format!("importing {files} files"));
    let result = fhir_bulk_client::import(&http, &request, &bars).await;
    bars.bar.finish_and_clear();
    let done = result.context("the import")?;
    let secs = started.elapsed().as_secs_f64();
    let skipped = done.manifest["extension"]["skipped"].as_u64().unwrap_or(0);
    eprintln!(
        "imported {} resources from {files} files in {secs:.1} s ({:.0} resources/s); {skipped} already stored, {} lines refused",
        done.resources,
        done.resources as f64 / secs.max(0.001),
        done.errors,
    );
    if done.errors > 0 {
        for e in done.manifest["error"].as_array().into_iter().flatten() {
            eprintln!(
                "  {} refused lines of {}: {}",
                e["count"],
                e["inputUrl"].as_str().unwrap_or("?"),
                e["url"].as_str().unwrap_or("?")
            );
        }
        anyhow::bail!(
            "{} lines were refused (the others were imported); each is listed with its line number in the error files above",
            done.errors
        );
    }
    Ok(())
}
