//! The one kind of outbound request this crate makes: an HTTP/1.1 `GET` of a small JSON document
//! (an OIDC discovery document or a JWKS), over TLS unless the host is a loopback address, with
//! a deadline on the whole exchange and a cap on the body.
//!
//! Deliberately small: no redirects (a `3xx` is a failure, so a discovery document cannot send
//! us somewhere the URL rules would not allow), no cookies, no proxies, no connection pool (a
//! few requests an hour). Knows nothing of tokens; [`crate::oidc`] decides what to fetch.

use std::net::IpAddr;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_LENGTH, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::oidc::OidcError;

/// URLs longer than this are not an issuer's.
const MAX_URL_LEN: usize = 2048;

/// An absolute `https://` URL, or `http://` to a loopback host, taken apart for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// The URL as given, for messages.
    text: String,
    https: bool,
    /// The host to connect to and to name in SNI: a DNS name or an IP address, no brackets.
    host: String,
    port: u16,
    /// The `Host` header (RFC 9110 §7.2): the URL's authority as written.
    host_header: String,
    path_and_query: String,
    has_query: bool,
}

impl Url {
    /// Takes a URL apart, refusing anything but `https://` (RFC 8414 §2 and OIDC Discovery §3
    /// require it of issuers) except `http://` to 127.0.0.0/8, `::1` or `localhost`, which is
    /// how test and local issuers run: traffic that never leaves the machine.
    pub(crate) fn parse(text: &str) -> Result<Url, OidcError> {
        let bad = |reason| OidcError::BadUrl {
            url: printable(text),
            reason,
        };
        if text.len() > MAX_URL_LEN {
            return Err(bad("longer than 2048 characters"));
        }
        if text.contains('#') {
            return Err(bad("it has a fragment"));
        }
        let uri = Uri::from_str(text).map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme is not https")),
        };
        let authority = uri.authority().ok_or(bad("no host"))?;
        // RFC 9110 §4.2.4: no credentials in http(s) URLs.
        if authority.as_str().contains('@') {
            return Err(bad("it has user information"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !https && !is_loopback(&host) {
            return Err(OidcError::Insecure(printable(text)));
        }
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(Url {
            text: text.to_string(),
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host_header: authority.as_str().to_string(),
            host,
            has_query: uri.query().is_some(),
            path_and_query,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn has_query(&self) -> bool {
        self.has_query
    }
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1` (RFC 6890 §2.2.2, RFC 4291 §2.5.3).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || IpAddr::from_str(host).is_ok_and(|ip| ip.is_loopback())
}

/// What a fetch may cost.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// For the whole exchange: connect, TLS, request, response and body.
    pub timeout: Duration,
    /// The most body bytes read.
    pub max_bytes: usize,
}

/// Fetches `url` and parses its body as JSON. Only `200 OK` counts (OIDC Discovery §4.2,
/// RFC 7517 has no other); anything else, a body over the limit, or a deadline missed is an
/// error, never an empty document.
pub(crate) async fn get_json(
    url: &Url,
    limits: &Limits,
    tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, OidcError>,
) -> Result<Value, OidcError> {
    let exchange = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| unreachable(url, e))?;
        if url.https {
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|_| unreachable(url, "the host is not a valid TLS server name"))?;
            let tls = tokio_rustls::TlsConnector::from(tls()?)
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(url, format_args!("TLS: {e}")))?;
            get_over(tls, url, limits.max_bytes).await
        } else {
            get_over(tcp, url, limits.max_bytes).await
        }
    };
    let body = tokio::time::timeout(limits.timeout, exchange)
        .await
        .map_err(|_| OidcError::Timeout {
            url: printable(&url.text),
            millis: limits.timeout.as_millis(),
        })??;
    serde_json::from_slice(&body).map_err(|_| OidcError::BadDocument {
        url: printable(&url.text),
        reason: "not JSON".into(),
    })
}

/// One request on a fresh connection; the connection is driven in this task (not spawned) so
/// that when the caller's deadline drops the future, the socket goes with it.
async fn get_over<S>(stream: S, url: &Url, max_bytes: usize) -> Result<Bytes, OidcError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(url, e))?;
    let request = Request::get(url.path_and_query.as_str())
        .header(HOST, url.host_header.as_str())
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("fhirlink/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|_| unreachable(url, "the request could not be built"))?;
    let response = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(url, e))?;
        if response.status() != StatusCode::OK {
            return Err(OidcError::Status {
                url: printable(&url.text),
                status: response.status().as_u16(),
            });
        }
        let too_large = || OidcError::TooLarge {
            url: printable(&url.text),
            limit: max_bytes,
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes as u64) {
            return Err(too_large());
        }
        match Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
        {
            Ok(body) => Ok(body.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(unreachable(url, e)),
        }
    };
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(response);
    tokio::select! {
        biased;
        result = &mut response => result,
        // The connection may finish first (the server closed after the last byte); the body
        // already delivered is still read.
        done = &mut conn => {
            done.map_err(|e| unreachable(url, e))?;
            response.await
        }
    }
}

fn unreachable(url: &Url, reason: impl std::fmt::Display) -> OidcError {
    OidcError::Unreachable {
        url: printable(&url.text),
        reason: reason.to_string(),
    }
}

/// Text from outside (a URL we were given or found in a document), made safe for a message:
/// bounded, control characters replaced.
pub(crate) fn printable(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_issuers_may_have() {
        let u = Url::parse("https://login.microsoftonline.com/tid/v2.0").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path_and_query.as_str()),
            (true, "login.microsoftonline.com", 443, "/tid/v2.0")
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.https, u.port, u.path_and_query.as_str()),
            (false, 8080, "/")
        );
        let u = Url::parse("http://[::1]:9/keys?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.host_header.as_str(), u.has_query()),
            ("::1", "[::1]:9", true)
        );
        for ok in [
            "http://localhost:1/",
            "http://LOCALHOST/realms/x",
            "http://127.9.8.7/",
            "https://[2001:db8::1]/",
            "https://idp.example.com:8443/realms/fhir",
        ] {
            assert!(Url::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn urls_refused() {
        for insecure in [
            "http://idp.example.com/",
            "http://10.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost.example.com/",
            "http://128.0.0.1/",
        ] {
            assert!(
                matches!(Url::parse(insecure), Err(OidcError::Insecure(_))),
                "{insecure}"
            );
        }
        for bad in [
            "",
            "idp.example.com",
            "/relative/path",
            "ftp://idp.example.com/",
            "file:///etc/passwd",
            "https://user:pw@idp.example.com/",
            "https://idp.example.com/#frag",
            "https:///path",
            "https://exa mple.com/",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(OidcError::BadUrl { .. })),
                "{bad}"
            );
        }
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL_LEN));
        assert!(matches!(Url::parse(&long), Err(OidcError::BadUrl { .. })));
    }

    #[test]
    fn printable_bounds_and_cleans() {
        assert_eq!(printable("a\nb"), "a?b");
        assert_eq!(printable(&"y".repeat(500)).chars().count(), 201);
    }
}
