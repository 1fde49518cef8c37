//! `fhirlink store copy`: a deployment's store moved from the embedded SQLite folder into
//! PostgreSQL, with the server stopped — every service, every version with its number and
//! instant, the histories in commit order, and the control plane's documents
//! ([`fhir_store::copy`]), with a progress bar (log lines when stderr is not a terminal).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use fhir_store::copy::CopyProgress;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy the SQLite store of a data folder into an empty PostgreSQL database (the server
    /// must be stopped; afterwards run it with `--store URL` and the same `--data`, which
    /// keeps the keys, certificates, audit log and bulk files).
    Copy(CopyArgs),
}

#[derive(Args)]
pub(crate) struct CopyArgs {
    /// The data folder whose store is copied (its lock refuses a running server's).
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL URL to copy into (`postgres://user@host:port/db`); its schema is
    /// created, and it must hold no service yet.
    #[arg(long)]
    to: String,
}

/// The control-plane document collections a deployment has.
const COLLECTIONS: [&str; 3] = [
    link_model::DOCUMENT_COLLECTION,
    fhir_bulk::job::COLLECTION,
    fhir_bulk::import::COLLECTION,
];

struct Bar {
    terminal: bool,
    bar: ProgressBar,
    done: AtomicU64,
    total: AtomicU64,
    last_line: std::sync::Mutex<Instant>,
}

impl CopyProgress for Bar {
    fn service(&self, name: &str, versions: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(versions, Ordering::Relaxed);
        if self.terminal {
            self.bar.set_length(versions);
            self.bar.set_position(0);
            self.bar.set_message(name.to_owned());
        } else {
            eprintln!("copying service {name}: {versions} versions");
        }
    }
    fn copied(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if self.terminal {
            self.bar.inc(n);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.total.load(Ordering::Relaxed);
        if last.elapsed() >= Duration::from_secs(5) || done == total {
            *last = Instant::now();
            eprintln!("  {done} of {total} versions");
        }
    }
}

pub(crate) async fn run_store(command: StoreCommand) -> anyhow::Result<()> {
    let StoreCommand::Copy(args) = command;
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        anyhow::bail!("--to must be a postgres:// URL");
    }
    let shown = crate::serve::redacted(&args.to);
    let source = fhir_store_sqlite::SqliteStore::open(&args.from)
        .with_context(|| format!("opening the store in {}", args.from.display()))?;
    let target =
        fhir_store_postgres::PgStore::connect(&args.to, fhir_store_postgres::PgConfig::default())
            .await
            .with_context(|| format!("opening {shown}"))?;
    let terminal = std::io::stderr().is_terminal();
    let bar = Bar {
        terminal,
        bar: if terminal {
            let b = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} {bar:40} {pos}/{len} versions ({per_sec}, ETA {eta})",
            ) {
                b.set_style(style);
            }
            b
        } else {
            ProgressBar::hidden()
        },
        done: AtomicU64::new(0),
        total: AtomicU64::new(0),
        last_line: std::sync::Mutex::new(Instant::now()),
    };
    let started = Instant::now();
    let report = fhir_store::copy::copy(&source, &target, &COLLECTIONS, &bar).await;
    bar.bar.finish_and_clear();
    let report = report.with_context(|| format!("copying into {shown}"))?;
    eprintln!(
        "copied {} services, {} versions and {} control-plane documents from {} to {shown} in {:.1} s",
        report.services,
        report.versions,
        report.documents,
        args.from.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
