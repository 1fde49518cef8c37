//! Which FHIR service a request is for: `<service>.<dns suffix>` in the Host header, else
//! `default`. The Host only chooses among services; it never grants access (that is the
//! network plane's decision, made on the connection, not on headers).

/// The service every request goes to when its Host names none.
pub const DEFAULT_SERVICE: &str = "default";

/// The service the network plane admitted a request to, as a request extension. When a
/// request carries one it wins over the Host header: a private endpoint's listener serves
/// only its own service, whatever Host the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedService(pub String);

/// The host a request names: the target's authority when it has one, else the Host
/// header. RFC 9112 §3.2.2: an absolute-form target wins over Host, which the server
/// ignores; RFC 9113 §8.3.1: an HTTP/2 request's `:authority` (hyper puts it in the URI)
/// is its authority, Host standing in only when it is absent (a request where the two
/// disagree is malformed; the gateway refuses it). Userinfo, which the target must not
/// carry (RFC 9110 §4.2.4), is left out. It chooses a service and is echoed in links; it
/// never grants access.
pub fn request_host<'a>(headers: &'a http::HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    match uri.authority() {
        Some(authority) => authority.as_str().rsplit('@').next(),
        None => headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// The service named by a Host header value (port ignored, case-insensitive), else
/// `default`.
pub fn service_for_host(host: Option<&str>, dns_suffix: &str) -> String {
    service_named_by_host(host, dns_suffix).unwrap_or_else(|| DEFAULT_SERVICE.into())
}

/// The service a Host header value names, if it names one: `<service>.<suffix>` or
/// `<service>.privatelink.<suffix>` (port ignored, case-insensitive).
pub fn service_named_by_host(host: Option<&str>, dns_suffix: &str) -> Option<String> {
    let name = host_without_port(host?).trim_end_matches('.');
    let suffix = dns_suffix.trim_matches('.');
    if name.len() > suffix.len() + 1 && name.is_char_boundary(name.len() - suffix.len()) {
        let (label, rest) = name.split_at(name.len() - suffix.len());
        if rest.eq_ignore_ascii_case(suffix) && label.ends_with('.') {
            let label = &label[..label.len() - 1];
            // `<service>.privatelink.<suffix>` names the same service.
            let label = label
                .strip_suffix(".privatelink")
                .or_else(|| label.strip_suffix(".PRIVATELINK"))
                .unwrap_or(label);
            if !label.is_empty() && !label.contains('.') {
                return Some(label.to_ascii_lowercase());
            }
        }
    }
    None
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: never a service name.
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: Option<&str>, expected: &str) {
        assert_eq!(
            service_for_host(host, "azurehealthcareapis.com"),
            expected,
            "{host:?}"
        );
    }

    #[test]
    fn host_routes_to_service() {
        check(Some("fhirnet.azurehealthcareapis.com"), "fhirnet");
        check(Some("FhirNet.AzureHealthcareApis.com:8080"), "fhirnet");
        check(
            Some("fhirnet.privatelink.azurehealthcareapis.com"),
            "fhirnet",
        );
        check(Some("fhirnet.azurehealthcareapis.com."), "fhirnet");
    }

    #[test]
    fn other_hosts_go_to_default() {
        check(None, "default");
        check(Some("127.0.0.1:8080"), "default");
        check(Some("localhost"), "default");
        check(Some("azurehealthcareapis.com"), "default");
        check(Some("a.b.azurehealthcareapis.com"), "default");
        check(Some("[::1]:8080"), "default");
        check(Some("evil-azurehealthcareapis.com"), "default");
        // Regression: a multi-byte character where the suffix would start.
        check(Some("ab\u{e9}zurehealthcareapis.com"), "default");
    }

    #[test]
    fn only_service_hosts_name_a_service() {
        let named = |h: &str| service_named_by_host(Some(h), "azurehealthcareapis.com");
        assert_eq!(
            named("default.azurehealthcareapis.com").as_deref(),
            Some("default")
        );
        assert_eq!(
            named("x.privatelink.azurehealthcareapis.com").as_deref(),
            Some("x")
        );
        assert_eq!(named("127.10.1.4:8080"), None);
        assert_eq!(named("localhost"), None);
    }
}
