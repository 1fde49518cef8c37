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
    /// Where the target server is and how to authenticate to it.
    #[command(flatten)]
    target: Target,
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

/// The target server of a bulk command: where it is, how to trust it, and the token.
#[derive(Args)]
pub(crate) struct Target {
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
    /// A bearer token to send instead of minting one.
    #[arg(long, env = "FHIRLINK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's data folder: its CA certificate is trusted and its signing key mints the
    /// token (principal --principal) unless --token is given.
    #[arg(long, env = "FHIRLINK_DATA", default_value = "./fhirlink-data")]
    data: PathBuf,
    /// The principal a minted token names: it needs FHIR Data Exporter to export, FHIR Data
    /// Importer to import (and a reader role for `migrate --verify`).
    #[arg(long, env = "FHIRLINK_PRINCIPAL", default_value = "admin")]
    principal: String,
    /// CA certificate (PEM) to trust [default: <data>/tls/ca.pem when it exists, else the
    /// system's roots].
    #[arg(long, env = "FHIRLINK_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

/// An HTTP client for `url` (named by `flag` in errors): trusting only `ca` when given (for an
/// `https` URL), connecting to `connect_to` instead of what the host resolves to.
fn http_client(
    url: &str,
    flag: &str,
    ca: Option<&std::path::Path>,
    connect_to: Option<std::net::SocketAddr>,
) -> anyhow::Result<reqwest::Client> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{flag} '{url}'"))?;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("fhirlink-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600));
    if let (Some(ca), "https") = (ca, parsed.scheme()) {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    if let (Some(addr), Some(host)) = (connect_to, parsed.host_str()) {
        builder = builder.resolve(host, addr);
    }
    builder.build().context("building the HTTP client")
}

