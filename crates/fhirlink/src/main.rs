//! The `fhirlink` binary: the command line and the composition root, the only crate that
//! sees every plane. `serve` opens the store, builds the routers and binds the listeners;
//! `token` mints management tokens; the other commands are a management client that talks to
//! a running server's ARM-shaped API over HTTPS like any other client.

mod admin;
mod cli;
mod serve;

use clap::{Parser, Subcommand};

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
    Serve(serve::ServeArgs),
    /// Print a management API token for a principal (signed with the data folder's key).
    Token(cli::TokenArgs),
    /// Resource groups.
    Group(cli::GroupCommand),
    /// FHIR services (Microsoft.HealthcareApis/services) and their private endpoint
    /// connections.
    Fhir(cli::FhirCommand),
    /// Virtual networks, private endpoints and private DNS zones (Microsoft.Network).
    Network(cli::NetworkCommand),
    /// Role assignments: who may do what where.
    Role(cli::RoleCommand),
    /// Any management call by resource id: get, put, patch, delete, post.
    Arm(cli::ArmCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FHIRLINK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
                    Command::Serve(args) => serve::serve(args).await,
                    Command::Token(args) => cli::token(args),
                    Command::Group(c) => cli::run_group(c).await,
                    Command::Fhir(c) => cli::run_fhir(c).await,
                    Command::Network(c) => cli::run_network(c).await,
                    Command::Role(c) => cli::run_role(c).await,
                    Command::Arm(c) => cli::run_arm(c).await,
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
