//! The routing table: everything the proxy needs to choose a version and find
//! its upstream, as one immutable value.
//!
//! The proxy keeps the whole table behind a single atomic swap, so a request
//! sees either the old table or the new one, never a mix (a new weight with old
//! routes, say). Every field is validated here, once; the request path trusts it.

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};

use crate::weight::{Version, Weight};

/// A routing table that cannot be built, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An upstream address that is not `http://host:port` (optionally with a
    /// trailing `/`).
    #[error(
        "expected an upstream URL of the form http://host:port (only plain http, no path), got `{url}`: {reason}"
    )]
    Upstream {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header name that HTTP does not allow (a token without spaces or separators).
    #[error("expected a header name (letters, digits and !#$%&'*+-.^_`|~), got `{0}`")]
    HeaderName(String),
    /// A header value with control characters.
    #[error("expected a header value without control characters, got `{0}`")]
    HeaderValue(String),
    /// A cookie name that is empty or holds separators.
    #[error("expected a cookie name (a token without `=`, `;`, spaces or quotes), got `{0}`")]
    CookieName(String),
    /// A cookie value with characters a cookie cannot carry.
    #[error("expected a cookie value without `;`, `,`, spaces, quotes or backslashes, got `{0}`")]
    CookieValue(String),
}

/// Where one version's requests go: a plain-HTTP origin (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: Authority,
}

impl Upstream {
    /// Parses `http://host:port` or `http://host:port/`. A missing port means 80.
    /// HTTPS, paths, queries and credentials are refused: serin forwards the
    /// client's path unchanged to the upstream's root.
    pub fn parse(url: &str) -> Result<Upstream, ConfigError> {
        let bad = |reason| ConfigError::Upstream {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https upstreams are not supported")),
            Some(_) => return Err(bad("the scheme must be http")),
            None => return Err(bad("missing http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if authority.host().is_empty() {
            return Err(bad("missing host"));
        }
        let wrote_port = authority
            .as_str()
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.contains(']'));
        if wrote_port && authority.port_u16().is_none_or(|p| p == 0) {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        if let Some(pq) = uri.path_and_query()
            && (pq.query().is_some() || !matches!(pq.path(), "" | "/"))
        {
            return Err(bad("a path or query is not supported"));
        }
        Ok(Upstream { authority })
    }

    /// `host:port` as given (the port only if it was written).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The URI scheme, always `http`.
    pub fn scheme(&self) -> Scheme {
        Scheme::HTTP
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// The request field that identifies a user for sticky assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this header (its first line).
    Header(HeaderName),
}

impl StickyKey {
    /// Sticky by cookie `name`.
    pub fn cookie(name: &str) -> Result<StickyKey, ConfigError> {
        Ok(StickyKey::Cookie(cookie_name(name)?))
    }

    /// Sticky by header `name` (case-insensitive).
    pub fn header(name: &str) -> Result<StickyKey, ConfigError> {
        Ok(StickyKey::Header(header_name(name)?))
    }
}

/// What a route override looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A header line of this name whose value equals this value exactly.
    Header {
        /// Header name (case-insensitive).
        name: HeaderName,
        /// Value, compared byte for byte.
        value: HeaderValue,
    },
    /// A cookie of this name whose value equals this value exactly.
    Cookie {
        /// Cookie name (case-sensitive, as browsers send it).
        name: String,
        /// Cookie value, compared byte for byte (surrounding quotes ignored).
        value: String,
    },
}

/// An A/B override: requests that match go to `version`, whatever the weight.
/// Routes are checked before the weight, in order; the first match wins.
///
/// A route sends to the stable or the canary. The baseline is reached by the
/// weight only: a route built by hand with [`Version::Baseline`] sends to the
/// stable (the baseline's own version), so the baseline's share stays the
/// canary's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The condition.
    pub when: Match,
    /// Where matching requests go.
    pub version: Version,
}

impl Route {
    /// Requests whose header `name` equals `value` go to `version`.
    pub fn header(name: &str, value: &str, version: Version) -> Result<Route, ConfigError> {
        let name = header_name(name)?;
        let value =
            HeaderValue::from_str(value).map_err(|_| ConfigError::HeaderValue(value.to_owned()))?;
        Ok(Route {
            when: Match::Header { name, value },
            version,
        })
    }

    /// Requests carrying cookie `name` with value `value` go to `version`.
    pub fn cookie(name: &str, value: &str, version: Version) -> Result<Route, ConfigError> {
        let name = cookie_name(name)?;
        let bad_value = |c: char| c.is_ascii_control() || " \",;\\".contains(c) || !c.is_ascii();
        if value.chars().any(bad_value) {
            return Err(ConfigError::CookieValue(value.to_owned()));
        }
        Ok(Route {
            when: Match::Cookie {
                name,
                value: value.to_owned(),
            },
            version,
        })
    }
}

/// The whole routing decision's input, immutable once built.
///
/// Change it by building a new one (`with_weight`, `with_sticky`, ...) and
/// handing it to [`Proxy::set_table`](crate::Proxy::set_table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    stable: Upstream,
    canary: Upstream,
    baseline: Option<Upstream>,
    weight: Weight,
    sticky: Option<StickyKey>,
    routes: Vec<Route>,
}

