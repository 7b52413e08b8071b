//! What keeps a web page in the operator's browser from steering the daemon.
//!
//! A browser lets any page send requests to `http://127.0.0.1:9900`; it only
//! stops the page from *reading* the answer, and even that only when the
//! request names the daemon's address. Three checks close the gaps:
//!
//! - **Host.** Every request (but `/healthz`) must name the daemon by an
//!   IP address, `localhost`, or a name the operator allowed
//!   (`--allow-host`), not by any other DNS name. A page on `evil.example`
//!   whose name is re-pointed at 127.0.0.1 (DNS rebinding) sends `Host:
//!   evil.example` and is refused. Any IP address is accepted: an address
//!   cannot be re-pointed, and a page whose origin is an address that
//!   reaches the daemon (its own, or one forwarded to it, such as a
//!   Kubernetes Service's cluster IP) is on the daemon's own origin, where
//!   the browser's same-origin rule already protects it.
//! - **Origin.** A mutation that carries `Origin` (browsers send it with every
//!   POST, PUT and DELETE) must come from the daemon's own origin: the
//!   dashboard. `Sec-Fetch-Site: cross-site` or `same-site` is refused too.
//! - **Content type.** A mutation with a body must not have a type a page can
//!   send without asking first (`text/plain`, form encodings) and must have
//!   one: JSON for commands, YAML or JSON for a rollout file.
//!
//! The command line sends no `Origin` and proper types, so it is not
//! affected; nor is the dashboard, which calls its own origin with JSON.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, header};

/// Content types a page may send to another site without a preflight
/// (the Fetch standard's CORS-safelisted request types).
const FORM_TYPES: [&str; 3] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// The daemon's own addresses and the names the operator allowed.
#[derive(Debug, Clone)]
pub struct Guard {
    own: SocketAddr,
    names: Vec<String>,
}

impl Guard {
    /// A guard for a daemon bound to `own` that also answers to `names`
    /// (`--allow-host`).
    pub fn new(own: SocketAddr, names: &[String]) -> Guard {
        Guard {
            own,
            names: names.iter().map(|n| normal_name(n)).collect(),
        }
    }

    /// Checks one request. `Err` is the reason, for a 403.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), String> {
        if path == "/healthz" {
            return Ok(());
        }
        let host = self.check_host(headers)?;
        if matches!(*method, Method::GET | Method::HEAD) {
            return Ok(());
        }
        check_origin(headers, host)?;
        check_content_type(headers)
    }

    /// The `Host` header, if it names this daemon.
    fn check_host<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, String> {
        // Two Hosts, or one with userinfo, name two hosts: which one a
        // proxy in front looked at is anybody's guess (RFC 9112 3.2: 400).
        let mut hosts = headers.get_all(header::HOST).iter();
        let (first, None) = (hosts.next(), hosts.next()) else {
            return Err("request refused: more than one Host header".into());
        };
        if first.is_some_and(|v| v.as_bytes().contains(&b'@')) {
            return Err(
                "request refused: a Host with userinfo (`user@host`); expected host[:port]".into(),
            );
        }
        let value = first
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        if value.is_empty() {
            return Err(format!(
                "request refused: no Host header; expected Host: {}",
                self.own
            ));
        }
        if host_of(value).is_some_and(|name| self.is_own(name)) {
            return Ok(value);
        }
        Err(format!(
            "request refused: Host `{value}` is not this daemon's address; serin answers requests that name \
             it by an IP address such as {}, or localhost (a DNS name that reaches it could be a web page's \
             DNS rebinding); to use another name, start serin serve with --allow-host NAME",
            self.own
        ))
    }

    fn is_own(&self, name: &str) -> bool {
        let name = normal_name(name);
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if self.names.contains(&name) {
            return true;
        }
        // An address names no DNS record to re-point (see the module docs).
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        literal.parse::<IpAddr>().is_ok()
    }
}

/// The host of a `Host` value `host[:port]` whose port is digits only
/// (`127.0.0.1:9900,evil` or `localhost:0x50` name no port a client could
/// mean).
fn host_of(value: &str) -> Option<&str> {
    let authority = value.parse::<axum::http::uri::Authority>().ok()?;
    let host = authority.host();
    let rest = value.strip_prefix(host).filter(|_| !host.is_empty())?;
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
        None => rest.is_empty(),
    };
    port_ok.then(|| &value[..host.len()])
}

/// Lower case, without the final dot of a fully qualified name.
fn normal_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A mutation from a page of another origin is refused.
fn check_origin(headers: &HeaderMap, host: &str) -> Result<(), String> {
    let own = format!("http://{host}");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)").trim();
        // https: the dashboard behind a TLS proxy that keeps the Host.
        let same = [own.as_str(), &format!("https://{host}")]
            .iter()
            .any(|o| origin.eq_ignore_ascii_case(o));
        if !same {
            return Err(format!(
                "cross-origin request refused: Origin `{origin}` is not this daemon ({own}); \
                 a web page cannot steer serin — use the command line or the dashboard"
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("(not text)").trim();
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Err(format!(
                "cross-origin request refused: Sec-Fetch-Site `{site}` (the request comes from \
                 another site's page); a web page cannot steer serin — use the command line or the dashboard"
            ));
        }
    }
    Ok(())
}

