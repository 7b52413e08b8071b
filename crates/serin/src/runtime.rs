//! A rollout brought to life: its data plane (the built-in proxy, listening),
//! its analysis, and its driver task. `serin run` runs one; `serin serve`
//! runs one per registered rollout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serin_proxy::{Proxy, ProxyOptions, RoutingTable, Version, Weight};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::controller::analysis::LiveAnalysis;
use crate::controller::driver::{Driver, DriverError, Handle};
use crate::controller::seams::MetricSource;
use crate::controller::seams::{Analysis, TrafficRouter};
use crate::error::Error;
use crate::notify::{self, Notifier};
use crate::providers::metrics::builtin::BuiltinSource;
use crate::providers::metrics::nginx_log::NginxLogSource;
use crate::providers::metrics::prometheus::PrometheusSource;
use crate::providers::traffic::builtin::BuiltinRouter;
use crate::providers::traffic::kubernetes::{KubeTarget, KubernetesRouter};
use crate::providers::traffic::nginx::{NginxConfig, NginxRouter};
use crate::rollout::{Plan, State};
use crate::spec::{NginxSettings, Provider, Rollout};
use crate::store::{RolloutRecord, Store};

/// Builds a fresh analysis (metric source and judge) for a rollout whose
/// built-in proxy is `proxy` (None for other providers).
pub type AnalysisFactory = Arc<dyn Fn(Option<Arc<Proxy>>) -> Box<dyn Analysis> + Send + Sync>;

/// Which data plane carries the rollout's traffic.
#[derive(Clone, Debug, PartialEq)]
pub enum PlaneKind {
    /// serin's own proxy on `Setup::listen`.
    Builtin,
    /// A real nginx with serin's include file.
    Nginx(NginxSettings),
    /// Deployments and routing objects in a Kubernetes cluster.
    Kubernetes(KubeTarget),
}

/// Everything needed to run a rollout, taken from its rollout file.
#[derive(Clone)]
pub struct Setup {
    /// The rollout's name.
    pub name: String,
    /// The stable version.
    pub stable_version: String,
    /// The canary version named in the file.
    pub canary_version: String,
    /// Where the built-in proxy (or nginx's server) listens; `None` on Kubernetes.
    pub listen: Option<SocketAddr>,
    /// Upstreams, sticky key and routes, with the weight at 0.
    pub table: RoutingTable,
    /// The steps and their timing, for the state machine.
    pub plan: Plan,
    /// Makes the analysis.
    pub analysis: AnalysisFactory,
    /// The data plane.
    pub plane: PlaneKind,
    /// Webhooks for phase changes and failed verdicts.
    pub notifications: Vec<notify::Target>,
    /// Must answer 2xx before the first step.
    pub pre_rollout: Option<String>,
}