impl RoutingTable {
    /// A table with two upstreams (`http://host:port`) and the canary weight;
    /// no baseline, no sticky key and no routes.
    pub fn new(stable: &str, canary: &str, weight: Weight) -> Result<RoutingTable, ConfigError> {
        Ok(RoutingTable {
            stable: Upstream::parse(stable)?,
            canary: Upstream::parse(canary)?,
            baseline: None,
            weight,
            sticky: None,
            routes: Vec::new(),
        })
    }

    /// The same table with another canary weight.
    pub fn with_weight(&self, weight: Weight) -> RoutingTable {
        RoutingTable {
            weight,
            ..self.clone()
        }
    }

    /// The same table with sticky assignment by `key` (or none).
    pub fn with_sticky(self, key: Option<StickyKey>) -> RoutingTable {
        RoutingTable {
            sticky: key,
            ..self
        }
    }

    /// The same table with a baseline upstream (or none): a fresh copy of the
    /// stable's version that gets the canary's share of the requests that
    /// reach the weight ([`Weight::baseline_share`]), taken from the stable's.
    pub fn with_baseline(self, baseline: Option<Upstream>) -> RoutingTable {
        RoutingTable { baseline, ..self }
    }

    /// The same table with these route overrides, checked in order.
    pub fn with_routes(self, routes: Vec<Route>) -> RoutingTable {
        RoutingTable { routes, ..self }
    }

    /// The canary weight.
    pub fn weight(&self) -> Weight {
        self.weight
    }

    /// The baseline's upstream, if the table has one.
    pub fn baseline(&self) -> Option<&Upstream> {
        self.baseline.as_ref()
    }

    /// The baseline's share of the requests that reach the weight: the
    /// canary's ([`Weight::baseline_share`]) with a baseline, else zero.
    pub fn baseline_share(&self) -> Weight {
        match self.baseline {
            Some(_) => self.weight.baseline_share(),
            None => Weight::ZERO,
        }
    }

    /// The sticky key, if any.
    pub fn sticky(&self) -> Option<&StickyKey> {
        self.sticky.as_ref()
    }

    /// The route overrides, in the order they are checked.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Where `version`'s requests go. A table without a baseline routes
    /// nothing to it; asked anyway, it answers the stable's upstream (the
    /// baseline's version).
    pub fn upstream(&self, version: Version) -> &Upstream {
        match version {
            Version::Stable => &self.stable,
            Version::Canary => &self.canary,
            Version::Baseline => self.baseline.as_ref().unwrap_or(&self.stable),
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::HeaderName(name.to_owned()))
}

fn cookie_name(name: &str) -> Result<String, ConfigError> {
    // RFC 6265 4.1.1: a cookie name is an HTTP token.
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(ConfigError::CookieName(name.to_owned()));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_host_port() {
        for ok in [
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9001/",
            "http://localhost:80",
            "http://example.com",
            "http://[::1]:8080",
        ] {
            assert!(Upstream::parse(ok).is_ok(), "{ok}");
        }
        let u = Upstream::parse("http://127.0.0.1:9001/").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9001");
    }

    #[test]
    fn refuses_anything_else_with_a_reason() {
        for (bad, reason) in [
            ("https://127.0.0.1:9001", "https"),
            ("127.0.0.1:9001", "http://"),
            ("ftp://h:1", "scheme"),
            ("http://h:1/api", "path"),
            ("http://h:1/?q=1", "path"),
            ("http://user@h:1", "credentials"),
            ("http://h:", "port"),
            ("http://h:99999", "port"),
            ("http://h:0", "port"),
            ("not a url", "URL"),
            ("", "URL"),
        ] {
            let err = Upstream::parse(bad).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
            assert!(err.contains("http://host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn validates_names_and_values() {
        assert!(StickyKey::header("x-user-id").is_ok());
        assert!(StickyKey::header("x user").is_err());
        assert!(StickyKey::cookie("session").is_ok());
        assert!(StickyKey::cookie("a=b").is_err());
        assert!(StickyKey::cookie("").is_err());
        assert!(Route::header("x-canary", "always", Version::Canary).is_ok());
        assert!(Route::header("x-canary", "a\nb", Version::Canary).is_err());
        assert!(Route::cookie("beta", "yes", Version::Canary).is_ok());
        assert!(Route::cookie("beta", "a;b", Version::Canary).is_err());
    }
}
