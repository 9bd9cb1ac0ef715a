//! Browsers: gRPC-Web on the gRPC port, and which pages may call it (CORS).
//!
//! A browser cannot speak native gRPC (it controls neither HTTP/2 framing nor
//! trailers), so every service is also served as gRPC-Web (`tonic-web`:
//! `application/grpc-web[+proto]` and `application/grpc-web-text`, over
//! HTTP/1.1 or HTTP/2, server streaming included) on the same port. A page
//! on another origin may call it only when that origin is listed in
//! `server.cors_allowed_origins`; none is by default, and dev mode allows
//! pages served from localhost. Admin calls need the admin token over
//! gRPC-Web exactly as over gRPC (`authorization` is a request header there).

use std::time::Duration;

use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Request headers gRPC-Web clients send (besides `content-type`).
const REQUEST_HEADERS: &[&str] = &[
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "traceparent",
    "tracestate",
];

/// Response headers a page must be able to read: the status travels in
/// headers when a call fails before its first message.
const EXPOSED_HEADERS: &[&str] = &["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// One entry of `server.cors_allowed_origins`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    /// `"*"`: any origin.
    Any,
    /// `scheme://host[:port]`, compared exactly (ASCII case-insensitively).
    Exact(String),
    /// `scheme://host:*`: that host on any port (or none).
    AnyPort(String),
}

impl OriginPattern {
    /// Parses one entry; the reason names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!(
                "{text:?} is not an origin like \"https://app.example.com\" (scheme://host[:port]), \"http://localhost:*\" or \"*\""
            ));
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("{text:?}: the scheme must be http or https"));
        }
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(format!(
                "{text:?}: an origin has a host and perhaps a port, no path (no trailing /)"
            ));
        }
        if let Some(host) = rest.strip_suffix(":*") {
            if host.is_empty() {
                return Err(format!("{text:?}: no host"));
            }
            return Ok(Self::AnyPort(format!("{scheme}://{host}")));
        }
        let (host, port) = split_port(rest);
        if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(format!("{text:?}: expected host[:port] after the scheme"));
        }
        Ok(Self::Exact(lower))
    }

    /// Whether a request's `Origin` header matches.
    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::Exact(o) => *o == origin,
            Self::AnyPort(base) => {
                let Some(rest) = origin.strip_prefix(base.as_str()) else {
                    return false;
                };
                rest.is_empty()
                    || rest
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok())
            }
        }
    }
}

/// `host[:port]` → (host, port); an IPv6 host keeps its brackets.
fn split_port(hostport: &str) -> (&str, Option<&str>) {
    if let Some(end) = hostport.find(']') {
        let (host, rest) = hostport.split_at(end + 1);
        return (host, rest.strip_prefix(':'));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    }
}

/// The origins dev mode allows: pages served from this machine.
pub fn dev_origins() -> Vec<String> {
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
        .map(String::from)
        .to_vec()
}

/// The CORS layer for `origins` (entries already validated). With none, no
/// cross-origin page is allowed (preflights get no `Access-Control-Allow-*`
/// headers, so the browser refuses the call); same-origin pages, such as the
/// chart page, need no CORS at all.
pub fn cors_layer(origins: &[String]) -> CorsLayer {
    let patterns: Vec<OriginPattern> = origins
        .iter()
        .filter_map(|o| OriginPattern::parse(o).ok())
        .collect();
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        origin
            .to_str()
            .is_ok_and(|o| patterns.iter().any(|p| p.matches(o)))
    });
    let mut headers: Vec<HeaderName> = vec![CONTENT_TYPE, AUTHORIZATION];
    headers.extend(REQUEST_HEADERS.iter().map(|h| HeaderName::from_static(h)));
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
        .allow_headers(headers)
        .expose_headers(
            EXPOSED_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_match() {
        let exact = OriginPattern::parse("https://App.example.com").unwrap();
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com.evil.net"));

        let port = OriginPattern::parse("https://app.example.com:8443").unwrap();
        assert!(port.matches("https://app.example.com:8443"));
        assert!(!port.matches("https://app.example.com"));

        let any_port = OriginPattern::parse("http://localhost:*").unwrap();
        assert!(any_port.matches("http://localhost"));
        assert!(any_port.matches("http://localhost:5173"));
        assert!(!any_port.matches("http://localhost.evil.net"));
        assert!(!any_port.matches("http://localhost:5173x"));
        assert!(!any_port.matches("https://localhost:5173"));

        let v6 = OriginPattern::parse("http://[::1]:*").unwrap();
        assert!(v6.matches("http://[::1]:8080"));
        assert!(OriginPattern::parse("http://[::1]:8080").is_ok());

        assert!(OriginPattern::parse("*").unwrap().matches("https://x.y"));
    }

    #[test]
    fn bad_origins_say_why() {
        for (bad, says) in [
            ("app.example.com", "scheme://host"),
            ("ftp://x", "http or https"),
            ("https://x/", "no path"),
            ("https://x/app", "no path"),
            ("https://x:port", "host[:port]"),
            ("https://:*", "no host"),
        ] {
            let e = OriginPattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
