//! The `fhirlink` binary: the command line and the composition root, the only crate that
//! sees every plane. `serve` opens the store, builds the routers and binds the listeners;
//! `token` mints management tokens; the other commands are a management client that talks to
//! a running server's ARM-shaped API over HTTPS like any other client.

mod admin;
mod audit;
mod audit_query;
mod backup;
mod cli;
mod diagnose;
mod jti;
mod metrics;
mod network;
mod serve;
mod shard;
mod telemetry;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers on
/// whichever worker thread serves it, and the ingest's index rows likewise; measured in
/// BENCHMARKS.md (reads, ingest).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the server: the FHIR data plane and the management API.
    Serve(Box<serve::ServeArgs>),
    /// Print a token for a principal (signed with the data folder's key): for the management
    /// API, or with --service for a FHIR service's data plane.
    Token(cli::TokenArgs),
    /// Print a one-time sign-in URL for the web console (served by the management API at
    /// `/`), for --principal.
    Console(cli::ConsoleArgs),
    /// Resource groups.
    Group(cli::GroupCommand),
    /// FHIR services (Microsoft.HealthcareApis/services) and their private endpoint
    /// connections.
    Fhir(cli::FhirCommand),
    /// Virtual networks, private endpoints and private DNS zones (Microsoft.Network).
    Network(cli::NetworkCommand),
    /// Role assignments: who may do what where.
    Role(cli::RoleCommand),
    /// SMART Backend Services clients of a FHIR service: their public keys and the system/
    /// scopes its token endpoint may grant them.
    Client(cli::ClientCommand),
    /// Any management call by resource id: get, put, patch, delete, post.
    Arm(cli::ArmCommand),
    /// Look a name up as a client at an address sees it (a real DNS query from there).
    Nslookup(cli::NslookupArgs),
    /// Explain the path a client at an address takes to a FHIR service, and what to fix.
    Diagnose(cli::DiagnoseArgs),
    /// Take an online backup of a running server (its data, control plane and keys) into a
    /// file.
    Backup(cli::BackupArgs),
    /// Restore a backup into a data folder, with the server stopped.
    Restore(cli::RestoreArgs),
    /// Bulk-export a FHIR service ($export: kick-off, poll, download) into a folder.
    Export(cli::ExportArgs),
    /// Bulk-import NDJSON files or folders of them ($import: kick-off, poll) into a FHIR
    /// service; the files must be under one of the server's --import-dir folders.
    Import(cli::ImportArgs),
    /// Move a FHIR server's data into a fhirlink service: a Bulk Data export from any server
    /// that speaks the IG, downloaded, imported, repeatable with --since for catch-up windows,
    /// and --verify comparing both sides.
    Migrate(cli::MigrateArgs),
    /// Move the store: `store copy --from DATA --to postgres://…` (server stopped).
    #[command(subcommand)]
    Store(cli::StoreCommand),
}

fn main() -> std::process::ExitCode {
    let spec = std::env::var("FHIRLINK_LOG").unwrap_or_else(|_| "info".into());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !spec.contains("hickory") {
        // hickory-server logs every DNS query at info; its warnings are enough here.
        if let Ok(d) = "hickory_server=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    // Logs are written by a background thread: a request never waits for stderr (the
    // access decisions are logged per request). The guard flushes them at exit.
    let (writer, _log_guard) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    // One crypto provider for every TLS connection, server and client: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command {
                    Command::Serve(args) => serve::serve(*args).await,
                    Command::Token(args) => cli::token(args),
                    Command::Console(a) => cli::console(a).await,
                    Command::Group(c) => cli::run_group(c).await,
                    Command::Fhir(c) => cli::run_fhir(c).await,
                    Command::Network(c) => cli::run_network(c).await,
                    Command::Role(c) => cli::run_role(c).await,
                    Command::Client(c) => cli::run_client(c).await,
                    Command::Arm(c) => cli::run_arm(c).await,
                    Command::Nslookup(a) => cli::nslookup(a).await,
                    Command::Diagnose(a) => cli::diagnose(a).await,
                    Command::Backup(a) => cli::backup(a).await,
                    Command::Restore(a) => cli::restore(a),
                    Command::Export(a) => cli::export(a).await,
                    Command::Import(a) => cli::import(a).await,
                    Command::Migrate(a) => cli::migrate(a).await,
                    Command::Store(c) => cli::run_store(c).await,
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
