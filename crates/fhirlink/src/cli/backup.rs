//! `fhirlink backup --to FILE` asks a running server for an online backup
//! (`POST /fhirlink/backup`) and writes it atomically: a private temporary file beside FILE,
//! checked whole, synced, then renamed. `fhirlink restore --from FILE --data DIR` lays a
//! backup down offline: it refuses a folder a running server holds, or one with data in it
//! unless `--force`, checks the backup, unpacks it beside DIR and swaps it in with renames.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use fhir_store_sqlite::{lock_data_folder, verify_database, DATABASE_FILE, FOLDER_LOCK_FILE};
use reqwest::Method;
use serde_json::Value;

use super::client::{ArmClient, Connection};
use crate::backup::read_archive;

/// How long the whole backup call may take (snapshot and transfer).
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

#[derive(Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    conn: Connection,
    /// Where to write the backup (a tar archive, mode 0600: it holds the signing and CA keys).
    #[arg(long)]
    to: PathBuf,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The backup to restore (made by `fhirlink backup`).
    #[arg(long)]
    from: PathBuf,
    /// The data folder to restore into; the server must not be running on it.
    #[arg(long, env = "FHIRLINK_DATA", default_value = "./fhirlink-data")]
    data: PathBuf,
    /// Replace a data folder that has data in it (its contents are moved aside to
    /// `<data>.replaced-<time>`, not deleted).
    #[arg(long)]
    force: bool,
}

/// `fhirlink backup --to FILE`.
pub(crate) async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let client = ArmClient::new(&args.conn)?;
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    if progress {
        eprint!("taking the snapshot on the server…");
    }
    let mut resp = client
        .request(Method::POST, link_model::BACKUP_PATH)
        .timeout(BACKUP_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("POST {}", link_model::BACKUP_PATH))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let code = v.pointer("/error/code").and_then(Value::as_str);
        let message = v.pointer("/error/message").and_then(Value::as_str);
        if progress {
            eprintln!();
        }
        bail!(
            "backup refused: {} {}: {}",
            status.as_u16(),
            code.unwrap_or_else(|| status.canonical_reason().unwrap_or("Error")),
            message.unwrap_or("")
        );
    }
    let total = resp.content_length();
    let tmp = partial_path(&args.to)?;
    let written = async {
        let mut out = private_file(&tmp)?;
        let mut received = 0_u64;
        let mut shown = Instant::now();
        while let Some(chunk) = resp.chunk().await.context("receiving the backup")? {
            out.write_all(&chunk)
                .with_context(|| format!("writing {}", tmp.display()))?;
            received += chunk.len() as u64;
            if progress && shown.elapsed().as_millis() >= 100 {
                shown = Instant::now();
                eprint!("\r{}", progress_line(received, total));
            }
        }
        if progress {
            eprintln!("\r{}", progress_line(received, total));
        }
        if total.is_some_and(|t| t != received) {
            bail!("the backup arrived incomplete ({received} bytes)");
        }
        out.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        // A backup that cannot be restored is worse than none: checked whole before it
        // takes FILE's name.
        let manifest = read_archive(&tmp, None)?;
        Ok::<_, anyhow::Error>((received, manifest))
    }
    .await;
    let (bytes, manifest) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &args.to)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.to.display()))?;
    sync_dir(parent_of(&args.to))?;
    let db = manifest.files.first().map_or(0, |f| f.bytes);
    println!(
        "backup written to {}: {bytes} bytes ({}; database {}, {} key and certificate files) in {:.2} s",
        args.to.display(),
        mib(bytes),
        mib(db),
        manifest.files.len() - 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn progress_line(received: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!(
            "received {} of {} ({}%)   ",
            mib(received),
            mib(t),
            received * 100 / t
        ),
        _ => format!("received {}   ", mib(received)),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `fhirlink restore --from FILE --data DIR [--force]`.
pub(crate) fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let data = &args.data;
    let exists = data.exists();
    // Held to the end: no server starts on the folder while it is being replaced.
    let _lock = if exists {
        anyhow::ensure!(data.is_dir(), "{} is not a folder", data.display());
        Some(lock_data_folder(data).map_err(|e| {
            anyhow::anyhow!(
                "{e}: stop the fhirlink server that uses {} before restoring into it",
                data.display()
            )
        })?)
    } else {
        None
    };
    let has_data = exists
        && std::fs::read_dir(data)?
            .filter_map(Result::ok)
            .any(|e| e.file_name() != FOLDER_LOCK_FILE);
    if has_data && !args.force {
        bail!(
            "{} is not empty: restore into a new folder, or pass --force to replace it (its contents are moved aside, not deleted)",
            data.display()
        );
    }
    let parent = parent_of(data);
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = data
        .file_name()
        .and_then(|n| n.to_str())
        .context("--data must name a folder")?;
    let staging = parent.join(format!(".{name}.restore-{}", uuid::Uuid::new_v4()));
    let unpacked = read_archive(&args.from, Some(&staging)).and_then(|m| {
        let info = verify_database(&staging.join(DATABASE_FILE))
            .map_err(|e| anyhow::anyhow!("{} is corrupted: {e}", args.from.display()))?;
        sync_tree(&staging)?;
        Ok((m, info))
    });
    let (manifest, info) = match unpacked {
        Ok(u) => u,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let mut replaced = None;
    if exists {
        if has_data {
            let aside = parent.join(format!(
                "{name}.replaced-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ));
            std::fs::rename(data, &aside)
                .with_context(|| format!("moving {} aside", data.display()))?;
            replaced = Some(aside);
        } else {
            std::fs::remove_dir_all(data)
                .with_context(|| format!("removing the empty {}", data.display()))?;
        }
    }
    std::fs::rename(&staging, data)
        .with_context(|| format!("moving the restored data into {}", data.display()))?;
    sync_dir(parent)?;
    println!(
        "restored {} (taken {}, fhirlink {}) into {}: {} FHIR services, {} resources, {} control-plane documents",
        args.from.display(),
        manifest.created,
        manifest.fhirlink_version,
        data.display(),
        info.services.len(),
        info.resources,
        info.documents
    );
    if let Some(aside) = replaced {
        println!("the folder's previous contents are in {}", aside.display());
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.partial-<pid>` beside `to`.
fn partial_path(to: &Path) -> anyhow::Result<PathBuf> {
    let name = to
        .file_name()
        .and_then(|n| n.to_str())
        .context("--to must name a file")?;
    anyhow::ensure!(!to.is_dir(), "{} is a folder", to.display());
    Ok(parent_of(to).join(format!(".{name}.partial-{}", std::process::id())))
}

/// A new file readable by the owner alone (a backup holds secret keys).
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Syncs every folder under `dir` (the files were synced as they were written).
fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}