impl Setup {
    /// A setup for a checked rollout file.
    pub fn from_rollout(rollout: &Rollout) -> Result<Setup, String> {
        let plane = match rollout.traffic.provider {
            Provider::Builtin => PlaneKind::Builtin,
            Provider::Nginx => PlaneKind::Nginx(
                rollout
                    .traffic
                    .nginx
                    .clone()
                    .ok_or("traffic.nginx: missing")?,
            ),
            Provider::NginxIngress | Provider::Istio | Provider::GatewayApi => {
                PlaneKind::Kubernetes(
                    rollout
                        .traffic
                        .kubernetes
                        .clone()
                        .ok_or("traffic.kubernetes: missing")?,
                )
            }
        };
        let listen = rollout.traffic.listen;
        // On Kubernetes the upstreams are the two Services' cluster addresses
        // (shown in status; the cluster does the routing).
        let upstream = |side: &crate::spec::Side, which: &str, suffix: &str| match &plane {
            PlaneKind::Kubernetes(t) => Ok(format!(
                "http://{}{suffix}.{}.svc:80",
                t.service, t.namespace
            )),
            _ => side
                .upstream
                .clone()
                .ok_or_else(|| format!("{which}.upstream: expected http://host:port")),
        };
        let table = RoutingTable::new(
            &upstream(&rollout.stable, "stable", "")?,
            &upstream(&rollout.canary, "canary", "-canary")?,
            Weight::ZERO,
        )
        .map_err(|e| e.to_string())?
        .with_sticky(rollout.traffic.sticky.clone())
        .with_baseline(
            rollout
                .baseline
                .as_deref()
                .map(serin_proxy::Upstream::parse)
                .transpose()
                .map_err(|e| format!("baseline.upstream: {e}"))?,
        )
        .with_routes(rollout.traffic.routes.clone());
        // Built and checked with the rollout file.
        let config = rollout.analysis.judge.clone();
        let sticky = rollout.traffic.sticky.is_some();
        let baseline = rollout.baseline.is_some();
        let prometheus = rollout.analysis.prometheus.clone();
        let custom = rollout.analysis.custom.clone();
        let access_log = match &plane {
            PlaneKind::Nginx(n) => Some(n.access_log.clone()),
            _ => None,
        };
        let analysis: AnalysisFactory = Arc::new(move |proxy: Option<Arc<Proxy>>| {
            let source: Box<dyn MetricSource> = match (&prometheus, &access_log, proxy) {
                (Some(p), _, _) if baseline => {
                    Box::new(PrometheusSource::new(p.clone(), custom.clone()).with_baseline())
                }
                (Some(p), _, _) => Box::new(PrometheusSource::new(p.clone(), custom.clone())),
                (None, Some(log), _) if baseline => {
                    Box::new(NginxLogSource::new(log.clone()).with_baseline())
                }
                (None, Some(log), _) => Box::new(NginxLogSource::new(log.clone())),
                (None, None, Some(proxy)) => Box::new(BuiltinSource::new(proxy)),
                (None, None, None) => Box::new(crate::providers::metrics::Unavailable(
                    Error::invalid("no metric source: set analysis.prometheus"),
                )),
            };
            match LiveAnalysis::new(source, config.clone()) {
                // Sticky sessions split by client, not by request: the
                // observed share strays further from the weight.
                Ok(a) => Box::new(a.with_sticky_split(sticky)),
                // Checked with the rollout file; kept total rather than panicking.
                Err(e) => Box::new(crate::controller::analysis::Refusing(e.to_string())),
            }
        });
        Ok(Setup {
            name: rollout.name.clone(),
            stable_version: rollout.stable.version.clone(),
            canary_version: rollout.canary.version.clone(),
            listen,
            table,
            plan: rollout.plan(),
            analysis,
            plane,
            notifications: rollout.notifications.clone(),
            pre_rollout: rollout.pre_rollout.clone(),
        })
    }
}

impl Setup {
    /// A new record of this rollout, read from `spec`, in `state`, with
    /// `canary` as the version being rolled out (none until a deploy).
    pub fn record(&self, spec: &str, canary: Option<String>, state: State) -> RolloutRecord {
        RolloutRecord {
            name: self.name.clone(),
            spec: spec.to_string(),
            stable_version: self.stable_version.clone(),
            canary_version: canary,
            former_stable_version: None,
            stable_upstream: Some(self.table.upstream(Version::Stable).to_string()),
            canary_upstream: Some(self.table.upstream(Version::Canary).to_string()),
            state,
            last_verdict: None,
            generation: 0,
            run: 0,
        }
    }

    /// Sends stable's and canary's requests to these upstreams (the ones a
    /// record says are in force: after a promotion the stable's is the
    /// former canary's), keeping the sticky key, baseline and routes.
    pub fn set_upstreams(&mut self, stable: &str, canary: &str) -> Result<(), String> {
        let table = &self.table;
        self.table = RoutingTable::new(stable, canary, Weight::ZERO)
            .map_err(|e| e.to_string())?
            .with_sticky(table.sticky().cloned())
            .with_baseline(table.baseline().cloned())
            .with_routes(table.routes().to_vec());
        Ok(())
    }

    /// The canary is `version` (a `serin deploy` of another version than the
    /// file names). On Kubernetes the canary image follows: an image whose
    /// tag was the file's version gets the new version as its tag; without
    /// one, serin derives it from the stable image as usual.
    pub fn retarget_canary(&mut self, version: &str) {
        if self.canary_version == version {
            return;
        }
        if let PlaneKind::Kubernetes(t) = &mut self.plane {
            t.canary_image = t.canary_image.as_ref().and_then(|image| {
                image
                    .strip_suffix(&format!(":{}", self.canary_version))
                    .map(|repo| format!("{repo}:{version}"))
            });
            t.canary_version = version.to_string();
        }
        self.canary_version = version.to_string();
    }
}

