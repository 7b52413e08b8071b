//! The built-in proxy as a traffic router: a weight change is one atomic swap
//! of the routing table, in-process, so a rollback takes effect on the next
//! request.

use std::sync::Arc;

use serin_proxy::{Proxy, RoutingTable, Upstream, Version, Weight};

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

/// Routes through an in-process [`Proxy`].
pub struct BuiltinRouter {
    proxy: Arc<Proxy>,
}

impl BuiltinRouter {
    /// Drives `proxy`.
    pub fn new(proxy: Arc<Proxy>) -> BuiltinRouter {
        BuiltinRouter { proxy }
    }
}

impl TrafficRouter for BuiltinRouter {
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let table = self.proxy.table();
            check_upstreams(&[
                (Version::Stable, table.upstream(Version::Stable)),
                (Version::Canary, table.upstream(Version::Canary)),
            ])
            .await
        })
    }

    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), Error>> {
        self.proxy.set_weight(weight);
        Box::pin(async { Ok(()) })
    }

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
