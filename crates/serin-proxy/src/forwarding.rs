//! What an HTTP/1.1 gateway changes in the messages it forwards (RFC 9110 7.6,
//! RFC 9112), and the request checks hyper leaves to us.
//!
//! - Hop-by-hop fields go, in both directions: `Connection` and every field it
//!   names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//!   `Transfer-Encoding` and `Upgrade`. hyper re-frames each message for its
//!   own hop (Content-Length or chunked). `Connection` cannot remove `Host`
//!   (which names the target, RFC 9110 7.2) nor `Content-Length` (which
//!   frames the message): a sender naming them gets them forwarded.
//! - Requests get `X-Forwarded-For` (the client's IP appended to any list it
//!   sent), `X-Forwarded-Proto: http` (replacing what the client sent: serin
//!   terminates plain HTTP only) and `Via: 1.1 serin` appended (RFC 9110 7.6.3
//!   requires it of a gateway on requests; it is optional on responses, and
//!   serin leaves responses alone).
//! - The client's `Host` is kept, as nginx's `proxy_set_header Host $host`
//!   does, so upstreams see the name the client asked for. With an
//!   absolute-form target (`GET http://a/x`) the target's authority wins over
//!   `Host`, as RFC 9112 3.2.2 requires. A target with userinfo
//!   (`http://u:p@host/`, forbidden by RFC 9110 4.2.4) is refused with 400, so
//!   that a request never names two hosts.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Version};

/// `Via` value for forwarded requests.
const VIA: HeaderValue = HeaderValue::from_static("1.1 serin");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadRequest {
    /// HTTP/1.1 without `Host`, or with more than one (RFC 9112 3.2).
    Host,
    /// A `Host` value that is not an authority (`host[:port]`).
    HostValue,
    /// `CONNECT`: serin is a gateway, not a forward proxy.
    Connect,
    /// An absolute-form target with userinfo (`http://u:p@host/`).
    Userinfo,
}

impl BadRequest {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            BadRequest::Host => "an HTTP/1.1 request needs exactly one Host header\n",
            BadRequest::HostValue => "the Host header must be host[:port]\n",
            BadRequest::Connect => "CONNECT is not supported by this gateway\n",
            BadRequest::Userinfo => {
                "the request target must not carry userinfo (user@host): RFC 9110 4.2.4\n"
            }
        }
    }
}

/// The checks RFC 9112 asks of a server that hyper does not make. (hyper itself
/// refuses differing duplicate `Content-Length`, a `Transfer-Encoding` whose last
/// coding is not chunked, `Transfer-Encoding` in HTTP/1.0, obs-fold and bad
/// field syntax, with 400 and a closed connection.)
pub(crate) fn check_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    authority: Option<&Authority>,
) -> Result<(), BadRequest> {
    if method == Method::CONNECT {
        return Err(BadRequest::Connect);
    }
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return Err(BadRequest::Userinfo);
    }
    let has_authority = authority.is_some();
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(BadRequest::Host),
        (None, _) if version == Version::HTTP_11 && !has_authority => return Err(BadRequest::Host),
        (Some(h), None) if !is_host(h.as_bytes()) => return Err(BadRequest::HostValue),
        _ => {}
    }
    Ok(())
}

/// Whether a `Host` value is an authority (`host[:port]`) without userinfo.
fn is_host(value: &[u8]) -> bool {
    // The usual `name.example:8080` is checked without parsing; anything
    // else goes to the URI parser.
    let (name, port) = match value.iter().rposition(|&b| b == b':') {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let plain = name.first().is_some_and(u8::is_ascii_alphanumeric)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit));
    plain
        || std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| !a.as_str().contains('@'))
}

/// The fixed hop-by-hop fields (RFC 9110 7.6.1); `Connection` may name more.
const HOPS: usize = 7;

/// Which of the fixed hop-by-hop fields `name` is, if any. A match on the
/// (lowercase) name compiles to a length switch and one comparison, cheaper
/// than comparing with each name in turn; this runs for every field of every
/// message.
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        _ => None,
    }
}

/// Fields `Connection` cannot make hop-by-hop: `Host` names the target and
/// `Content-Length` frames the message; removing either would let a request
/// mean something else upstream than it did here.
fn end_to_end(name: &HeaderName) -> bool {
    name == header::HOST || name == header::CONTENT_LENGTH
}

