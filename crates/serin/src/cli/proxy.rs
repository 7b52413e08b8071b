//! `serin proxy`: the data plane alone, a traffic-splitting reverse proxy.
//!
//! Every flag is checked before any socket is bound; a bad one is exit 2 with
//! a message naming the flag and what was expected. An `--admin` address off
//! loopback needs `--token` (as `serin serve --listen` does): the admin
//! address sets the canary weight, and without a token anyone who could
//! reach it could. Then the proxy (and the
//! admin server, with `--admin`) serve until SIGINT or SIGTERM, and drain open
//! requests before exiting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use serin_proxy::{Proxy, ProxyOptions, Route, RoutingTable, StickyKey, Version, Weight};
use tokio::net::TcpListener;

use crate::exit::{Exit, invalid};

/// Flags of `serin proxy`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Upstreams are plain HTTP origins, http://host:port (no https, no path): the client's \
path and query are forwarded unchanged. The client's Host header is kept (like nginx's \
`proxy_set_header Host $host`); X-Forwarded-For gets the client's IP appended, \
X-Forwarded-Proto is set to http, and Via: 1.1 serin is added.

Route overrides are checked before the weight, --route-header ones first, each in the \
order given; the first match wins. NAME=VALUE sends matching requests to the canary; \
NAME=VALUE=stable or NAME=VALUE=canary says which version.

The admin address serves GET /metrics (Prometheus text; every series carries \
rollout=\"<--name>\"), GET /weight and PUT /weight with {\"weight\": 25}. With --token, \
PUT /weight needs `Authorization: Bearer TOKEN`; an --admin address that is not loopback \
needs a token.

Timeouts count where the fault is: --upstream-timeout (no response head: 504, an error \
of the version; it does not run while the client is still sending its body), \
--upstream-body-timeout (the response body stalls: the response is cut, an error of the \
version), --client-body-timeout (the client's body stalls: 408, no version's error). A \
client that gives up before the response head counts as a timeout of the version.")]
pub struct Args {
    /// Address for client traffic, HOST:PORT (port 0 picks a free one; the
    /// chosen address is logged).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,

    /// The stable version's upstream, http://host:port.
    #[arg(long, value_name = "URL")]
    pub stable: String,

    /// The canary version's upstream, http://host:port.
    #[arg(long, value_name = "URL")]
    pub canary: String,

    /// Percentage of requests sent to the canary, 0-100 with up to two decimals.
    #[arg(long, value_name = "PCT", default_value = "0")]
    pub weight: String,

    /// Keep each user on one version by this cookie's value.
    #[arg(long, value_name = "NAME", conflicts_with = "sticky_header")]
    pub sticky_cookie: Option<String>,

    /// Keep each user on one version by this header's value.
    #[arg(long, value_name = "NAME")]
    pub sticky_header: Option<String>,

    /// Requests whose header NAME equals VALUE go to the canary (or to the
    /// version named by a third part). Repeatable.
    #[arg(long = "route-header", value_name = "NAME=VALUE[=stable|canary]")]
    pub route_header: Vec<String>,

    /// Requests whose cookie NAME equals VALUE go to the canary (or to the
    /// version named by a third part). Repeatable.
    #[arg(long = "route-cookie", value_name = "NAME=VALUE[=stable|canary]")]
    pub route_cookie: Vec<String>,

    /// Address for the admin endpoints (/metrics, /weight), HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// How long to wait for an upstream's response headers before answering
    /// 504, e.g. 30s, 500ms, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub upstream_timeout: String,

    /// How long to wait for each next part of an upstream's response body
    /// before cutting the response.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub upstream_body_timeout: String,

    /// How long to wait for each next part of a client's request body before
    /// answering 408.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub client_body_timeout: String,

    /// Bearer token that PUT /weight on the admin address must carry;
    /// required when --admin is not a loopback address.
    #[arg(
        long,
        env = "SERIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// The `rollout` label of the metrics.
    #[arg(long, value_name = "NAME", default_value = "proxy")]
    pub name: String,
}

/// The flags, checked.
struct Config {
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    table: RoutingTable,
    options: ProxyOptions,
    name: String,
    token: Option<String>,
}

/// Runs `serin proxy` until SIGINT or SIGTERM.
///
/// The proxy is served by [`serin_proxy::serve_per_core`], as a rollout's
/// built-in proxy in `serin run` and `serin serve` is: one single-threaded
/// runtime per core, each with its own upstream pool, so a request is served
/// start to end on one thread. The main thread runs the admin server and
/// waits for signals.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let config = check(args)?;
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    main.block_on(serve(config))
}

