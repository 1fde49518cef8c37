//! `fhirlink serve`: opens the store once, starts the control plane on it, connects the
//! network plane (the gateway's listeners and the DNS server) to it, and serves the FHIR
//! data plane, the management API and DNS side by side until a shutdown signal, which stops
//! them all gracefully. Both HTTP planes report every request to one [`Telemetry`] (audit
//! records and metrics).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fhir_api::{ApiConfig, AppState};
use fhir_store::Store;
use fhir_store_sqlite::SqliteStore;
use link_dns::{DnsConfig, DnsServer};
use link_gateway::auth::{self as data_auth, DataAuth};
use link_gateway::{ConnectionLimits, Gateway, GatewayConfig};

use crate::admin;
use crate::diagnose::Diagnostics;
use crate::network::Wire;
use crate::telemetry::Telemetry;
use link_auth::service_tls::DataPlaneCertificates;

/// `--auth`: whether data-plane requests need a token (the command line's spelling of
/// [`data_auth::AuthMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    /// Every request but the CapabilityStatement carries a verified bearer token.
    Tokens,
    /// No tokens: everyone may do everything. For local experiments only.
    None,
}

impl From<AuthMode> for data_auth::AuthMode {
    fn from(mode: AuthMode) -> data_auth::AuthMode {
        match mode {
            AuthMode::Tokens => data_auth::AuthMode::Tokens,
            AuthMode::None => data_auth::AuthMode::None,
        }
    }
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address of the public FHIR listener; its root is the FHIR base URL.
    #[arg(long, env = "FHIRLINK_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder of the embedded store (SQLite), created on first start; it also keeps the
    /// management API's token signing key and TLS certificate authority.
    #[arg(long, env = "FHIRLINK_DATA", default_value = "./fhirlink-data")]
    data: PathBuf,
    /// DNS suffix of service host names: Host `<service>.<suffix>` selects `<service>`.
    #[arg(
        long,
        env = "FHIRLINK_DNS_SUFFIX",
        default_value = "azurehealthcareapis.com"
    )]
    dns_suffix: String,
    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "FHIRLINK_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest number of entries in a batch or transaction Bundle.
    #[arg(long, env = "FHIRLINK_MAX_BUNDLE_ENTRIES", default_value_t = 20_000)]
    max_bundle_entries: usize,
    /// FHIR services to create at start besides `default` (comma-separated names).
    #[arg(long, env = "FHIRLINK_SERVICES", value_delimiter = ',')]
    services: Vec<String>,
    /// Address of the split-horizon DNS server (UDP and TCP).
    #[arg(long, env = "FHIRLINK_DNS_LISTEN", default_value = "127.0.0.1:5353")]
    dns_listen: SocketAddr,
    /// A DNS server to forward names to that are not fhirlink's (`IP` or `IP:PORT`);
    /// without one they are refused.
    #[arg(long, env = "FHIRLINK_DNS_UPSTREAM", value_parser = parse_upstream)]
    dns_upstream: Option<SocketAddr>,
    /// The address DNS gives for the public endpoint (`<service>-public.<suffix>`); by
    /// default the --listen address, or 127.0.0.1 when that is a wildcard.
    #[arg(long, env = "FHIRLINK_PUBLIC_IP")]
    public_ip: Option<Ipv4Addr>,
    /// Data-plane authentication: `tokens` (a verified bearer token on every request but
    /// the CapabilityStatement), or `none` (everyone may do everything; for local
    /// experiments only).
    #[arg(long, env = "FHIRLINK_AUTH", value_enum, default_value = "tokens")]
    auth: AuthMode,
    /// Serve the data plane over plain HTTP instead of HTTPS.
    #[arg(long, env = "FHIRLINK_PLAIN_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    plain_http: bool,
    /// PEM certificate chain of the data plane (every service, every listener); without
    /// it, certificates signed by the data folder's CA are made for each service.
    #[arg(long, env = "FHIRLINK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FHIRLINK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// At most one fetch of an OIDC issuer's keys per this many seconds, however many
    /// tokens name unknown keys (a rotated key is picked up on its first use after that).
    #[arg(long, env = "FHIRLINK_OIDC_REFRESH_INTERVAL", default_value_t = 30)]
    oidc_refresh_interval: u64,
    /// Folder of the audit log (`audit.ndjson`, and `diagnostics/` for the exports of
    /// diagnostic settings); default `<data>/audit`.
    #[arg(long, env = "FHIRLINK_AUDIT_DIR")]
    audit_dir: Option<PathBuf>,
    /// Data plane and management API: how long a client may take to finish the TLS handshake (`10s`, `300ms`,
    /// `2m`).
    #[arg(long, env = "FHIRLINK_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Data plane and management API: how long a client may take to send a request's head, the first one from
    /// the moment it connected, a later one from its first byte.
    #[arg(long, env = "FHIRLINK_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Data plane and management API: how long a kept-alive connection may sit with no request before it is
    /// closed (HTTP/2: GOAWAY).
    #[arg(long, env = "FHIRLINK_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Data plane and management API: how long a request body may stop arriving (answered 408), or a response
    /// stop being read (the connection is closed).
    #[arg(long, env = "FHIRLINK_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Data plane and management API: most connections open at once from one client (an IPv4 address, an IPv6
    /// /64); more are closed at accept.
    #[arg(
        long,
        env = "FHIRLINK_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 256
    )]
    max_connections_per_source: usize,
    /// Data plane: most connections open at once on all its listeners; by default seven
    /// eighths of what the open-files limit leaves (the management API has the rest).
    #[arg(long, env = "FHIRLINK_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Data plane: the longest one search may run; past it the search is stopped and
    /// answered 422 with an OperationOutcome (`too-costly`).
    #[arg(long, env = "FHIRLINK_SEARCH_TIME_LIMIT", default_value = "10s", value_parser = parse_duration)]
    search_time_limit: Duration,
    /// Bulk export: jobs running at once per service; a further kick-off is answered 429
    /// with Retry-After.
    #[arg(long, env = "FHIRLINK_BULK_MAX_JOBS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    bulk_max_jobs: u16,
    /// Bulk export: how long a finished job's manifest and files are kept before they are
    /// deleted (`24h`, `30m`).
    #[arg(long, env = "FHIRLINK_BULK_RETENTION", default_value = "24h", value_parser = parse_duration)]
    bulk_retention: Duration,
    /// Bulk export: resources per output file before the next `Type-N.ndjson` is started.
    #[arg(long, env = "FHIRLINK_BULK_FILE_LINES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    bulk_file_lines: u64,
    /// Bulk export: where the output files are written; default `<data>/bulk`.
    #[arg(long, env = "FHIRLINK_BULK_DIR")]
    bulk_dir: Option<PathBuf>,
    /// Bulk import: a folder `$import` may read `file:` inputs from (repeat for more; links
    /// and `..` are resolved before the check). Without one, `$import` takes no files.
    #[arg(
        long = "import-dir",
        env = "FHIRLINK_IMPORT_DIR",
        value_delimiter = ','
    )]
    import_dirs: Vec<PathBuf>,
    /// Bulk import: an `https:` URL prefix `$import` may read inputs from (another server's
    /// export files; repeat for more). Only URLs on its host and port, under its path, are
    /// fetched; redirects are not followed. Without one, `$import` takes no https inputs.
    #[arg(
        long = "import-url",
        env = "FHIRLINK_IMPORT_URL",
        value_delimiter = ','
    )]
    import_urls: Vec<String>,
    /// Bulk import: `PREFIX=FILE`, a file holding the bearer token sent with requests under
    /// the --import-url PREFIX (read at each download, so a renewed token is picked up).
    #[arg(
        long = "import-url-token",
        env = "FHIRLINK_IMPORT_URL_TOKEN",
        value_delimiter = ','
    )]
    import_url_tokens: Vec<String>,
    /// SMART Backend Services: CA certificates (PEM) trusted, besides the system's roots,
    /// when a registered client's `jwksUrl` is fetched.
    #[arg(long, env = "FHIRLINK_SMART_JWKS_CA")]
    smart_jwks_ca: Option<PathBuf>,
    /// Bulk import: CA certificates (PEM) trusted for https inputs besides the system's roots.
    #[arg(long, env = "FHIRLINK_IMPORT_CA")]
    import_ca: Option<PathBuf>,
    /// Bulk import: lines per chunk, parsed and indexed together and written in one store
    /// transaction (larger chunks write faster and hold the service's writer longer).
    #[arg(long, env = "FHIRLINK_IMPORT_CHUNK_LINES", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    import_chunk_lines: u64,
    /// Where the FHIR data and the control plane's documents are kept: `sqlite`, the
    /// embedded store in --data (the default), or a PostgreSQL URL
    /// (`postgres://user[:password]@host:port/database`, TLS by `?sslmode=` disable, prefer
    /// (the default), require, verify-ca or verify-full and `sslrootcert=FILE`, as libpq
    /// reads them; its schema is created or checked at start). The keys, certificates, audit
    /// log and export files stay in --data either way.
    #[arg(
        long,
        env = "FHIRLINK_STORE",
        default_value = "sqlite",
        hide_env_values = true
    )]
    store: String,
    /// PostgreSQL store: the most connections the pool opens.
    #[arg(long, env = "FHIRLINK_STORE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    store_pool_size: u16,
    /// PostgreSQL store: the longest one statement may run (waiting for a service's writer
    /// counts); past it the request is answered 503.
    #[arg(long, env = "FHIRLINK_STORE_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    store_statement_timeout: Duration,
    /// PostgreSQL store: the longest opening a connection, or waiting for a free one, may
    /// take.
    #[arg(long, env = "FHIRLINK_STORE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    store_connect_timeout: Duration,
    /// Several nodes on one PostgreSQL store: this node's id in the store's node table
    /// (default: a new random one per start).
    #[arg(long, env = "FHIRLINK_NODE_ID")]
    node_id: Option<String>,
    /// Several nodes: how often this node writes its heartbeat (and the longest it waits
    /// between reads of the change feed).
    #[arg(long, env = "FHIRLINK_NODE_HEARTBEAT", default_value = "1s", value_parser = parse_duration)]
    node_heartbeat: Duration,
    /// Several nodes: how long a management change waits for every live node to enforce it
    /// (past it the answer names the lagging nodes in `x-fhirlink-lagging-nodes`), and how
    /// long a node that cannot read the change feed goes on serving the data plane (then it
    /// answers 503).
    #[arg(long, env = "FHIRLINK_PLAN_WAIT", default_value = "5s", value_parser = parse_duration)]
    plan_wait: Duration,
    #[command(flatten)]
    admin: admin::AdminArgs,
}

