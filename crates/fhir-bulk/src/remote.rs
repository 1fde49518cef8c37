//! `https:` inputs of `$import`: another server's files (its `$export` output, say), read
//! only from URL prefixes the operator allowed (`--import-url`), with the bearer token the
//! operator gave for that prefix.
//!
//! A server that fetches URLs its clients name is a server-side request forgery waiting to
//! happen, so nothing is fetched unless its URL is under an allowed prefix: `https` only, the
//! same host and port, and a path under the prefix's path (after the URL's dot segments are
//! resolved, so `..` cannot climb out). Redirects are not followed (a redirect could lead
//! anywhere), the token is sent only to its own prefix, and a download is bounded in size
//! and in how long it may stall. An input is downloaded whole into the job's folder before it
//! is imported, so that the chunks, their progress and a restart work as for a local file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use tokio::io::AsyncWriteExt;

use crate::BulkError;

/// The largest file one `https:` input may be.
pub const MAX_REMOTE_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// One allowed URL prefix and the bearer token file sent with requests under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    prefix: Url,
    token_file: Option<PathBuf>,
}

impl RemoteSource {
    /// An allowed prefix: an absolute `https` URL without credentials, query or fragment; its
    /// path is a folder (a missing final `/` is added).
    pub fn new(prefix: &str, token_file: Option<PathBuf>) -> Result<RemoteSource, String> {
        let mut url = Url::parse(prefix).map_err(|e| format!("{prefix:?}: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!("{prefix:?}: only https URLs may be allowed"));
        }
        if url.host_str().is_none() {
            return Err(format!("{prefix:?} names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{prefix:?}: credentials in a URL are not taken"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{prefix:?}: a prefix has no query or fragment"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(RemoteSource {
            prefix: url,
            token_file,
        })
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_str()
    }

    /// Whether `url` is under this prefix.
    fn covers(&self, url: &Url) -> bool {
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.host_str() == self.prefix.host_str()
            && url.port_or_known_default() == self.prefix.port_or_known_default()
            && url.path().starts_with(self.prefix.path())
    }
}

/// The allowed source of an `https:` input URL, or why it is not allowed.
pub fn source_of<'a>(url: &str, sources: &'a [RemoteSource]) -> Result<&'a RemoteSource, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!("{url}: only https: and file: URLs are taken"));
    }
    if sources.is_empty() {
        return Err(format!(
            "{url}: this server reads no https: inputs; its operator allows URL prefixes \
             with --import-url"
        ));
    }
    // The longest prefix that covers it: its token is the most specific one.
    sources
        .iter()
        .filter(|s| s.covers(&parsed))
        .max_by_key(|s| s.prefix.path().len())
        .ok_or_else(|| {
            format!("{url} is not under a URL prefix this server may read from (--import-url)")
        })
}

/// The HTTP client of `https:` inputs: the system's roots plus `extra_roots` (PEM), no
/// redirects, bounded connection and stall times.
pub fn client(extra_roots: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("fhirlink-import/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60));
    if let Some(pem) = extra_roots {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in the PEM file".into());
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Downloads `url` (under `source`) into `to`, whole and synced; returns its length. `etag`,
/// when the input gave one, must still be the file's (`If-Match`).
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    source: &RemoteSource,
    etag: Option<&str>,
    to: &Path,
) -> Result<u64, BulkError> {
    let fail = |m: String| BulkError::Io(format!("fetching {url}: {m}"));
    let mut request = client
        .get(url)
        .header("accept", "application/fhir+ndjson, application/ndjson, */*");
    if let Some(file) = &source.token_file {
        // Read at each download, so that a token the operator replaces is used from then on.
        let token = std::fs::read_to_string(file)
            .map_err(|e| fail(format!("reading the token file {}: {e}", file.display())))?;
        request = request.bearer_auth(token.trim());
    }
    if let Some(etag) = etag {
        request = request.header("if-match", etag);
    }
    let mut response = request.send().await.map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(fail(format!(
            "answered {status}; redirects are not followed"
        )));
    }
    if !status.is_success() {
        return Err(fail(format!("answered {status}")));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REMOTE_BYTES)
    {
        return Err(fail(format!(
            "the file is larger than {MAX_REMOTE_BYTES} bytes"
        )));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| fail(format!("creating {}: {e}", to.display())))?;
    let mut length = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
        length += chunk.len() as u64;
        if length > MAX_REMOTE_BYTES {
            return Err(fail(format!(
                "the file is larger than {MAX_REMOTE_BYTES} bytes"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| fail(format!("writing {}: {e}", to.display())))?;
    }
    file.sync_all()
        .await
        .map_err(|e| fail(format!("syncing {}: {e}", to.display())))?;
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_under_an_allowed_prefix_are_taken() {
        let sources = vec![
            RemoteSource::new("https://source.example:8443/fhir", None).unwrap(),
            RemoteSource::new("https://Other.Example/", None).unwrap(),
        ];
        for ok in [
            "https://source.example:8443/fhir/_operations/export/1/Patient-1.ndjson",
            "https://source.example:8443/fhir/x?token=1",
            "https://other.example/anything",
            "https://OTHER.example:443/a",
        ] {
            assert!(source_of(ok, &sources).is_ok(), "{ok}");
        }
        for refused in [
            "http://source.example:8443/fhir/a.ndjson",
            "https://source.example/fhir/a.ndjson",
            "https://source.example:8443/fhirx/a.ndjson",
            "https://source.example:8443/fhir/../admin/a.ndjson",
            "https://source.example:8443/fhir/%2e%2e/admin",
            "https://user:pw@source.example:8443/fhir/a.ndjson",
            "https://source.example.evil:8443/fhir/a.ndjson",
            "https://other.example:8443/a",
            "ftp://other.example/a",
            "not a url",
        ] {
            assert!(source_of(refused, &sources).is_err(), "{refused}");
        }
        assert!(source_of("https://other.example/a", &[]).is_err());
    }

    #[test]
    fn the_longest_prefix_decides_the_token() {
        let sources = vec![
            RemoteSource::new("https://s.example/", None).unwrap(),
            RemoteSource::new("https://s.example/export/", Some("/t".into())).unwrap(),
        ];
        let of = |u: &str| source_of(u, &sources).unwrap().token_file.clone();
        assert_eq!(of("https://s.example/export/a.ndjson"), Some("/t".into()));
        assert_eq!(of("https://s.example/other/a.ndjson"), None);
    }

    #[test]
    fn prefixes_are_https_folders_without_credentials() {
        assert_eq!(
            RemoteSource::new("https://a.example/fhir", None)
                .unwrap()
                .prefix(),
            "https://a.example/fhir/"
        );
        for bad in [
            "http://a.example/",
            "https://u@a.example/",
            "https://a.example/?q",
            "https://a.example/#f",
            "file:///tmp",
            "a.example",
        ] {
            assert!(RemoteSource::new(bad, None).is_err(), "{bad}");
        }
    }
}