/// Removes the hop-by-hop fields: the fixed set, and those `Connection` names
/// (except [`end_to_end`] ones).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present: most messages carry
    // none (or only `Connection`), and each removal is a hash lookup.
    let mut present: [Option<HeaderName>; HOPS] = Default::default();
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present[i] = Some(name.clone());
        }
    }
    if present.iter().all(Option::is_none) {
        return;
    }
    // `Connection: keep-alive` (the usual) names a field removed anyway.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|token| !token.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| {
            hop_by_hop(name).is_none() && !end_to_end(name) && headers.contains_key(name)
        })
        .collect();
    for name in present.into_iter().flatten() {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// Adds what the upstream should know about the client and the hop.
/// `client_ip` is the peer address as a header value, made once per connection.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Vacant(e) => {
            e.insert(client_ip.clone());
        }
        header::Entry::Occupied(mut e) => {
            // Several lines are one comma-separated list (RFC 9110 5.3): join
            // them so upstreams that read only the first line see the client.
            let mut joined = Vec::new();
            for line in e.iter() {
                joined.extend_from_slice(line.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client_ip.as_bytes());
            let xff = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone());
            e.insert(xff);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.append(header::VIA, VIA);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "x-secret, Keep-Alive"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
            ("content-length", "4"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn the_name_match_knows_each_fixed_field() {
        let fixed = [
            header::CONNECTION,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ];
        for (i, name) in fixed.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop(&header::HOST), None);
        assert_eq!(hop_by_hop(&HeaderName::from_static("x-te")), None);
    }

    #[test]
    fn connection_options_are_removed_whatever_their_case() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("host", "a"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host"]);
        let mut named = map(&[
            ("connection", "Host, content-length, x-gone"),
            ("host", "a"),
            ("content-length", "3"),
            ("x-gone", "1"),
        ]);
        strip_hop_by_hop(&mut named);
        let mut left: Vec<_> = named.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host"]);
        let mut none = map(&[("host", "a"), ("x-kept", "1")]);
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 2);
    }

    #[test]
    fn host_values_are_checked_as_the_uri_parser_does() {
        for ok in [
            "a",
            "a.example:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]:8080",
            "xn--bcher-kva.example",
            "a_b.example",
            "a:",
        ] {
            assert!(is_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a b", "u@a", "a/b", "a?b", "[::1"] {
            assert!(!is_host(bad.as_bytes()), "{bad}");
        }
    }

    proptest::proptest! {
        /// The fast path never accepts what the URI parser refuses.
        #[test]
        fn host_fast_path_agrees_with_the_uri_parser(value in "[a-zA-Z0-9.:@_\\[\\]-]{0,12}") {
            let parsed = value
                .parse::<http::uri::Authority>()
                .is_ok_and(|a| !a.as_str().contains('@'));
            proptest::prop_assert_eq!(is_host(value.as_bytes()), parsed);
        }
    }

    #[test]
    fn appends_client_ip_and_via() {
        let ip = HeaderValue::from_static("127.0.0.1");
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("via", "1.0 edge"),
        ]);
        add_forwarded(&mut h, &ip);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        let via: Vec<_> = h
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(via, ["1.0 edge", "1.1 serin"]);
        let mut fresh = HeaderMap::new();
        add_forwarded(&mut fresh, &ip);
        assert_eq!(fresh["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn host_rules() {
        let get = Method::GET;
        let a: Authority = "a.example:8080".parse().unwrap();
        for userinfo in ["u:p@evil.example", "u@a", "@a:80"] {
            let with: Authority = userinfo.parse().unwrap();
            assert_eq!(
                check_request(&get, Version::HTTP_11, &map(&[("host", "a")]), Some(&with)),
                Err(BadRequest::Userinfo),
                "{userinfo}"
            );
        }
        assert_eq!(
            check_request(&get, Version::HTTP_11, &map(&[]), None),
            Err(BadRequest::Host)
        );
        assert_eq!(
            check_request(&get, Version::HTTP_11, &map(&[]), Some(&a)),
            Ok(())
        );
        assert_eq!(
            check_request(&get, Version::HTTP_10, &map(&[]), None),
            Ok(())
        );
        assert_eq!(
            check_request(
                &get,
                Version::HTTP_11,
                &map(&[("host", "a"), ("host", "b")]),
                None
            ),
            Err(BadRequest::Host)
        );
        assert_eq!(
            check_request(&get, Version::HTTP_11, &map(&[("host", "a b")]), None),
            Err(BadRequest::HostValue)
        );
        assert_eq!(
            check_request(&get, Version::HTTP_11, &map(&[("host", "u@a")]), None),
            Err(BadRequest::HostValue)
        );
        assert_eq!(
            check_request(
                &get,
                Version::HTTP_11,
                &map(&[("host", "a.example:8080")]),
                None
            ),
            Ok(())
        );
        assert_eq!(
            check_request(
                &Method::CONNECT,
                Version::HTTP_11,
                &map(&[("host", "a:1")]),
                None
            ),
            Err(BadRequest::Connect)
        );
    }
}