/// A store URL with its password replaced, for messages and logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (store, sqlite): (Arc<dyn Store>, Option<Arc<SqliteStore>>) = if args.store == "sqlite" {
        let store = SqliteStore::open(&args.data)
            .with_context(|| format!("opening the store in {}", args.data.display()))?
            .with_search_time_limit(args.search_time_limit);
        let sqlite = Arc::new(store);
        (sqlite.clone(), Some(sqlite))
    } else if args.store.starts_with("postgres://") || args.store.starts_with("postgresql://") {
        std::fs::create_dir_all(&args.data)
            .with_context(|| format!("creating the data folder {}", args.data.display()))?;
        let config = fhir_store_postgres::PgConfig {
            pool_size: usize::from(args.store_pool_size),
            statement_timeout: args.store_statement_timeout,
            connect_timeout: args.store_connect_timeout,
            search_time_limit: args.search_time_limit,
            ..fhir_store_postgres::PgConfig::default()
        };
        let store = fhir_store_postgres::PgStore::connect(&args.store, config)
            .await
            .with_context(|| format!("opening the store {}", redacted(&args.store)))?;
        tracing::info!(store = %redacted(&args.store), "PostgreSQL store");
        (Arc::new(store), None)
    } else {
        anyhow::bail!(
            "--store must be sqlite or a postgres:// URL, not '{}'",
            redacted(&args.store)
        );
    };
    let shared_store = sqlite.is_none();
    let backups = Arc::new(crate::backup::Backups::new(sqlite, &args.data));
    store
        .create_service(fhir_api::DEFAULT_SERVICE)
        .await
        .context("creating the default service")?;
    for name in &args.services {
        anyhow::ensure!(
            valid_service_name(name),
            "service name '{name}' must be 3-24 lowercase letters and digits"
        );
        store
            .create_service(name)
            .await
            .with_context(|| format!("creating service {name}"))?;
    }
    let control_plane = link_api::ControlPlane::open(store.clone(), &args.admin.owner)
        .await
        .context("opening the control plane")?;
    let control_plane = Arc::new(control_plane);
    // Every data-plane service is an ARM resource: those fhirlink made itself (`default`,
    // `--services`, or left by an older version) are adopted into the home resource group,
    // and the owner may use their data (FHIR Data Contributor).
    for name in store
        .list_services()
        .await
        .context("listing the FHIR services")?
    {
        if control_plane
            .adopt_service(&name, &args.admin.owner)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
            .with_context(|| format!("making FHIR service '{name}' a managed resource"))?
        {
            tracing::info!(service = %name, group = link_api::HOME_GROUP, owner = %args.admin.owner, "FHIR service adopted; the owner is its FHIR Data Contributor");
        }
    }
    // Should one remain unmanaged, its public name still resolves.
    let managed: Vec<String> = control_plane
        .snapshot()
        .of_kind(link_model::Kind::FhirService)
        .map(|r| r.name().to_lowercase())
        .collect();
    let unmanaged: Vec<String> = store
        .list_services()
        .await
        .context("listing the FHIR services")?
        .into_iter()
        .filter(|s| !managed.contains(&s.to_lowercase()))
        .collect();
    let config = ApiConfig {
        dns_suffix: args.dns_suffix.clone(),
        max_body_bytes: args.max_body_bytes,
        max_bundle_entries: args.max_bundle_entries,
        require_access: true,
        https: !args.plain_http,
        ..ApiConfig::default()
    };
    if args.auth == AuthMode::None {
        tracing::warn!("*** --auth none: the data plane takes no tokens; EVERY client that the network rules admit may read and write ALL data. For local experiments only. ***");
        eprintln!("WARNING: fhirlink runs with --auth none: no tokens, no authorization. Never use it with real data.");
    }
    let issuer = link_auth::identity::LocalIssuer::load_or_create(&args.data)
        .context("the token signing key")?;
    let verifier = issuer.verifier();
    // Every service of fhirlink's own issuer has a token endpoint for SMART Backend Services
    // clients; the assertion ids they spend are kept in the store, so that a replay is
    // refused by every node of the deployment.
    let issuing = data_auth::TokenIssuing {
        issuer: Arc::new(issuer),
        dns_suffix: args.dns_suffix.clone(),
        ledger: crate::jti::StoreLedger::new(store.clone()),
        https: !args.plain_http,
        jwks_tls: match &args.smart_jwks_ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--smart-jwks-ca {}", path.display()))?;
                Some(
                    link_auth::oidc::tls_trusting(&pem)
                        .map_err(|e| anyhow::anyhow!("--smart-jwks-ca {}: {e}", path.display()))?,
                )
            }
            None => None,
        },
    };
    let auth = DataAuth::with_token_endpoints(
        args.auth.into(),
        verifier,
        std::time::Duration::from_secs(args.oidc_refresh_interval),
        Some(issuing),
    );
    let mut bulk_config = fhir_bulk::BulkConfig::new(
        args.bulk_dir
            .clone()
            .unwrap_or_else(|| args.data.join("bulk")),
    );
    bulk_config.max_jobs_per_service = usize::from(args.bulk_max_jobs);
    bulk_config.retention = args.bulk_retention;
    bulk_config.max_resources_per_file = args.bulk_file_lines;
    for dir in &args.import_dirs {
        if !dir.is_dir() {
            anyhow::bail!("--import-dir {}: not a folder", dir.display());
        }
    }
    bulk_config.import_dirs = args.import_dirs.clone();
    bulk_config.import_urls = import_sources(&args.import_urls, &args.import_url_tokens)?;
    if !bulk_config.import_urls.is_empty() {
        let ca = match &args.import_ca {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("--import-ca {}", path.display()))?,
            ),
            None => None,
        };
        bulk_config.import_http = Some(
            fhir_bulk::remote::client(ca.as_deref())
                .map_err(|e| anyhow::anyhow!("--import-ca: {e}"))?,
        );
    }
    bulk_config.import_chunk_lines = usize::try_from(args.import_chunk_lines).unwrap_or(2000);
    let bulk = fhir_bulk::Bulk::new(store.clone(), bulk_config);
    let resumed = bulk
        .start()
        .await
        .context("starting the bulk export jobs")?;
    if resumed > 0 {
        tracing::info!(
            jobs = resumed,
            "bulk export jobs taken up again after a restart"
        );
    }
    let api = AppState::with_bulk(store, config, bulk);
    let known_services = api.known_services();
    let app = fhir_api::router(api)
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            data_auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            control_plane.clone(),
            crate::network::fence,
        ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let public_ip = args.public_ip.unwrap_or(match addr.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => ip,
        _ => Ipv4Addr::LOCALHOST,
    });

    // One audit record and the metrics of every request, on both planes.
    let audit_dir = args
        .audit_dir
        .clone()
        .unwrap_or_else(|| args.data.join("audit"));
    let telemetry = Telemetry::start(&audit_dir)
        .with_context(|| format!("starting the audit log in {}", audit_dir.display()))?;

    // The network plane: the gateway in front of the data plane, and DNS. Attaching it
    // applies the stored state (endpoint listeners bound) before anything is served.
    let certs = match (&args.tls_cert, &args.tls_key) {
        _ if args.plain_http => {
            tracing::warn!(%addr, "data plane on plain HTTP: tokens and PHI travel unencrypted");
            None
        }
        (Some(cert), Some(key)) => Some(
            DataPlaneCertificates::from_files(cert, key, &args.dns_suffix)
                .context("the data plane's TLS certificate")?,
        ),
        _ => Some(
            DataPlaneCertificates::generated(&args.data, &args.dns_suffix)
                .context("the data plane's TLS certificates")?,
        ),
    };
    let gateway = Gateway::observed(
        app,
        GatewayConfig {
            dns_suffix: args.dns_suffix.clone(),
            port: addr.port(),
            tls: match &certs {
                Some(c) => Some(c.server_config().context("the data plane's TLS")?),
                None => None,
            },
            connections: ConnectionLimits {
                handshake_timeout: args.handshake_timeout,
                header_timeout: args.header_timeout,
                idle_timeout: args.idle_timeout,
                body_timeout: args.body_timeout,
                max_per_source: args.max_connections_per_source,
                max_connections: args.max_connections.unwrap_or_else(|| {
                    let budget = link_auth::conn::connection_budget();
                    budget - budget / 8
                }),
            },
            // Refused on the declared length by the gateway, as fhir-api refuses on the read.
            max_body_bytes: args.max_body_bytes,
            ..GatewayConfig::default()
        },
        telemetry.clone(),
    );
    let dns = DnsServer::new(
        DnsConfig {
            dns_suffix: args.dns_suffix.clone(),
            public_ip,
            extra_services: unmanaged,
        },
        args.dns_upstream,
    )
    .with_context(|| format!("--dns-suffix {} is not a domain name", args.dns_suffix))?;
    let dns_sockets = link_dns::DnsSockets::bind(args.dns_listen)
        .with_context(|| format!("binding DNS on {}", args.dns_listen))?;
    let dns_addr = dns_sockets.local_addr();
    control_plane
        .attach(Arc::new(Wire {
            gateway: gateway.clone(),
            dns: dns.clone(),
            auth: auth.clone(),
            certs: certs.clone(),
            public_ip,
            telemetry: telemetry.clone(),
            services: known_services,
        }))
        .await;
    if shared_store {
        // One node of several on a shared store: follow the others' changes, register.
        let node = link_api::NodeConfig {
            id: args
                .node_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()),
            addresses: vec![
                format!(
                    "data {scheme}://{addr}",
                    scheme = if certs.is_some() { "https" } else { "http" }
                ),
                format!("dns {dns_addr}"),
            ],
            heartbeat: args.node_heartbeat,
            plan_wait: args.plan_wait,
        };
        tracing::info!(node = %node.id, "joining the other nodes on the store");
        control_plane.join(node);
    }
    let diagnostics = Arc::new(Diagnostics {
        gateway: gateway.clone(),
        dns: dns.clone(),
        dns_suffix: args.dns_suffix.clone(),
        public: SocketAddr::from((public_ip, addr.port())),
    });
    let admin = admin::AdminServer::bind(
        &args.admin,
        &args.data,
        control_plane,
        diagnostics,
        telemetry.clone(),
        backups,
        audit_dir.join("audit.ndjson"),
    )
    .await?
    // The management API keeps to the same deadlines and per-source cap as the data
    // plane; its share of the connection budget is the eighth the data plane leaves.
    .with_limits(link_auth::conn::ConnectionLimits {
        handshake_timeout: args.handshake_timeout,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        body_timeout: args.body_timeout,
        max_per_source: args.max_connections_per_source,
        max_connections: (link_auth::conn::connection_budget() / 8).max(16),
    });

    // Tests and scripts read these lines to find ephemeral ports; the data plane's comes
    // first. Whoever reads them may close the pipe afterwards: that is not an error here.
    let mut out = std::io::stdout().lock();
    let scheme = if certs.is_some() { "https" } else { "http" };
    let _ = writeln!(out, "fhirlink listening on {scheme}://{addr}");
    let _ = writeln!(out, "fhirlink admin listening on {}", admin.url());
    if let Some(ca) = admin.ca_path() {
        let _ = writeln!(out, "fhirlink admin CA certificate: {}", ca.display());
    }
    let _ = writeln!(out, "fhirlink DNS listening on {dns_addr} (udp, tcp)");
    let _ = out.flush();
    drop(out);
    tracing::info!(%addr, data = %args.data.display(), "FHIR data plane listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    // Any plane ending ends the others: one process, all planes or none.
    let (data_tx, dns_tx) = (stop_tx.clone(), stop_tx.clone());
    let (data_stopped, admin_stopped, dns_stopped) = (stopped(), stopped(), stopped());
    let endpoints = gateway.clone();
    let data_plane = async move {
        gateway.serve_public(listener, data_stopped).await;
        let _ = data_tx.send(true);
    };
    let admin_plane = async move {
        admin.run(admin_stopped).await;
        let _ = stop_tx.send(true);
    };
    let dns_plane = async move {
        dns.serve(dns_sockets, dns_stopped).await;
        let _ = dns_tx.send(true);
    };
    let closing = stopped();
    let close_endpoints = async move {
        closing.await;
        endpoints.close_endpoints();
    };
    tokio::join!(data_plane, admin_plane, dns_plane, close_endpoints);
    // The last records of the requests that just finished, synced to disk.
    let _ = tokio::task::spawn_blocking(move || telemetry.close()).await;
    Ok(())
}

