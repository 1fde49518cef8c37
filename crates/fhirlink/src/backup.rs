//! Backups of a deployment (issue #15): what a backup archive holds, the management
//! listener's `POST /fhirlink/backup` that streams one while writes go on, and the checks
//! `fhirlink restore` makes before it lays one down.
//!
//! A backup is a tar archive (mode 0600 wherever fhirlink writes it: it holds secret keys):
//! - `fhirlink-backup.json` first, the manifest: format and version, when it was taken, and
//!   the size, mode and SHA-256 of every other entry;
//! - `fhirlink.db`: the store's online snapshot ([`SqliteStore::backup_to`]): every FHIR
//!   service's data and the control plane's state (its documents), one self-contained file
//!   as of the moment the backup began;
//! - `identity/…`: the local issuer's signing key, so that tokens it issued still verify;
//! - `tls/…`: the local CA and the certificates made with it, so that clients trusting
//!   `ca.pem` still do.
//!
//! Not in it: the audit log (append-only files, copied with the tools that rotate them) and
//! the folder's lock file. The server's part is wiring: the snapshot is the store's, the
//! permission link-model's ([`link_model::may_back_up`]).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use fhir_store_sqlite::{SqliteStore, DATABASE_FILE};
use link_model::Principal;
use serde::{Deserialize, Serialize};

/// The manifest's name, the archive's first entry.
pub(crate) const MANIFEST: &str = "fhirlink-backup.json";
/// The manifest's `format`: what makes a file a fhirlink backup.
pub(crate) const FORMAT: &str = "fhirlink-backup";
/// The archive layout this version writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The data folder's subfolders that go with the database: the issuer's key and the CA.
const KEY_FOLDERS: &[&str] = &["identity", "tls"];
/// A manifest larger than this is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The folders in the data folder a backup is prepared in (`.backup-<uuid>`).
const STAGING_PREFIX: &str = ".backup-";
/// Size of the chunks the archive is streamed in.
const CHUNK: usize = 256 * 1024;

/// The first entry of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) format: String,
    pub(crate) format_version: u32,
    pub(crate) fhirlink_version: String,
    /// RFC 3339, when the snapshot began.
    pub(crate) created: String,
    /// `PRAGMA user_version` of the database.
    pub(crate) schema_version: i64,
    /// Every other entry, in archive order; the database first.
    pub(crate) files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// Relative to the data folder, `/`-separated.
    pub(crate) path: String,
    pub(crate) bytes: u64,
    /// Unix permission bits.
    pub(crate) mode: u32,
    /// Lowercase hex.
    pub(crate) sha256: String,
}

impl Manifest {
    /// The archive's exact size: a 512-byte header per entry, its data padded to 512, and
    /// two zero blocks at the end (ustar, names under 100 bytes).
    fn archive_len(&self, manifest_len: u64) -> u64 {
        let entry = |n: u64| 512 + n.div_ceil(512) * 512;
        entry(manifest_len) + self.files.iter().map(|f| entry(f.bytes)).sum::<u64>() + 1024
    }
}

/// What the backup endpoint needs: the store, the data folder, and one backup at a time.
pub(crate) struct Backups {
    /// `None` when the store is PostgreSQL: the database is backed up with its own tools.
    store: Option<Arc<SqliteStore>>,
    data: PathBuf,
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Backups {
    /// Made once the store is open (so this process holds the folder): what a backup cut
    /// short by a crash left in the data folder is removed.
    pub(crate) fn new(store: Option<Arc<SqliteStore>>, data: &Path) -> Backups {
        for entry in std::fs::read_dir(data).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Backups {
            store,
            data: data.to_path_buf(),
            running: Arc::default(),
        }
    }
}

/// `POST /fhirlink/backup`, merged into the management router behind its authentication.
pub(crate) fn router(control_plane: Arc<link_api::ControlPlane>, backups: Arc<Backups>) -> Router {
    Router::new()
        .route(link_model::BACKUP_PATH, post(take))
        .with_state((control_plane, backups))
}

fn arm_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Takes the snapshot, then streams the archive (`application/x-tar`, with its length).
async fn take(
    State((control_plane, backups)): State<(Arc<link_api::ControlPlane>, Arc<Backups>)>,
    Extension(who): Extension<Principal>,
) -> Response {
    let decided = link_model::classify(link_model::Method::Post, link_model::BACKUP_PATH);
    let action = decided.name;
    let mut resp = if !link_model::may_back_up(&control_plane.snapshot(), &who) {
        arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{0}' with object id '{0}' does not have authorization to perform action '{action}' over scope '/': a backup holds the token signing key, so it is for the Owner at the root scope.",
                who.id
            ),
        )
    } else {
        match start(&backups).await {
            Ok(resp) => resp,
            Err(e) => e,
        }
    };
    resp.extensions_mut().insert(decided);
    resp
}

