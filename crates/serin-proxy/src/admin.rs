//! The admin endpoints of one proxy: `GET /metrics` (Prometheus text),
//! `GET /weight` and `PUT /weight` with `{"weight": 25}`.
//!
//! Reads are open. With a token, `PUT /weight` needs `Authorization: Bearer
//! TOKEN` (compared in constant time) and is otherwise refused with 401.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::prometheus::{self, RolloutMetrics};
use crate::proxy::Proxy;
use crate::weight::Weight;

/// Largest `PUT /weight` body read; a weight fits in a few bytes.
const MAX_BODY: usize = 4096;

pub(crate) struct Admin {
    proxy: Arc<Proxy>,
    rollout: String,
    token: Option<String>,
}

/// The body of `PUT /weight`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: f64,
}

impl Admin {
    pub(crate) fn new(proxy: Arc<Proxy>, rollout: String, token: Option<String>) -> Admin {
        Admin {
            proxy,
            rollout,
            token,
        }
    }

    /// Whether `req` may change something: no token is set, or it carries it.
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        self.token
            .as_deref()
            .is_none_or(|token| bearer_matches(req.headers(), token))
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/weight") => weight_json(StatusCode::OK, self.proxy.weight()),
            (&Method::PUT, "/weight") if !host_is_an_address(req.headers()) => error(
                StatusCode::FORBIDDEN,
                "PUT /weight refused: the Host must be an IP address or localhost (a DNS name here is how a web page rebinds its own name to this machine)",
            ),
            (&Method::PUT, "/weight") if !self.authorized(&req) => {
                let mut resp = error(
                    StatusCode::UNAUTHORIZED,
                    "PUT /weight needs `Authorization: Bearer TOKEN` with the proxy's token (--token or SERIN_TOKEN)",
                );
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                resp
            }
            (&Method::PUT, "/weight") => self.put_weight(req).await,
            (_, "/metrics") => not_allowed("GET"),
            (_, "/weight") => not_allowed("GET, PUT"),
            _ => error(
                StatusCode::NOT_FOUND,
                "not found: the admin endpoints are GET /metrics, GET /weight and PUT /weight",
            ),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let snapshot = self.proxy.recorder().snapshot();
        let mut out = String::with_capacity(8 * 1024);
        prometheus::encode(
            &[RolloutMetrics {
                rollout: &self.rollout,
                weight: self.proxy.weight(),
                snapshot: &snapshot,
            }],
            &mut out,
        );
        respond(StatusCode::OK, prometheus::CONTENT_TYPE, out)
    }

    async fn put_weight(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let expected = "expected a JSON body {\"weight\": N} with N a number from 0 to 100 with at most two decimals";
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{expected}; the body was unreadable or over {MAX_BODY} bytes"),
                );
            }
        };
        let parsed: WeightBody = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(err) => return error(StatusCode::BAD_REQUEST, &format!("{expected}; {err}")),
        };
        let weight = match Weight::from_percent(parsed.weight) {
            Ok(w) => w,
            Err(err) => return error(StatusCode::BAD_REQUEST, &format!("weight: {err}")),
        };
        self.proxy.set_weight(weight);
        tracing::info!(rollout = %self.rollout, %weight, "canary weight set");
        weight_json(StatusCode::OK, weight)
    }
}

/// Whether the request's one `Host` names the admin by address (`127.0.0.1:9901`,
/// `[::1]:9901`) or as `localhost`. A page on another site that rebinds its
/// own DNS name to this machine sends that name as Host: it may not steer
/// the weight (its browser sees one origin, so no CORS check stops it).
fn host_is_an_address(headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("localhost.")
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` with this `token`,
/// compared in constant time so that it cannot be guessed byte by byte from
/// response times. The one check for a bearer token: the proxy's admin
/// `PUT /weight` and `serin serve`'s API both need it.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn weight_json(status: StatusCode, weight: Weight) -> Response<Full<Bytes>> {
    // Weight's Display is a JSON number: `25`, `5.25`, never `25.0`.
    respond(
        status,
        "application/json",
        format!("{{\"weight\":{weight}}}\n"),
    )
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string() + "\n";
    respond(status, "application/json", body)
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; use {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_address_or_localhost_may_be_the_host_of_a_weight_change() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::HOST, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        for ok in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "[::1]:9901",
            "localhost:9901",
            "LOCALHOST",
            "10.0.0.5:80",
        ] {
            assert!(host_is_an_address(&with(&[ok])), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "",
            "a b",
        ] {
            assert!(!host_is_an_address(&with(&[bad])), "{bad:?}");
        }
        assert!(!host_is_an_address(&HeaderMap::new()), "no Host");
        assert!(
            !host_is_an_address(&with(&["127.0.0.1", "127.0.0.1"])),
            "two Hosts"
        );
    }

    #[test]
    fn bearer_tokens() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            h
        };
        assert!(bearer_matches(&with("Bearer s3cret"), "s3cret"));
        for wrong in [
            "Bearer s3creT",
            "Bearer s3cre",
            "Bearer s3crets",
            "bearer s3cret",
            "s3cret",
            "Basic s3cret",
        ] {
            assert!(!bearer_matches(&with(wrong), "s3cret"), "{wrong}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }
}
