//! The built-in proxy as a traffic router: a weight change is one atomic swap
//! of the routing table, in-process, so a rollback takes effect on the next
//! request.
//!
//! The baseline, when the rollout has one, is the proxy table's own
//! ([`RoutingTable::with_baseline`]): every weight gives it the canary's
//! share, and a promotion ends it with the rest of the old table.

use std::sync::Arc;

use serin_proxy::{Proxy, Route, RoutingTable, Upstream, Version, Weight};

use crate::controller::probe;
use crate::controller::seams::{BoxFuture, TrafficRouter};
use crate::error::{Error, Kind};

/// The path asked by the health check. Any answer below 500 means the
/// version is up (a service without `/healthz` answers 404, which is fine).
pub const HEALTH_PATH: &str = "/healthz";

/// Health-checks plain-HTTP upstreams: each must answer [`HEALTH_PATH`]
/// below 500; one that does not is unavailable.
pub async fn check_upstreams(upstreams: &[(Version, &Upstream)]) -> Result<(), Error> {
    for (version, upstream) in upstreams {
        let url = format!("{upstream}{HEALTH_PATH}");
        match probe::get(&url).await {
            Ok(status) if status.as_u16() < 500 => {}
            Ok(status) => {
                return Err(Error::unavailable(format!(
                    "{version} {url} answered {status}"
                )));
            }
            Err(e) => return Err(Error::unavailable(format!("{version} {url}: {e}"))),
        }
    }
    Ok(())
}

/// Routes through an in-process [`Proxy`]. The header and cookie routes
/// of the proxy's table are in force only while a run is: kept here, put
/// into the table by every [`apply_weight`](TrafficRouter::apply_weight),
/// taken out by [`withdraw`](TrafficRouter::withdraw).
pub struct BuiltinRouter {
    proxy: Arc<Proxy>,
    routes: std::sync::Mutex<Vec<Route>>,
}

impl BuiltinRouter {
    /// Drives `proxy`; the routes of its table wait for the first weight.
    pub fn new(proxy: Arc<Proxy>) -> BuiltinRouter {
        let router = BuiltinRouter {
            proxy,
            routes: std::sync::Mutex::new(Vec::new()),
        };
        router.set_table(&router.proxy.table());
        router
    }

    /// A new table (a new run's upstreams) at the weight in force; its
    /// routes wait for the run's first weight.
    pub fn set_table(&self, table: &RoutingTable) {
        if let Ok(mut routes) = self.routes.lock() {
            *routes = table.routes().to_vec();
        }
        self.proxy.set_table(
            table
                .with_weight(self.proxy.weight())
                .with_routes(Vec::new()),
        );
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl TrafficRouter for BuiltinRouter {
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let table = self.proxy.table();
            let mut upstreams = vec![
                (Version::Stable, table.upstream(Version::Stable)),
                (Version::Canary, table.upstream(Version::Canary)),
            ];
            if let Some(baseline) = table.baseline() {
                upstreams.push((Version::Baseline, baseline));
            }
            check_upstreams(&upstreams).await
        })
    }

    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), Error>> {
        let table = self.proxy.table();
        let routes = self.routes();
        if table.routes() == routes.as_slice() {
            self.proxy.set_weight(weight);
        } else {
            self.proxy
                .set_table(table.with_weight(weight).with_routes(routes));
        }
        Box::pin(async { Ok(()) })
    }

    fn withdraw(&self) -> BoxFuture<'_, Result<(), Error>> {
        let table = self.proxy.table();
        self.proxy
            .set_table(table.with_weight(Weight::ZERO).with_routes(Vec::new()));
        Box::pin(async { Ok(()) })
    }

    /// All traffic on the canary's upstream, now the stable's; the baseline
    /// (the old stable's version) is left out of the new table.
    fn promote(&self) -> BoxFuture<'_, Result<(), Error>> {
        let old = self.proxy.table();
        let canary = old.upstream(Version::Canary).to_string();
        let result = RoutingTable::new(&canary, &canary, Weight::ZERO)
            .map(|t| {
                t.with_sticky(old.sticky().cloned())
                    .with_routes(old.routes().to_vec())
            })
            .map(|t| self.proxy.set_table(t))
            // The canary's upstream was a table's already: never refused.
            .map_err(|e| Error::new(Kind::Internal, e.to_string()));
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_proxy::ProxyOptions;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An upstream answering every request 200 (one per connection).
    async fn healthy() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_baseline_is_checked_for_readiness_and_left_out_at_promotion() {
        // Nothing listens on the baseline's port: not ready, naming it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let up = healthy().await;
        let table = RoutingTable::new(&up, &up, Weight::from_percent(10.0).unwrap())
            .unwrap()
            .with_baseline(Some(
                Upstream::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            ));
        let proxy = Proxy::new(table, ProxyOptions::default());
        let router = BuiltinRouter::new(proxy.clone());
        let err = router.check_ready().await.unwrap_err().to_string();
        assert!(err.starts_with("baseline http://127.0.0.1:"), "{err}");
        router.promote().await.unwrap();
        let promoted = proxy.table();
        assert!(promoted.baseline().is_none());
        assert_eq!(promoted.baseline_share(), Weight::ZERO);
        router.check_ready().await.unwrap();
    }
}