async fn start(backups: &Backups) -> Result<Response, Response> {
    let Some(store) = backups.store.clone() else {
        return Err(arm_error(
            StatusCode::CONFLICT,
            "BackupNotSupported",
            "This server keeps its data in PostgreSQL: back the database up with PostgreSQL's own tools (pg_dump, base backups) and the data folder (keys, certificates) with it; fhirlink backup copies the embedded SQLite store.".into(),
        ));
    };
    let Ok(guard) = backups.running.clone().try_lock_owned() else {
        return Err(arm_error(
            StatusCode::CONFLICT,
            "BackupInProgress",
            "Another backup is being taken; try again when it is done.".into(),
        ));
    };
    let staging = backups
        .data
        .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4()));
    let (data, dir) = (backups.data.clone(), staging.clone());
    let started = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || prepare(&store, &data, &dir))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    let (manifest, manifest_json) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            tracing::error!(error = format!("{e:#}"), "backup failed");
            return Err(arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "BackupFailed",
                format!("The backup could not be taken: {e:#}"),
            ));
        }
    };
    let length = manifest.archive_len(manifest_json.len() as u64);
    tracing::info!(
        database_bytes = manifest.files.first().map_or(0, |f| f.bytes),
        snapshot_ms = started.elapsed().as_millis() as u64,
        archive_bytes = length,
        "backup snapshot taken; streaming it"
    );
    let (reader, writer) = tokio::io::duplex(CHUNK);
    tokio::task::spawn_blocking(move || {
        let _one_at_a_time = guard;
        let bridge = tokio_util::io::SyncIoBridge::new(writer);
        let sent = write_archive(bridge, &staging, &manifest, &manifest_json);
        let _ = std::fs::remove_dir_all(&staging);
        match sent {
            Ok(()) => tracing::info!(
                bytes = length,
                ms = started.elapsed().as_millis() as u64,
                "backup sent"
            ),
            Err(e) => tracing::warn!(error = %e, "backup not sent whole (client gone?)"),
        }
    });
    let filename = format!(
        "fhirlink-backup-{}.tar",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK)),
    )
        .into_response())
}

/// Snapshots the database into `staging` and copies the key folders beside it, so that
/// what is hashed is what is sent. Returns the manifest and its bytes.
fn prepare(
    store: &SqliteStore,
    data: &Path,
    staging: &Path,
) -> anyhow::Result<(Manifest, Vec<u8>)> {
    create_private_dir(staging)?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let report = store
        .backup_to(&staging.join(DATABASE_FILE))
        .context("the database snapshot")?;
    let mut files = vec![DATABASE_FILE.to_string()];
    for folder in KEY_FOLDERS {
        copy_tree(
            &data.join(folder),
            &staging.join(folder),
            folder,
            &mut files,
        )?;
    }
    let files = files
        .into_iter()
        .map(|path| describe(staging, path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        fhirlink_version: env!("CARGO_PKG_VERSION").into(),
        created,
        schema_version: report.schema_version,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    Ok((manifest, json))
}

/// Copies the regular files under `from` into `to`, naming each by its path from the data
/// folder (`prefix/...`). A folder that does not exist (no CA when certificates are the
/// operator's own) is skipped.
fn copy_tree(from: &Path, to: &Path, prefix: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
    };
    create_private_dir(to)?;
    let mut names: Vec<_> = entries
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading {}", from.display()))?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let kind = entry.file_type()?;
        let rel = format!("{prefix}/{name}");
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name), &rel, out)?;
        } else if kind.is_file() && rel.len() < 100 {
            std::fs::copy(entry.path(), to.join(&name))
                .with_context(|| format!("copying {}", entry.path().display()))?;
            out.push(rel);
        }
    }
    Ok(())
}

