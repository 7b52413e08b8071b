//! A rollout brought to life: its data plane (the built-in proxy, listening),
//! its analysis, and its driver task. `serin run` runs one; `serin serve`
//! runs one per registered rollout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serin_proxy::{Proxy, ProxyOptions, RoutingTable, Weight};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::controller::driver::{Analysis, Driver, DriverError, Handle, TrafficRouter};
use crate::controller::machine::Plan;
use crate::providers::traffic::builtin::BuiltinRouter;
use crate::store::{RolloutRecord, Store};

/// Builds a fresh analysis (metric source and judge) for a rollout whose
/// built-in proxy is `proxy` (None for other providers).
pub type AnalysisFactory = Arc<dyn Fn(Option<Arc<Proxy>>) -> Box<dyn Analysis> + Send + Sync>;

/// Everything needed to run a rollout, taken from its rollout file.
#[derive(Clone)]
pub struct Setup {
    /// The rollout's name.
    pub name: String,
    /// The stable version.
    pub stable_version: String,
    /// The canary version named in the file.
    pub canary_version: String,
    /// Where the built-in proxy listens.
    pub listen: SocketAddr,
    /// Upstreams, sticky key and routes, with the weight at 0.
    pub table: RoutingTable,
    /// The steps and their timing, for the state machine.
    pub plan: Plan,
    /// Makes the analysis.
    pub analysis: AnalysisFactory,
}

/// The built-in proxy of one rollout, listening.
pub struct DataPlane {
    /// The proxy (weight changes, recorder).
    pub proxy: Arc<Proxy>,
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("traffic.listen {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// What the OS said (in use, not permitted, ...).
    #[source]
    pub source: std::io::Error,
}

impl DataPlane {
    /// Binds `setup.listen` and serves the proxy with `weight` on the canary.
    pub async fn start(setup: &Setup, weight: Weight) -> Result<DataPlane, BindError> {
        let listener = tokio::net::TcpListener::bind(setup.listen)
            .await
            .map_err(|source| BindError {
                addr: setup.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| BindError {
            addr: setup.listen,
            source,
        })?;
        let proxy = Proxy::new(setup.table.with_weight(weight), ProxyOptions::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serin_proxy::serve(listener, proxy.clone(), async move {
            let _ = stopped.await;
        }));
        tracing::info!(rollout = %setup.name, %addr, "proxy listening");
        Ok(DataPlane {
            proxy,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The traffic router that drives this proxy.
    pub fn router(&self) -> Arc<dyn TrafficRouter> {
        Arc::new(BuiltinRouter::new(self.proxy.clone()))
    }

    /// Stops accepting, drains open requests, and returns when done.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A driver running on its own task.
pub struct RunningDriver {
    /// Commands go here.
    pub handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<RolloutRecord, DriverError>>,
}

impl RunningDriver {
    /// Spawns the driver for `record` on `plane`.
    pub fn spawn(
        setup: &Setup,
        store: Store,
        record: RolloutRecord,
        plane: &DataPlane,
    ) -> RunningDriver {
        let analysis = (setup.analysis)(Some(plane.proxy.clone()));
        let (driver, handle) =
            Driver::new(setup.plan.clone(), store, record, plane.router(), analysis);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(async move {
            let _ = stopped.await;
        }));
        RunningDriver {
            handle,
            stop: Some(stop),
            task,
        }
    }

    /// Whether the driver has stopped (the rollout ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the rollout ends (or `interrupt` resolves, which stops the
    /// driver with the rollout left where it is, to be resumed later).
    pub async fn finish(
        mut self,
        interrupt: impl Future<Output = ()>,
    ) -> Result<RolloutRecord, DriverError> {
        tokio::pin!(interrupt);
        let stop = self.stop.take();
        tokio::select! {
            r = &mut self.task => return r.map_err(|_| DriverError::Stopped)?,
            () = &mut interrupt => {}
        }
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        self.task.await.map_err(|_| DriverError::Stopped)?
    }
}

/// The daemon's rollout-file parser.
pub fn parser() -> crate::daemon::Parser {
    Arc::new(|text: &str, origin: &str| {
        Err(format!(
            "{origin}: rollout files cannot be read by this build yet ({} bytes)",
            text.len()
        ))
    })
}