/// The data plane of one rollout: the built-in proxy, listening, or the
/// nginx serin writes an include file for.
pub struct DataPlane {
    /// The built-in proxy (weight changes, recorder), if that is the plane.
    pub proxy: Option<Arc<Proxy>>,
    /// The address traffic comes in on (none on Kubernetes).
    pub addr: Option<SocketAddr>,
    router: Arc<dyn TrafficRouter>,
    builtin: Option<Arc<BuiltinRouter>>,
    nginx: Option<Arc<NginxRouter>>,
    kube: Option<(kube::Client, Arc<KubernetesRouter>)>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn listen_of(setup: &Setup) -> Result<SocketAddr, Error> {
    setup
        .listen
        .ok_or_else(|| Error::invalid("traffic.listen: expected an address like 127.0.0.1:8080"))
}

/// A listener that could not be bound: the address is taken or not ours
/// to take, which is the machine's state, not the file's fault.
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> Error {
    Error::cannot_listen("traffic.listen", addr, e)
}

fn nginx_config(
    setup: &Setup,
    listen: SocketAddr,
    n: &NginxSettings,
    table: &RoutingTable,
) -> NginxConfig {
    NginxConfig {
        rollout: setup.name.clone(),
        include: n.include.clone(),
        test: n.test.clone(),
        reload: n.reload.clone(),
        access_log: n.access_log.clone(),
        listen,
        stable: table.upstream(Version::Stable).clone(),
        canary: table.upstream(Version::Canary).clone(),
        baseline: table.baseline().cloned(),
        sticky: table.sticky().cloned(),
        routes: table.routes().to_vec(),
    }
}

impl DataPlane {
    /// Starts the plane with `weight` on the canary: binds `setup.listen`
    /// for the built-in proxy, or writes and reloads nginx's include file.
    /// A port in use, an nginx that refuses the file or a cluster that does
    /// not answer is [`Kind::Unavailable`](crate::error::Kind::Unavailable).
    pub async fn start(setup: &Setup, weight: Weight) -> Result<DataPlane, Error> {
        match &setup.plane {
            PlaneKind::Builtin => {
                let listen = listen_of(setup)?;
                // The same per-core server as `serin proxy` (and its benchmarks).
                let listener =
                    serin_proxy::bind_per_core(listen).map_err(|e| bind_error(listen, &e))?;
                let addr = listener.local_addr();
                let proxy = Proxy::new(setup.table.with_weight(weight), ProxyOptions::default());
                let (stop, stopped) = oneshot::channel::<()>();
                let served = serin_proxy::serve_per_core(listener, proxy.clone(), async move {
                    let _ = stopped.await;
                });
                let task = tokio::spawn(async move {
                    if let Err(err) = served.await {
                        tracing::error!(%err, "a proxy worker panicked");
                    }
                });
                tracing::info!(rollout = %setup.name, %addr, "proxy listening");
                let router = Arc::new(BuiltinRouter::new(proxy.clone()));
                Ok(DataPlane {
                    router: router.clone(),
                    builtin: Some(router),
                    proxy: Some(proxy),
                    addr: Some(addr),
                    nginx: None,
                    kube: None,
                    stop: Some(stop),
                    task: Some(task),
                })
            }
            PlaneKind::Nginx(n) => {
                let listen = listen_of(setup)?;
                let router = Arc::new(NginxRouter::new(nginx_config(
                    setup,
                    listen,
                    n,
                    &setup.table,
                )));
                // At weight 0 no run is in progress yet: no routes either.
                if weight == Weight::ZERO {
                    router.withdraw().await?;
                } else {
                    router.apply_weight(weight).await?;
                }
                tracing::info!(rollout = %setup.name, include = %n.include.display(), "nginx configured");
                Ok(DataPlane {
                    router: router.clone(),
                    builtin: None,
                    proxy: None,
                    addr: Some(listen),
                    nginx: Some(router),
                    kube: None,
                    stop: None,
                    task: None,
                })
            }
            PlaneKind::Kubernetes(target) => {
                let client = crate::providers::traffic::kubernetes::client_from_env()
                    .await
                    .map_err(|e| e.context("kubernetes"))?;
                let router = Arc::new(KubernetesRouter::new(client.clone(), target.clone()));
                router
                    .apply_weight(weight)
                    .await
                    .map_err(|e| e.context("kubernetes"))?;
                Ok(DataPlane {
                    router: router.clone(),
                    builtin: None,
                    proxy: None,
                    addr: None,
                    nginx: None,
                    kube: Some((client, router)),
                    stop: None,
                    task: None,
                })
            }
        }
    }