/// A duration of more than zero: `300ms`, `10s`, `2m`, `24h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 300ms, 10s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "'{s}' is not a duration like 300ms, 10s, 2m or 24h"
            ))
        }
    };
    if d.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    Ok(d)
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("'{s}' is not an IP address or IP:PORT"))
}

/// Azure API for FHIR service names: 3-24 characters, lowercase letters and digits, so
/// that `<name>.<suffix>` is a valid host name.
fn valid_service_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The `--import-url` prefixes with their `--import-url-token PREFIX=FILE` files.
fn import_sources(
    urls: &[String],
    tokens: &[String],
) -> anyhow::Result<Vec<fhir_bulk::remote::RemoteSource>> {
    let mut files = std::collections::HashMap::new();
    for t in tokens {
        let (prefix, file) = t
            .split_once('=')
            .with_context(|| format!("--import-url-token {t:?}: PREFIX=FILE"))?;
        let file = PathBuf::from(file);
        if !file.is_file() {
            anyhow::bail!(
                "--import-url-token {prefix}: {} is not a file",
                file.display()
            );
        }
        if !urls.iter().any(|u| u == prefix) {
            anyhow::bail!("--import-url-token {prefix}: not one of the --import-url prefixes");
        }
        files.insert(prefix.to_owned(), file);
    }
    urls.iter()
        .map(|u| {
            fhir_bulk::remote::RemoteSource::new(u, files.get(u).cloned())
                .map_err(|e| anyhow::anyhow!("--import-url {e}"))
        })
        .collect()
}