/// The HTTP client and the bearer token (`--token`, or one minted with the data folder's key).
fn connect(c: &Target, scope: &str) -> anyhow::Result<(String, reqwest::Client, String)> {
    let base = c.fhir_url.trim_end_matches('/').to_owned();
    let ca = c
        .ca_cert
        .clone()
        .or_else(|| Some(c.data.join("tls").join("ca.pem")).filter(|p| p.exists()));
    let http = http_client(&base, "--fhir-url", ca.as_deref(), c.connect_to)?;
    let token = match c.token.as_deref() {
        Some(t) => t.trim().to_owned(),
        None => LocalIssuer::load(&c.data)?.mint_with(&TokenRequest {
            subject: c.principal.clone(),
            audience: format!(
                "https://{}.{}",
                c.service.to_lowercase(),
                link_model::SERVICE_DNS_SUFFIX
            ),
            scopes: vec![scope.to_owned()],
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
    let (base, http, token) = connect(&args.target, "system/*.read")?;
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
        extra: Vec::new(),
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
    /// Where the target server is and how to authenticate to it.
    #[command(flatten)]
    target: Target,
    /// NDJSON files, or folders of them (every `*.ndjson` directly inside, as an export
    /// wrote them: `Patient-1.ndjson`, `Patient.000.ndjson`); each file's type is its name up
    /// to the first `-` or `.`. They must be under one of the server's --import-dir folders:
    /// the server reads them itself.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `IncrementalLoad` (keeps versionId, lastUpdated, history and soft deletes; the
    /// server's default) or `InitialLoad` (creates only).
    #[arg(long)]
    mode: Option<String>,
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
    let (base, http, token) = connect(&args.target, "system/*.write")?;
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

#[derive(Args)]
pub(crate) struct MigrateArgs {
    /// Where the target server is and how to authenticate to it.
    #[command(flatten)]
    target: Target,
    /// The source's FHIR base URL: any server that speaks the Bulk Data IG (Azure API for
    /// FHIR, another fhirlink, …).
    #[arg(long)]
    from: String,
    /// A bearer token for the source (it needs the export right there).
    #[arg(long, env = "FHIRLINK_FROM_TOKEN", hide_env_values = true)]
    from_token: Option<String>,
    /// CA certificate (PEM) to trust for the source [default: the system's roots].
    #[arg(long)]
    from_ca_cert: Option<PathBuf>,
    /// Connect to this address for the source instead of what its host resolves to.
    #[arg(long)]
    from_connect_to: Option<std::net::SocketAddr>,
    /// Ask the source for every version and its soft deletes
    /// (`includeAssociatedData=_history,_deleted`, Azure's form), so history comes along.
    #[arg(long)]
    history: bool,
    /// Only what changed since this instant: a catch-up window after an earlier run (each
    /// run prints the instant the next one starts from).
    #[arg(long)]
    since: Option<String>,
    /// Resource types to move (repeat, or comma-separated); default all.
    #[arg(long = "type")]
    types: Vec<String>,
    /// The folder the export is downloaded to and imported from: it must be under one of
    /// the target server's --import-dir folders. A run interrupted after its download goes
    /// on from it (the import is idempotent for versioned lines).
    #[arg(long)]
    work: PathBuf,
    /// After the import, compare the count of every exported type on both sides
    /// (`_summary=count`) and a sample of resources (`--sample` per type) byte for byte as
    /// JSON; a difference fails the run.
    #[arg(long)]
    verify: bool,
    /// Resources per type compared by --verify.
    #[arg(long, default_value_t = 5)]
    sample: usize,
    /// Give up when the export or the import has not finished after this many seconds.
    #[arg(long, default_value_t = 86_400)]
    timeout: u64,
}

/// `<work>/migrate.json`: where a run got to, so that a run again goes on from there.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct MigrateState {
    /// The export request this download answers (source, since, types, history).
    request: String,
    /// The download is complete (every file checked against the manifest).
    downloaded: bool,
    /// The manifest's transactionTime: the next catch-up's --since.
    transaction_time: Option<String>,
    imported: bool,
}

pub(crate) async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let source = http_client(
        &args.from,
        "--from",
        args.from_ca_cert.as_deref(),
        args.from_connect_to,
    )?;
    let from = args.from.trim_end_matches('/').to_owned();
    let from_token = args.from_token.as_deref().map(str::trim);
    let (base, target, token) = connect(&args.target, "system/*.*")?;
    let types: Vec<String> = args
        .types
        .iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let request = ExportRequest {
        base: from.clone(),
        level: String::new(),
        types,
        since: args.since.clone(),
        type_filters: Vec::new(),
        extra: if args.history {
            vec![("includeAssociatedData".into(), "_history,_deleted".into())]
        } else {
            Vec::new()
        },
        token: from_token.map(str::to_owned),
        out: args.work.join("export"),
        timeout: Duration::from_secs(args.timeout),
    };
    let kick_off = fhir_bulk_client::kick_off_url(&request);
    std::fs::create_dir_all(&args.work)
        .with_context(|| format!("creating {}", args.work.display()))?;
    let state_path = args.work.join("migrate.json");
    let mut state: MigrateState = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &MigrateState| s.request == kick_off && s.downloaded)
        .unwrap_or_default();
    let save = |s: &MigrateState| -> anyhow::Result<()> {
        let tmp = state_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &state_path)
            .with_context(|| format!("writing {}", state_path.display()))
    };
    let bars = Bars::new();
    if state.downloaded {
        bars.log(&format!(
            "the export of {kick_off} was downloaded by an earlier run: importing it"
        ));
    } else {
        // A fresh download: nothing of an earlier, different or unfinished one stays.
        let _ = std::fs::remove_dir_all(&request.out);
        state = MigrateState {
            request: kick_off.clone(),
            ..MigrateState::default()
        };
        save(&state)?;
        let exported = fhir_bulk_client::export(&source, &request, &bars)
            .await
            .context("the export from the source")?;
        state.transaction_time = exported.manifest["transactionTime"]
            .as_str()
            .map(str::to_owned);
        state.downloaded = true;
        save(&state)?;
        bars.log(&format!(
            "downloaded {} resources in {} files from {from}",
            exported.resources(),
            exported.output.len()
        ));
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(request.out.join("manifest.json"))
            .context("reading the export's manifest.json")?,
    )?;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut exported_types = std::collections::BTreeSet::new();
    for f in manifest["output"].as_array().into_iter().flatten() {
        let (Some(t), Some(url)) = (f["type"].as_str(), f["url"].as_str()) else {
            continue;
        };
        exported_types.insert(t.to_owned());
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or("");
        let path = request.out.join(name);
        if path.is_file() {
            files.push(path);
        }
    }
    let mut imported_resources = 0;
    if files.is_empty() {
        bars.log("nothing to import: the export is empty");
    } else {
        let inputs = import_inputs(&files)?;
        let done = fhir_bulk_client::import(
            &target,
            &ImportRequest {
                base: base.clone(),
                inputs,
                mode: Some("IncrementalLoad".into()),
                token: Some(token.clone()),
                timeout: Duration::from_secs(args.timeout),
            },
            &bars,
        )
        .await
        .context("the import into the target")?;
        imported_resources = done.resources;
        if done.errors > 0 {
            bars.bar.finish_and_clear();
            for e in done.manifest["error"].as_array().into_iter().flatten() {
                eprintln!(
                    "  {} refused lines of {}: {}",
                    e["count"],
                    e["inputUrl"].as_str().unwrap_or("?"),
                    e["url"].as_str().unwrap_or("?")
                );
            }
            anyhow::bail!(
                "{} lines were refused by the target (the others were imported)",
                done.errors
            );
        }
        bars.log(&format!(
            "imported {} resources ({} already there)",
            done.resources,
            done.manifest["extension"]["skipped"].as_u64().unwrap_or(0)
        ));
    }
    state.imported = true;
    save(&state)?;
    let mut differences = Vec::new();
    if args.verify {
        for t in &exported_types {
            let a = count(&source, &from, from_token, t).await?;
            let b = count(&target, &base, Some(&token), t).await?;
            if a == b {
                bars.log(&format!("verify {t}: {a} on both"));
            } else {
                differences.push(format!("{t}: {a} at the source, {b} at the target"));
            }
        }
        // A sample of each type, from the files: the same JSON on both sides.
        for path in &files {
            let text = std::fs::read_to_string(path)?;
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(args.sample)
            {
                let v: serde_json::Value = serde_json::from_str(line)?;
                let (Some(t), Some(id)) = (v["resourceType"].as_str(), v["id"].as_str()) else {
                    continue;
                };
                let a = read(&source, &from, from_token, t, id).await?;
                let b = read(&target, &base, Some(&token), t, id).await?;
                if a != b {
                    differences.push(format!(
                        "{t}/{id} differs between the source and the target"
                    ));
                }
            }
        }
    }
    bars.bar.finish_and_clear();
    eprintln!(
        "migrated {imported_resources} resources from {from} to {base} in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        match &state.transaction_time {
            Some(t) => format!("; the next catch-up: --since {t}"),
            None => String::new(),
        }
    );
    if !differences.is_empty() {
        anyhow::bail!(
            "verify found {} differences:\n  {}",
            differences.len(),
            differences.join("\n  ")
        );
    }
    if args.verify {
        eprintln!(
            "verified: the same count of every type on both sides, and the sampled resources equal"
        );
    }
    Ok(())
}

/// `[base]/[type]?_summary=count`'s total.
async fn count(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    rtype: &str,
) -> anyhow::Result<u64> {
    let mut req = http
        .get(format!("{base}/{rtype}?_summary=count"))
        .header("accept", "application/fhir+json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    match v["total"].as_u64() {
        Some(n) if status.is_success() => Ok(n),
        _ => anyhow::bail!("{base}/{rtype}?_summary=count answered {status}: {v}"),
    }
}

/// The current version of a resource as JSON (`None` when it is gone: 404 or 410).
async fn read(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    rtype: &str,
    id: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut req = http
        .get(format!("{base}/{rtype}/{id}"))
        .header("accept", "application/fhir+json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    match resp.status().as_u16() {
        200 => Ok(Some(resp.json().await?)),
        404 | 410 => Ok(None),
        s => anyhow::bail!("{base}/{rtype}/{id} answered {s}"),
    }
}