    /// The traffic router that drives this plane.
    pub fn router(&self) -> Arc<dyn TrafficRouter> {
        self.router.clone()
    }

    /// A new run begins (a `deploy`): the plane follows the run's setup (new
    /// upstreams after a promotion, a deploy with `--upstream`, a new canary
    /// version on Kubernetes), keeping the weight in force, and the built-in
    /// proxy counts a new run ([`Proxy::begin_run`]): requests still open of
    /// the run before are carried over when they end, never counted in the
    /// new run's figures. Take the new run's starting figures after this.
    pub async fn update(&mut self, setup: &Setup) {
        if let Some(proxy) = &self.proxy {
            // The run first: every request the new table routes is the new
            // run's (between the two, the old table routes at the weight a
            // finished run left, all on one version).
            proxy.begin_run();
            match &self.builtin {
                // Its routes wait for the run's first weight.
                Some(router) => router.set_table(&setup.table),
                None => proxy.set_table(setup.table.with_weight(proxy.weight())),
            }
        }
        if let (Some(router), PlaneKind::Nginx(n), Some(listen)) =
            (&self.nginx, &setup.plane, setup.listen)
        {
            router
                .set_config(nginx_config(setup, listen, n, &setup.table))
                .await;
        }
        if let (Some((client, _)), PlaneKind::Kubernetes(target)) = (&self.kube, &setup.plane) {
            let router = Arc::new(KubernetesRouter::new(client.clone(), target.clone()));
            self.router = router.clone();
            self.kube = Some((client.clone(), router));
        }
    }

