//! Key and certificate files: PEM encoding (RFC 7468) and writes that never leave a secret
//! readable by others, not even for a moment.

use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// `data` as a PEM block with `label`, lines of 64 characters.
pub(crate) fn pem_encode(label: &str, data: &[u8]) -> String {
    let b64 = STANDARD.encode(data);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The contents of the first PEM block labelled `label` in `text`.
pub(crate) fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// Creates `path` (and its parent folders, private to the owner) with `contents`, readable
/// by the owner alone. Leaves an existing file as it is: the first writer wins.
pub(crate) fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_new(path, contents, 0o600)
}

/// Creates `path` with `contents` and the Unix permission bits `mode`, unless it exists.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    // A hard link fails when the target exists, so a concurrent first start keeps one key.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Logs a warning when a secret file can be read by the group or others.
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "secret key file is readable by others; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let data: Vec<u8> = (0..=255).collect();
        let pem = pem_encode("PRIVATE KEY", &data);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert_eq!(pem_decode(&pem, "PRIVATE KEY"), Some(data));
        assert_eq!(pem_decode(&pem, "CERTIFICATE"), None);
        assert_eq!(
            pem_decode("-----BEGIN X-----\n!!\n-----END X-----", "X"),
            None
        );
        assert_eq!(pem_decode("-----END X----------BEGIN X-----", "X"), None);
    }

    #[test]
    fn first_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/key.pem");
        write_new_private(&p, b"one").unwrap();
        write_new_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
    }
}