fn describe(root: &Path, path: String) -> anyhow::Result<FileEntry> {
    let full = root.join(&path);
    let mut file =
        std::fs::File::open(&full).with_context(|| format!("reading {}", full.display()))?;
    let (bytes, sha256) = hash(&mut file)?;
    Ok(FileEntry {
        path,
        bytes,
        mode: mode_of(&file.metadata()?),
        sha256,
    })
}

/// Length and SHA-256 of what `r` yields.
fn hash(r: &mut impl Read) -> std::io::Result<(u64, String)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0; 1 << 20];
    let mut n = 0;
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            break;
        }
        ctx.update(&buf[..got]);
        n += got as u64;
    }
    Ok((n, hex(ctx.finish().as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(_: &std::fs::Metadata) -> u32 {
    0o600
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes the archive: the manifest, then each file of `staging` the manifest names.
fn write_archive(
    w: impl Write,
    staging: &Path,
    manifest: &Manifest,
    manifest_json: &[u8],
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(w);
    let mtime = chrono::DateTime::parse_from_rfc3339(&manifest.created)
        .map_or(0, |t| u64::try_from(t.timestamp()).unwrap_or(0));
    let header = |len: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_size(len);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    tar.append_data(
        &mut header(manifest_json.len() as u64, 0o600),
        MANIFEST,
        manifest_json,
    )?;
    for f in &manifest.files {
        let file = std::fs::File::open(staging.join(&f.path))?;
        tar.append_data(&mut header(f.bytes, f.mode), &f.path, file.take(f.bytes))?;
    }
    tar.into_inner()?.flush()
}

/// Reads a backup archive whole and checks it: a manifest first, of this format, and every
/// entry it names, no other, of the size and SHA-256 it says. With `into`, also writes each
/// entry below that folder (files synced, with their modes; folders 0700). A file that is no
/// backup, or a damaged one, is an error that says which.
pub(crate) fn read_archive(archive: &Path, into: Option<&Path>) -> anyhow::Result<Manifest> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let name = archive.display();
    let mut tar = tar::Archive::new(std::io::BufReader::with_capacity(CHUNK, file));
    let mut entries = tar
        .entries()
        .with_context(|| format!("{name} is not a fhirlink backup"))?;
    let manifest: Manifest = {
        let first = entries
            .next()
            .transpose()
            .ok()
            .flatten()
            .with_context(|| format!("{name} is not a fhirlink backup (not a tar archive)"))?;
        let path = first.path().map(|p| p.to_string_lossy().into_owned());
        if path.as_deref().ok() != Some(MANIFEST) || first.size() > MAX_MANIFEST_BYTES {
            bail!("{name} is not a fhirlink backup (its first entry is not {MANIFEST})");
        }
        let mut text = Vec::new();
        first
            .take(MAX_MANIFEST_BYTES)
            .read_to_end(&mut text)
            .with_context(|| format!("{name}: reading the manifest"))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .with_context(|| format!("{name} is not a fhirlink backup (unreadable manifest)"))?;
        if manifest.format != FORMAT {
            bail!(
                "{name} is not a fhirlink backup (format '{}')",
                manifest.format
            );
        }
        if manifest.format_version > FORMAT_VERSION {
            bail!(
                "{name} is a fhirlink backup of format {}, newer than this fhirlink ({}) reads",
                manifest.format_version,
                FORMAT_VERSION
            );
        }
        manifest
    };
    if manifest.files.first().map(|f| f.path.as_str()) != Some(DATABASE_FILE) {
        bail!("{name} is not a fhirlink backup (no {DATABASE_FILE})");
    }
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{name} is damaged or truncated"))?;
        let path = entry
            .path()
            .with_context(|| format!("{name}: an entry with an unreadable name"))?
            .to_string_lossy()
            .into_owned();
        let Some(want) = manifest.files.iter().find(|f| f.path == path) else {
            bail!("{name} is damaged: entry '{path}' is not in its manifest");
        };
        if !safe_relative(&path) || !seen.insert(path.clone()) {
            bail!("{name} is damaged: entry '{path}' is not a safe, unique path");
        }
        let mut reader = entry.take(want.bytes + 1);
        let (bytes, sha256) = match into {
            Some(dir) => {
                let target = dir.join(&path);
                if let Some(parent) = target.parent() {
                    create_private_dir(parent)?;
                }
                let mut out = create_file(&target, want.mode)?;
                let mut tee = Tee {
                    inner: &mut reader,
                    out: &mut out,
                };
                let r = hash(&mut tee).with_context(|| format!("{name}: reading {path}"))?;
                out.sync_all()
                    .with_context(|| format!("syncing {}", target.display()))?;
                r
            }
            None => hash(&mut reader).with_context(|| format!("{name}: reading {path}"))?,
        };
        if bytes != want.bytes || sha256 != want.sha256 {
            bail!("{name} is corrupted: {path} does not match the checksum in its manifest");
        }
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        bail!("{name} is incomplete: {} is missing", missing.path);
    }
    Ok(manifest)
}

/// A path of plain names only: nothing absolute, no `..`.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn create_file(path: &Path, mode: u32) -> anyhow::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode & 0o777);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Copies what is read to `out`.
struct Tee<'a, R, W> {
    inner: &'a mut R,
    out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged() -> (tempfile::TempDir, Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(DATABASE_FILE), vec![7u8; 5000]).unwrap();
        std::fs::create_dir_all(root.join("identity")).unwrap();
        std::fs::write(root.join("identity/signing-key.pem"), b"secret").unwrap();
        let files = [DATABASE_FILE, "identity/signing-key.pem"]
            .into_iter()
            .map(|p| describe(root, p.to_string()).unwrap())
            .collect();
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            fhirlink_version: "test".into(),
            created: "2026-12-02T00:00:00.000Z".into(),
            schema_version: 3,
            files,
        };
        let json = serde_json::to_vec(&manifest).unwrap();
        (dir, manifest, json)
    }

    #[test]
    fn the_archive_is_as_long_as_announced_and_reads_back() {
        let (dir, manifest, json) = staged();
        let mut bytes = Vec::new();
        write_archive(&mut bytes, dir.path(), &manifest, &json).unwrap();
        assert_eq!(bytes.len() as u64, manifest.archive_len(json.len() as u64));
        let archive = dir.path().join("b.tar");
        std::fs::write(&archive, &bytes).unwrap();
        let out = dir.path().join("out");
        let read = read_archive(&archive, Some(&out)).unwrap();
        assert_eq!(read.files.len(), 2);
        assert_eq!(
            std::fs::read(out.join("identity/signing-key.pem")).unwrap(),
            b"secret"
        );
        // One flipped byte in the database's data.
        let at = bytes.windows(3).position(|w| w == [7, 7, 7]).unwrap() + 100;
        bytes[at] ^= 1;
        std::fs::write(&archive, &bytes).unwrap();
        let e = read_archive(&archive, None).unwrap_err().to_string();
        assert!(e.contains("corrupted"), "{e}");
        // Cut short.
        std::fs::write(&archive, &bytes[..3000]).unwrap();
        assert!(read_archive(&archive, None).is_err());
        // Not an archive at all, and another archive.
        std::fs::write(&archive, b"hello").unwrap();
        let e = read_archive(&archive, None).unwrap_err().to_string();
        assert!(e.contains("not a fhirlink backup"), "{e}");
        let mut other = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        other.append_data(&mut h, "notes.txt", &b"hi"[..]).unwrap();
        std::fs::write(&archive, other.into_inner().unwrap()).unwrap();
        let e = read_archive(&archive, None).unwrap_err().to_string();
        assert!(e.contains("not a fhirlink backup"), "{e}");
    }

    #[test]
    fn only_plain_relative_paths_are_written() {
        assert!(safe_relative("identity/signing-key.pem"));
        assert!(!safe_relative("/etc/passwd"));
        assert!(!safe_relative("../x"));
        assert!(!safe_relative("tls/../../x"));
        assert!(!safe_relative(""));
    }
}