    /// Weight 0 and, on Kubernetes, the canary scaled to 0 and its routing
    /// objects removed (`serin cleanup`).
    pub async fn cleanup(&self) -> Result<(), Error> {
        match &self.kube {
            Some((_, router)) => router.cleanup().await,
            None => self.router.withdraw().await,
        }
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

/// How long a finished rollout waits for its last webhooks.
const WEBHOOK_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// A driver running on its own task.
pub struct RunningDriver {
    /// Commands go here.
    pub handle: Handle,
    delivered: Option<notify::Delivered>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<RolloutRecord, DriverError>>,
    /// The built-in proxy's figures when the run ended (the driver returned
    /// a finished rollout): "this run" stops counting there.
    ended: Arc<std::sync::OnceLock<serin_proxy::RecorderSnapshot>>,
}

impl RunningDriver {
    /// Spawns the driver for `record` on `plane`.
    pub fn spawn(
        setup: &Setup,
        store: Store,
        record: RolloutRecord,
        plane: &DataPlane,
    ) -> RunningDriver {
        let analysis = (setup.analysis)(plane.proxy.clone());
        let (driver, handle) =
            Driver::new(setup.plan.clone(), store, record, plane.router(), analysis);
        let notifier = Notifier::start(setup.notifications.clone());
        let delivered = notifier.delivered();
        let driver = driver
            .with_notifier(notifier, None)
            .with_pre_rollout(setup.pre_rollout.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let ended = Arc::new(std::sync::OnceLock::new());
        let (proxy, at_end) = (plane.proxy.clone(), ended.clone());
        let task = tokio::spawn(async move {
            let result = driver
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
            if let (Ok(record), Some(proxy)) = (&result, proxy)
                && record.state.phase.is_finished()
            {
                let _ = at_end.set(proxy.recorder().snapshot());
            }
            result
        });
        RunningDriver {
            handle,
            delivered,
            stop: Some(stop),
            task,
            ended,
        }
    }

    /// What is in force now and what is wrong (weight in force or pending,
    /// the data plane's and the store's last errors): for status and metrics.
    pub fn health(&self) -> crate::controller::driver::Health {
        self.handle.health()
    }

    /// The built-in proxy's figures when the run ended, once it has: what
    /// flows after the end (all of it on one version, perhaps the canary
    /// promoted to stable) is not the run's.
    pub fn figures_at_end(&self) -> Option<&serin_proxy::RecorderSnapshot> {
        self.ended.get()
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
        let result = tokio::select! {
            r = &mut self.task => r,
            () = &mut interrupt => {
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
                (&mut self.task).await
            }
        };
        // The driver is gone, so is its sender: let the webhooks get the
        // last phase change before the caller (perhaps `serin run`) exits.
        if let Some(delivered) = self.delivered.take() {
            delivered.wait(WEBHOOK_FLUSH).await;
        }
        result.map_err(|e| {
            // The driver never returns early on a fault; only a bug ends it so.
            tracing::error!("the rollout's controller stopped abnormally: {e}");
            DriverError::Stopped
        })?
    }
}

/// Blocking threads a long-running serin keeps at most. Its blocking work
/// is the store's, and the store is one SQLite connection behind a lock: more
/// threads only wait on that lock. Without a cap, 500 rollouts saving their
/// verdicts at once grew tokio's pool (512 by default) to 270 threads that,
/// asked again every 10 s, never idled out, and their stacks took the RSS over
/// 200 MB (docs/benchmarks.md).
pub const BLOCKING_THREADS: usize = 8;

/// The tokio runtime of `serin run` and `serin serve`: one worker per core
/// and at most [`BLOCKING_THREADS`] blocking threads.
pub fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

/// Turns a rollout file's text into a [`Setup`]; `origin` names it in errors.
pub type Parser = Arc<dyn Fn(&str, &str) -> Result<Setup, String> + Send + Sync>;

/// The daemon's rollout-file parser: the file checked, then made a [`Setup`].
pub fn parser() -> Parser {
    Arc::new(|text: &str, origin: &str| {
        let rollout = crate::spec::parse(text, origin).map_err(|e| e.to_string())?;
        Setup::from_rollout(&rollout).map_err(|e| format!("{origin}: {e}"))
    })
}

/// The parser of a daemon that runs the Kubernetes controller (`serve
/// --kubernetes`): a rollout file on a Kubernetes provider is refused. On
/// Kubernetes a rollout is a Rollout resource, which only the replica
/// holding the Lease acts on; one registered with `serin init` would be
/// driven by whichever replica took it, beside (or against) the controller.
pub fn controller_parser() -> Parser {
    let inner = parser();
    Arc::new(move |text: &str, origin: &str| {
        let setup = inner(text, origin)?;
        if matches!(setup.plane, PlaneKind::Kubernetes(_)) {
            return Err(format!(
                "{origin}: traffic.provider: this daemon runs the Kubernetes controller (serin serve --kubernetes); a rollout on Kubernetes is a Rollout resource (kubectl apply -f), which only the replica holding the Lease acts on, expected a file for the built-in proxy or nginx here"
            ));
        }
        Ok(setup)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::KubeProvider;

    fn example(name: &str) -> Rollout {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        crate::spec::read(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_provider_gets_its_plane() {
        let s = Setup::from_rollout(&example("minimal.yaml")).expect("setup");
        assert_eq!(s.plane, PlaneKind::Builtin);
        assert_eq!(s.listen, Some("127.0.0.1:8080".parse().expect("addr")));
        let s = Setup::from_rollout(&example("nginx.yaml")).expect("setup");
        assert!(matches!(s.plane, PlaneKind::Nginx(_)));
        let s = Setup::from_rollout(&example("gateway-api.yaml")).expect("setup");
        let PlaneKind::Kubernetes(t) = &s.plane else {
            panic!("kubernetes plane")
        };
        assert_eq!(t.provider, KubeProvider::GatewayApi);
        assert_eq!(s.listen, None);
        assert_eq!(
            s.table.upstream(Version::Canary).to_string(),
            "http://checkout-canary.shop.svc:80"
        );
    }

    #[test]
    fn a_deployed_version_retargets_the_canary_image() {
        let mut s = Setup::from_rollout(&example("gateway-api.yaml")).expect("setup");
        s.retarget_canary("v1.3.0");
        let PlaneKind::Kubernetes(t) = &s.plane else {
            panic!("kubernetes plane")
        };
        assert_eq!(t.canary_version, "v1.3.0");
        assert_eq!(
            t.canary_image.as_deref(),
            Some("registry.example.com/checkout:v1.3.0")
        );
        assert_eq!(s.canary_version, "v1.3.0");
    }
}
