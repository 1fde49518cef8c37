//! `fhirlink serve`: opens the store once, starts the control plane on it, and serves the
//! FHIR data plane and the management API side by side until a shutdown signal, which stops
//! both gracefully.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use fhir_api::{ApiConfig, AppState};
use fhir_store::Store;
use fhir_store_sqlite::SqliteStore;

use crate::admin;

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
    #[command(flatten)]
    admin: admin::AdminArgs,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = SqliteStore::open(&args.data)
        .with_context(|| format!("opening the store in {}", args.data.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
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
    let config = ApiConfig {
        dns_suffix: args.dns_suffix,
        max_body_bytes: args.max_body_bytes,
        max_bundle_entries: args.max_bundle_entries,
        ..ApiConfig::default()
    };
    let app = fhir_api::router(AppState::new(store, config));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let admin = admin::AdminServer::bind(&args.admin, &args.data, Arc::new(control_plane)).await?;

    // Tests and scripts read these lines to find ephemeral ports; the data plane's comes
    // first. Whoever reads them may close the pipe afterwards: that is not an error here.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "fhirlink listening on http://{addr}");
    let _ = writeln!(out, "fhirlink admin listening on {}", admin.url());
    if let Some(ca) = admin.ca_path() {
        let _ = writeln!(out, "fhirlink admin CA certificate: {}", ca.display());
    }
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
    // Either plane ending ends the other: one process, both planes or none.
    let data_tx = stop_tx.clone();
    let (data_stopped, admin_stopped) = (stopped(), stopped());
    let data_plane = async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(data_stopped)
            .await
            .context("serving the data plane");
        let _ = data_tx.send(true);
        result
    };
    let admin_plane = async move {
        admin.run(admin_stopped).await;
        let _ = stop_tx.send(true);
    };
    let (data_result, ()) = tokio::join!(data_plane, admin_plane);
    data_result
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
