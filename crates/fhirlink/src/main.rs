//! The `fhirlink` binary: the command line and the composition root, the only crate that
//! sees every plane. It opens the store, builds the routers and binds the listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fhir_api::{ApiConfig, AppState};
use fhir_store::Store;
use fhir_store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(
    name = "fhirlink",
    version,
    about = "A FHIR R4 server reachable only over the network paths its owner allows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the FHIR data plane).
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address of the public FHIR listener; its root is the FHIR base URL.
    #[arg(long, env = "FHIRLINK_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder of the embedded store (SQLite), created on first start.
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FHIRLINK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
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
    // Tests and scripts read this line to find an ephemeral port.
    println!("fhirlink listening on http://{addr}");
    tracing::info!(%addr, data = %args.data.display(), "FHIR data plane listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
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