fn check(args: Args) -> anyhow::Result<Config> {
    let listen = address("--listen", &args.listen)?;
    let admin = args
        .admin
        .as_deref()
        .map(|a| address("--admin", a))
        .transpose()?;
    let token = args.token.as_deref().map(token).transpose()?;
    if let Some(admin) = admin
        && !admin.ip().is_loopback()
        && token.is_none()
    {
        return Err(invalid(format!(
            "--admin {admin}: a non-loopback address needs a token (--token or SERIN_TOKEN), or anyone who can reach it could set the canary weight"
        )));
    }
    let weight: Weight = args
        .weight
        .parse()
        .map_err(|e| invalid(format!("--weight: {e}")))?;
    let mut table = RoutingTable::new(&args.stable, &args.canary, weight).map_err(|e| {
        // Say which of the two URLs is wrong.
        let flag = if serin_proxy::Upstream::parse(&args.stable).is_err() {
            "--stable"
        } else {
            "--canary"
        };
        invalid(format!("{flag}: {e}"))
    })?;
    let sticky = match (&args.sticky_cookie, &args.sticky_header) {
        (Some(c), _) => {
            Some(StickyKey::cookie(c).map_err(|e| invalid(format!("--sticky-cookie: {e}")))?)
        }
        (None, Some(h)) => {
            Some(StickyKey::header(h).map_err(|e| invalid(format!("--sticky-header: {e}")))?)
        }
        (None, None) => None,
    };
    let mut routes = Vec::new();
    for spec in &args.route_header {
        routes.push(route("--route-header", spec, Route::header)?);
    }
    for spec in &args.route_cookie {
        routes.push(route("--route-cookie", spec, Route::cookie)?);
    }
    table = table.with_sticky(sticky).with_routes(routes);
    let upstream_timeout = duration("--upstream-timeout", &args.upstream_timeout)?;
    let upstream_body_timeout = duration("--upstream-body-timeout", &args.upstream_body_timeout)?;
    let client_body_timeout = duration("--client-body-timeout", &args.client_body_timeout)?;
    Ok(Config {
        listen,
        admin,
        table,
        options: ProxyOptions {
            upstream_timeout,
            upstream_body_timeout,
            client_body_timeout,
            ..ProxyOptions::default()
        },
        name: args.name,
        token,
    })
}

/// A bearer token: visible ASCII without spaces, as an `Authorization:
/// Bearer TOKEN` header carries it unchanged.
fn token(value: &str) -> anyhow::Result<String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "--token: expected visible ASCII characters without spaces (it is sent as `Authorization: Bearer TOKEN`); got an empty, blank or spaced value".to_owned(),
        ));
    }
    Ok(value.to_owned())
}

fn address(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    let expected = || {
        invalid(format!(
            "{flag}: expected HOST:PORT such as 127.0.0.1:8080, got `{value}`"
        ))
    };
    value
        .to_socket_addrs()
        .map_err(|_| expected())?
        .next()
        .ok_or_else(expected)
}

/// `NAME=VALUE` or `NAME=VALUE=stable|canary`.
fn route(
    flag: &str,
    spec: &str,
    make: fn(&str, &str, Version) -> Result<Route, serin_proxy::ConfigError>,
) -> anyhow::Result<Route> {
    let expected = || {
        invalid(format!(
            "{flag}: expected NAME=VALUE or NAME=VALUE=stable|canary, got `{spec}`"
        ))
    };
    let (name, rest) = spec.split_once('=').ok_or_else(expected)?;
    let (value, version) = match rest.rsplit_once('=') {
        Some((v, "canary")) => (v, Version::Canary),
        Some((v, "stable")) => (v, Version::Stable),
        _ => (rest, Version::Canary),
    };
    if name.is_empty() || value.is_empty() {
        return Err(expected());
    }
    make(name, value, version).map_err(|e| invalid(format!("{flag} `{spec}`: {e}")))
}