/// A body must be typed, and not with a type any page may send.
fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        if has_body {
            return Err(
                "request refused: a body needs a Content-Type: application/json for \
                 commands, application/yaml or application/json for a rollout file"
                    .into(),
            );
        }
        return Ok(());
    };
    let value = value.to_str().unwrap_or("(not text)");
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if FORM_TYPES.contains(&media.as_str()) {
        return Err(format!(
            "request refused: Content-Type `{value}` is one any web page can send to any site; \
             send application/json for commands, application/yaml or application/json for a rollout file"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_static(k),
                axum::http::HeaderValue::from_static(v),
            );
        }
        h
    }

    fn guard() -> Guard {
        Guard::new(
            "127.0.0.1:9900".parse().expect("addr"),
            &["serin.serin-system.svc".to_string()],
        )
    }

    #[test]
    fn hosts_by_address_or_loopback_name_pass_and_dns_names_do_not() {
        let g = guard();
        for host in [
            "127.0.0.1:9900",
            "localhost:9900",
            "LOCALHOST.",
            "[::1]:9900",
            "127.0.0.2",
            "app.localhost:9900",
            "serin.serin-system.svc:9900",
            // Any address: one cannot be re-pointed (a Service's cluster
            // IP, a pod's address, a NAT in front).
            "10.0.0.5:9900",
            "[fd00::5]:9900",
            "[::ffff:10.0.0.5]",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(
                g.check(&Method::GET, "/api/v1/rollouts", &h),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:9900",
            "127.0.0.1:9900,evil.example",
            "localhost:0x50",
            "10.0.0.5.evil.example",
            "",
            "localhost.evil.example",
            ":9900",
            "localhost:+80",
            "localhost:99999",
            "localhost:",
        ] {
            let h = headers(&[("host", host)]);
            let e = g
                .check(&Method::GET, "/api/v1/rollouts", &h)
                .expect_err(host);
            assert!(e.contains("Host"), "{e}");
        }
        // Two hosts in one request (found by the outside tests).
        let e = g
            .check(
                &Method::GET,
                "/api/v1/rollouts",
                &headers(&[("host", "evil@127.0.0.1:9900")]),
            )
            .expect_err("userinfo");
        assert!(e.contains("userinfo"), "{e}");
        let e = g
            .check(
                &Method::GET,
                "/api/v1/rollouts",
                &headers(&[("host", "127.0.0.1:9900"), ("host", "evil.example")]),
            )
            .expect_err("two Hosts");
        assert!(e.contains("more than one Host"), "{e}");
        // Health checks name pods and services freely.
        let h = headers(&[("host", "evil.example")]);
        assert_eq!(g.check(&Method::GET, "/healthz", &h), Ok(()));
    }

    #[test]
    fn mutations_from_other_origins_or_with_form_types_are_refused() {
        let g = guard();
        let post = |pairs: &[(&'static str, &'static str)]| {
            g.check(&Method::POST, "/api/v1/rollouts", &headers(pairs))
        };
        // The dashboard, and the command line.
        assert_eq!(
            post(&[
                ("host", "127.0.0.1:9900"),
                ("origin", "http://127.0.0.1:9900"),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/json"),
                ("content-length", "2"),
            ]),
            Ok(())
        );
        assert_eq!(
            post(&[
                ("host", "127.0.0.1:9900"),
                ("content-type", "application/yaml"),
                ("content-length", "200"),
            ]),
            Ok(())
        );
        assert_eq!(
            post(&[("host", "127.0.0.1:9900"), ("content-length", "0")]),
            Ok(())
        );
        assert_eq!(
            post(&[
                ("host", "localhost:9900"),
                ("origin", "https://localhost:9900"),
            ]),
            Ok(())
        );
        for refused in [
            &[
                ("host", "127.0.0.1:9900"),
                ("origin", "http://127.0.0.1:8000"),
                ("content-type", "application/json"),
            ][..],
            &[("host", "127.0.0.1:9900"), ("origin", "null")][..],
            &[
                ("host", "127.0.0.1:9900"),
                ("origin", "https://127.0.0.1:9901"),
            ][..],
            &[("host", "127.0.0.1:9900"), ("sec-fetch-site", "same-site")][..],
            &[
                ("host", "127.0.0.1:9900"),
                ("content-type", "text/plain;charset=UTF-8"),
                ("content-length", "200"),
            ][..],
            &[
                ("host", "127.0.0.1:9900"),
                ("content-type", "application/x-www-form-urlencoded"),
            ][..],
            &[("host", "127.0.0.1:9900"), ("content-length", "200")][..],
        ] {
            assert!(post(refused).is_err(), "{refused:?}");
        }
    }
}