/// A duration as every serin flag takes one (`30s`, `500ms`, `2m`, `1m30s`,
/// or a bare number of seconds), above zero and at most a day.
fn duration(flag: &str, value: &str) -> anyhow::Result<Duration> {
    let d = crate::time::parse_duration(value).map_err(|e| invalid(format!("{flag}: {e}")))?;
    if d.is_zero() || d > Duration::from_secs(86_400) {
        return Err(invalid(format!(
            "{flag}: expected a duration above 0 and at most 24h, got `{value}`"
        )));
    }
    Ok(d)
}

async fn serve(config: Config) -> anyhow::Result<Exit> {
    let listener = serin_proxy::bind_per_core(config.listen)
        .map_err(|e| crate::error::Error::cannot_listen("--listen", config.listen, &e))?;
    let listen = listener.local_addr();
    let admin_listener = match config.admin {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| crate::error::Error::cannot_listen("--admin", a, &e))?,
        ),
        None => None,
    };
    let table = config.table;
    tracing::info!(
        %listen,
        stable = %table.upstream(Version::Stable),
        canary = %table.upstream(Version::Canary),
        weight = %table.weight(),
        workers = listener.cores(),
        "proxy listening"
    );
    let proxy = Proxy::new(table, config.options);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let served = tokio::spawn(serin_proxy::serve_per_core(
        listener,
        proxy.clone(),
        until_stopped(stopped.clone()),
    ));

    let admin = match admin_listener {
        Some(l) => {
            let addr = l.local_addr().context("reading the --admin address")?;
            tracing::info!(
                admin = %addr,
                rollout = %config.name,
                token = config.token.is_some(),
                "admin listening (GET /metrics, GET/PUT /weight)"
            );
            Some(tokio::spawn(serin_proxy::serve_admin(
                l,
                proxy.clone(),
                config.name.clone(),
                config.token.clone(),
                until_stopped(stopped.clone()),
            )))
        }
        None => None,
    };

    crate::cli::signals::terminated().await;
    tracing::info!("shutting down: draining open requests");
    let _ = stop.send(true);
    if let Some(a) = admin {
        let _ = a.await;
    }
    served
        .await
        .context("waiting for the proxy")?
        .context("a proxy worker panicked")?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("--t", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            duration("--t", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(duration("--t", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("--t", "5").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("--t", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("--t", "5h").unwrap(), Duration::from_secs(18_000));
        for bad in ["", "0s", "-1s", "soon", "25h", "1.5", "1e400s"] {
            let err = duration("--t", bad).unwrap_err().to_string();
            assert!(err.starts_with("--t: expected"), "{bad}: {err}");
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(token("s3cret-~").unwrap(), "s3cret-~");
        for bad in ["", " ", "\t \n", "two words", " lead", "tail ", "é"] {
            let err = token(bad).unwrap_err().to_string();
            assert!(err.starts_with("--token: expected"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn routes() {
        let r = route("--route-header", "x-canary=always", Route::header).unwrap();
        assert_eq!(r.version, Version::Canary);
        let r = route("--route-header", "x-canary=no=stable", Route::header).unwrap();
        assert_eq!(r.version, Version::Stable);
        // Only a last part naming a version is taken as one.
        let r = route("--route-cookie", "beta=a=b", Route::cookie).unwrap();
        assert_eq!(r.version, Version::Canary);
        assert!(matches!(r.when, serin_proxy::Match::Cookie { ref value, .. } if value == "a=b"));
        for bad in ["novalue", "=x", "x=", "x y=1"] {
            let err = route("--route-header", bad, Route::header)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("--route-header"), "{bad}: {err}");
        }
    }
}
