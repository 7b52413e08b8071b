//! Kubernetes as a traffic router: NGINX Ingress, Istio and Gateway API.
//!
//! The user owns the stable Deployment `NAME`, its Service and the routing
//! object (an Ingress, a VirtualService with its DestinationRule, or an
//! HTTPRoute). serin owns `NAME-canary` (a Deployment cloned from the stable
//! one with the canary's image; `deployments.rs` explains the labels), the
//! canary Service and canary Ingress where the provider needs them, and the
//! routing fields of the user's Istio / Gateway API objects. When the rollout
//! gives `httpRoute` / `virtualService` as a mapping, the route (and Istio's
//! DestinationRule) is serin's whole instead: created under the rollout's
//! name, labelled [`MANAGED_BY`], never read back as the user's, and an
//! object of that name without the label is refused, not taken over.
//!
//! Every write is a server-side apply with field manager [`FIELD_MANAGER`],
//! not forced: a field another manager (kubectl, a GitOps tool) owns with a
//! different value is a conflict, reported with the object's name, and the
//! operation stops there. One exception, the safe direction, in the
//! controller's GitOps mode ([`KubernetesRouter::gitops`]; `serin run`
//! still reports the conflict): once set up, the routing at weight 0 (a
//! rollback, the end of a promotion, cleanup) is forced when its unforced
//! apply fails (a conflict), so a hand edit of the canary's weight (`kubectl annotate ...
//! canary-weight=10000 --overwrite`) cannot keep traffic on a canary being
//! rolled back; serin then owns those fields again. Reads are plain GETs.
//!
//! What each call does, in order (tested request by request in
//! `tests/kubernetes.rs`):
//! - first use (`check_ready` or `apply_weight`): read the stable Deployment,
//!   the stable Service and the routing object; apply the canary Deployment,
//!   its Service (or the DestinationRule subsets), then the routing at
//!   weight 0.
//! - `check_ready`: read both Deployments; `Ok` once both have rolled out.
//! - `apply_weight(w > 0)`: apply the canary Deployment with its replicas for
//!   `w`; if they are not all available yet the weight is not moved and the
//!   call fails with the count (the driver retries); then the routing.
//! - `apply_weight(0)`: the routing first (one call), then the canary's
//!   replicas to 0 when they scale with the weight.
//! - `promote`: the stable Deployment takes the canary's image; wait until it
//!   has rolled out; routing to weight 0 without the header routes; canary
//!   to 0 replicas.
//! - `cleanup`: as the end of `promote`, and the canary Ingress is deleted.
//!
//! With a baseline (`baseline: {}`, Istio and Gateway API; nginx-ingress
//! cannot split three ways) serin also owns `NAME-baseline`: a Deployment
//! made from the stable's pod template as it runs (images untouched;
//! `deployments.rs` explains the labels), its Service `SERVICE-baseline`
//! (Gateway API) or the DestinationRule subset `baseline` (Istio). The
//! routing gives it the canary's share, `min(w, 100 − w)`, from the
//! stable's (10 %: stable 80, canary 10, baseline 10); its replicas are
//! the canary's count for that share (the canary's while `w ≤ 50`).
//! - first use: the baseline Deployment (1 replica) and its Service after
//!   the canary's, before the routing.
//! - `check_ready`: the baseline Deployment too.
//! - `apply_weight(w > 0)`: both Deployments, then the routing once both
//!   are ready.
//! - `apply_weight(0)`, `promote`: the routing first (baseline at 0), then
//!   the baseline to 0 replicas with the canary.
//! - `cleanup`: as `promote`'s end, then the baseline Deployment and its
//!   Service are deleted.
//!
//! In the GitOps mode the baseline's template is the running one (the
//! stable's ReplicaSet with pods and the highest revision), not git's new
//! template.
//!
//! Every call goes out when made; the driver paces retries (a refused
//! weight once a second). [`KubernetesRouter::last_error`] is the last
//! error while it stands.
//!
//! The GitOps mode ([`KubernetesRouter::gitops`], the controller's): git
//! owns the whole stable Deployment and commits new images to its pod
//! template; serin keeps it `spec.paused: true` (a server-side apply of that
//! one field, [`set_paused`]), so a new template is not rolled out by itself.
//! - The canary Deployment is made from the stable's current pod template
//!   (git's new one, not rolled out), images untouched.
//! - `check_ready`: the stable counts as ready when its (old) pods are all
//!   available; the canary as above.
//! - `promote`: unpause the stable (the same one-field apply), wait until it
//!   has rolled out to git's template, routing to weight 0, canary to 0
//!   replicas, pause again. The stable's image, replicas or any other field
//!   are never written.

mod deployments;
mod gateway_api;
mod istio;
mod nginx_ingress;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::Value;
use serin_proxy::{Version, Weight};
use tokio::sync::Mutex;

use crate::controller::seams::{BoxFuture, TrafficRouter};
use crate::error::{Error, Kind};

/// The target and its ready-made queries are the rollout file's, checked there.
pub use crate::spec::{
    BASELINE_SUFFIX, CANARY_SUFFIX, KubeProvider, KubeTarget, OwnedRoute, prometheus_queries,
};
pub use deployments::scaled_replicas;

/// The field manager of every server-side apply serin makes.
pub const FIELD_MANAGER: &str = "serin";
/// The pod label that tells canary pods apart (and names Istio subsets).
pub const TRACK_LABEL: &str = "version";
/// The [`TRACK_LABEL`] value of canary pods.
pub const CANARY_TRACK: &str = "canary";
/// The [`TRACK_LABEL`] value of the baseline's pods (`NAME-baseline`).
pub const BASELINE_TRACK: &str = "baseline";
/// The label on every object serin creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "serin");

impl KubeTarget {
    fn canary_deployment(&self) -> String {
        format!("{}{CANARY_SUFFIX}", self.deployment)
    }

    fn baseline_deployment(&self) -> String {
        format!("{}{BASELINE_SUFFIX}", self.deployment)
    }

    /// Whether a route sends requests to the canary whatever the weight.
    fn routes_to_canary(&self) -> bool {
        self.routes.iter().any(|r| r.version == Version::Canary)
    }
}

/// A header value as text (non-UTF-8 bytes replaced).
pub(crate) fn header_text(v: &http::HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// `s` with regular-expression metacharacters escaped.
pub(crate) fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A regular expression matching a `Cookie` header that carries
/// `name=value`, anchored on both ends (Istio and Envoy match whole values).
pub(crate) fn cookie_regex(name: &str, value: &str) -> String {
    format!(
        "^(.*?;\\s*)?{}=\"?{}\"?(;.*)?$",
        regex_escape(name),
        regex_escape(value)
    )
}

/// One whole object serin applies (a dynamic one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Object {
    resource: ApiResource,
    name: String,
    body: Value,
}

/// The traffic part, per provider.
#[derive(Debug, Clone, PartialEq)]
enum Routing {
    Nginx(Box<nginx_ingress::CanaryIngress>),
    Istio(istio::IstioPlan),
    Gateway(gateway_api::RoutePlan),
}

impl Routing {
    fn render(&self, weight: Weight, overrides: bool) -> Object {
        match self {
            Routing::Nginx(p) => p.render(weight, overrides),
            Routing::Istio(p) => p.render(weight, overrides),
            Routing::Gateway(p) => p.render(weight, overrides),
        }
    }
}

/// The port a route serin owns sends to: the one the rollout file gives,
/// which the stable Service must have, else the Service's only port.
fn owned_port(service: &Service, owned: &OwnedRoute, what: &str) -> Result<i32, String> {
    let (given, field) = match owned {
        OwnedRoute::HttpRoute { port, .. } => (*port, "httpRoute"),
        OwnedRoute::VirtualService { port, .. } => (*port, "virtualService"),
    };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let listed = || {
        ports
            .iter()
            .map(|p| match &p.name {
                Some(n) => format!("{} ({n})", p.port),
                None => p.port.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (given, ports) {
        (Some(p), _) if ports.iter().any(|sp| sp.port == i32::from(p)) => Ok(i32::from(p)),
        (Some(p), _) => Err(format!(
            "{what} has no port {p} (traffic.kubernetes.{field}.port); its ports: {}",
            listed()
        )),
        (None, [one]) => Ok(one.port),
        (None, []) => Err(format!("{what} has no port for the route to send to")),
        (None, _) => Err(format!(
            "{what} has several ports ({}); say which one the route sends to with traffic.kubernetes.{field}.port",
            listed()
        )),
    }
}

/// Everything serin writes, read once from the user's objects.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    stable_replicas: i32,
    canary: deployments::CanaryDeployment,
    /// The canary Service, or the DestinationRule with the subsets.
    support: Object,
    routing: Routing,
    /// `baseline: {}`: its Deployment and (Gateway API) Service.
    baseline: Option<BaselinePlan>,
}

/// What serin runs for the baseline.
#[derive(Debug, Clone, PartialEq)]
struct BaselinePlan {
    deployment: deployments::CanaryDeployment,
    /// `SERVICE-baseline` (Istio: none, the subset is in the DestinationRule).
    service: Option<Object>,
}

#[derive(Debug, Default)]
struct State {
    plan: Option<Plan>,
    /// The canary Deployment and the support object were applied by this
    /// router (since it started).
    set_up: bool,
}

/// Rolls a canary out on Kubernetes; see the module doc for what each call
/// sends.
pub struct KubernetesRouter {
    client: kube::Client,
    target: KubeTarget,
    /// The GitOps mode (see the module doc).
    gitops: bool,
    poll: Duration,
    timeout: Duration,
    state: Mutex<State>,
    /// Why the last call failed, while no call has succeeded since.
    failure: std::sync::Mutex<Option<Error>>,
}

/// Turns a kube error into the text shown to the user, naming the object.
/// The cluster's answer as an error of its kind: a field another manager
/// owns is a conflict, an object the cluster refuses as malformed is
/// invalid (its values come from the rollout file), anything else (not
/// found yet, forbidden, no answer) is unavailable: it may pass later.
fn api_error(what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 409 => Error::conflict(format!(
            "{what}: conflict, not forced: {}. serin applies as field manager `{FIELD_MANAGER}` and never takes fields from other managers; change them where they are managed, or hand them to serin (docs/kubernetes.md, \"Field ownership\")",
            s.message
        )),
        kube::Error::Api(s) if s.code == 404 => Error::unavailable(format!("{what}: not found")),
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => {
            Error::invalid(format!("{what}: {} {}: {}", s.code, s.reason, s.message))
        }
        kube::Error::Api(s) => {
            Error::unavailable(format!("{what}: {} {}: {}", s.code, s.reason, s.message))
        }
        other => Error::unavailable(format!("{what}: {other}")),
    }
}

impl KubernetesRouter {
    /// Drives `target` through `client` (a target the rollout file's checks
    /// accepted).
    pub fn new(client: kube::Client, target: KubeTarget) -> KubernetesRouter {
        KubernetesRouter {
            client,
            target,
            gitops: false,
            poll: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
            state: Mutex::new(State::default()),
            failure: std::sync::Mutex::new(None),
        }
    }

    /// Why the last call failed, while no call has succeeded since (its
    /// kind tells a wait from what needs a person: a conflict, an invalid
    /// object).
    pub fn last_error(&self) -> Option<Error> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Notes how a call went.
    fn noted(&self, result: Result<(), Error>) -> Result<(), Error> {
        if let Ok(mut f) = self.failure.lock() {
            *f = result.as_ref().err().cloned();
        }
        result
    }

    /// How often and how long `promote` waits for the stable Deployment to
    /// roll out (default: every 2 s, at most 600 s).
    pub fn with_wait(mut self, poll: Duration, timeout: Duration) -> KubernetesRouter {
        self.poll = poll;
        self.timeout = timeout;
        self
    }

    /// The GitOps mode: the canary from the stable's (paused) pod template,
    /// promotion by unpausing it; the stable's fields other than
    /// `spec.paused` are never written.
    pub fn gitops(mut self) -> KubernetesRouter {
        self.gitops = true;
        self
    }

    /// The target this router drives.
    pub fn target(&self) -> &KubeTarget {
        &self.target
    }

    fn ns(&self) -> &str {
        &self.target.namespace
    }

    fn what(&self, kind: &str, name: &str) -> String {
        format!("{kind} {}/{name}", self.ns())
    }

    async fn get_typed<K>(&self, kind: &str, name: &str) -> Result<K, Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::<K>::namespaced(self.client.clone(), self.ns())
            .get(name)
            .await
            .map_err(|e| api_error(&self.what(kind, name), e))
    }

    async fn get_dynamic(&self, ar: &ApiResource, name: &str) -> Result<Option<Value>, Error> {
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), self.ns(), ar);
        match api.get_opt(name).await {
            Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
            Err(e) => Err(api_error(&self.what(&ar.kind, name), e)),
        }
    }

    async fn apply(&self, o: &Object) -> Result<(), Error> {
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), self.ns(), &o.resource);
        api.patch(
            &o.name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&o.body),
        )
        .await
        .map(|_| ())
        .map_err(|e| api_error(&self.what(&o.resource.kind, &o.name), e))
    }

    /// [`KubernetesRouter::apply`], and in GitOps mode forced when that
    /// meets a conflict: only for the routing at weight 0 (all traffic to
    /// stable), which must win over another manager. A release nobody
    /// edited by hand is never forced.
    async fn apply_forced(&self, o: &Object) -> Result<(), Error> {
        let first = self.apply(o).await;
        if !self.gitops || first.is_ok() {
            return first;
        }
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), self.ns(), &o.resource);
        api.patch(
            &o.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&o.body),
        )
        .await
        .map(|_| ())
        .map_err(|e| api_error(&self.what(&o.resource.kind, &o.name), e))
    }

    async fn apply_deployment(&self, d: &Deployment) -> Result<Deployment, Error> {
        let name = d.metadata.name.clone().unwrap_or_default();
        Api::<Deployment>::namespaced(self.client.clone(), self.ns())
            .patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(d))
            .await
            .map_err(|e| api_error(&self.what("Deployment", &name), e))
    }

    /// Reads the user's objects and works out everything serin writes.
    async fn read_plan(&self) -> Result<Plan, Error> {
        let t = &self.target;
        let stable: Deployment = self.get_typed("Deployment", &t.deployment).await?;
        let service: Service = self.get_typed("Service", &t.service).await?;
        let selector = deployments::service_selector(&service, &self.what("Service", &t.service))
            .map_err(Error::conflict)?;
        let (routing, rename) = match t.provider {
            KubeProvider::NginxIngress => {
                let name = t.ingress.as_deref().unwrap_or_default();
                let ingress = self.get_typed("Ingress", name).await?;
                let p =
                    nginx_ingress::CanaryIngress::new(self.ns(), &ingress, &t.service, &t.routes)
                        .map_err(Error::conflict)?;
                (Routing::Nginx(Box::new(p)), true)
            }
            KubeProvider::GatewayApi => {
                let name = t.http_route.as_deref().unwrap_or_default();
                let ar = gateway_api::resource();
                let live = self.get_dynamic(&ar, name).await?;
                let p = match &t.owned_route {
                    Some(owned) => owned_port(&service, owned, &self.what("Service", &t.service))
                        .and_then(|port| {
                            gateway_api::RoutePlan::owned(
                                self.ns(),
                                name,
                                owned,
                                live.as_ref(),
                                &t.service,
                                port,
                                &t.routes,
                            )
                        }),
                    None => {
                        let live = live.ok_or_else(|| {
                            Error::unavailable(format!(
                                "{}: not found",
                                self.what("HTTPRoute", name)
                            ))
                        })?;
                        gateway_api::RoutePlan::new(self.ns(), &live, &t.service, &t.routes)
                    }
                }
                .map_err(Error::conflict)?;
                let p = if t.baseline { p.with_baseline() } else { p };
                (Routing::Gateway(p), true)
            }
            KubeProvider::Istio => {
                let name = t.virtual_service.as_deref().unwrap_or_default();
                let live = self.get_dynamic(&istio::virtual_service(), name).await?;
                if t.owned_route.is_none() && live.is_none() {
                    return Err(Error::unavailable(format!(
                        "{}: not found",
                        self.what("VirtualService", name)
                    )));
                }
                let dr = self.get_dynamic(&istio::destination_rule(), name).await?;
                let p = match &t.owned_route {
                    Some(owned) => owned_port(&service, owned, &self.what("Service", &t.service))
                        .and_then(|port| {
                            istio::IstioPlan::owned(
                                self.ns(),
                                name,
                                owned,
                                live.as_ref(),
                                dr.as_ref(),
                                &stable,
                                &selector,
                                &t.service,
                                port,
                                &t.routes,
                            )
                        }),
                    None => {
                        // Present: a missing one was reported above.
                        let live = live.unwrap_or_default();
                        istio::IstioPlan::new(
                            self.ns(),
                            &live,
                            dr.as_ref(),
                            &stable,
                            &selector,
                            &t.service,
                            &t.routes,
                        )
                    }
                }
                .and_then(|p| {
                    if t.baseline {
                        p.with_baseline(&t.deployment)
                    } else {
                        Ok(p)
                    }
                })
                .map_err(Error::conflict)?;
                (Routing::Istio(p), false)
            }
        };
        // GitOps: git's template as it is, its image untouched.
        let template_image = if self.gitops {
            Some(
                deployments::template_image(&stable, &self.what("Deployment", &t.deployment))
                    .map_err(Error::conflict)?,
            )
        } else {
            None
        };
        let canary = deployments::canary_deployment(
            self.ns(),
            &stable,
            &selector,
            rename,
            &t.canary_version,
            template_image.as_deref().or(t.canary_image.as_deref()),
        )
        .map_err(Error::conflict)?;
        let support = match &routing {
            Routing::Istio(p) => p.destination_rule(),
            _ => Object {
                resource: ApiResource::erase::<Service>(&()),
                name: format!("{}{CANARY_SUFFIX}", t.service),
                body: serde_json::to_value(deployments::canary_service(
                    self.ns(),
                    &service,
                    &canary.selector,
                ))
                .map_err(|e| Error::new(Kind::Internal, format!("canary Service: {e}")))?,
            },
        };
        let baseline = if t.baseline {
            Some(
                self.baseline_plan(&stable, &service, &selector, &routing, rename)
                    .await?,
            )
        } else {
            None
        };
        Ok(Plan {
            stable_replicas: stable.spec.replicas.unwrap_or(1),
            canary,
            support,
            routing,
            baseline,
        })
    }

    /// Whether the first write of a run to the route — the routing at
    /// weight 0, applied unforced — would be refused now: a server-side
    /// apply with `dryRun` (nothing changes). `Some` only for a refusal of
    /// that apply (another field manager owns the fields: a 409 saying
    /// which, with the hand-over); a route or Service that cannot be read
    /// is left to the run, which says it.
    pub async fn routing_refused(&self) -> Option<Error> {
        let plan = self.read_plan().await.ok()?;
        let o = plan.routing.render(Weight::ZERO, true);
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), self.ns(), &o.resource);
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.dry_run = true;
        match api.patch(&o.name, &params, &Patch::Apply(&o.body)).await {
            Err(e @ kube::Error::Api(_)) => {
                let e = api_error(&self.what(&o.resource.kind, &o.name), e);
                (e.kind() == Kind::Conflict).then_some(e)
            }
            _ => None,
        }
    }

    /// The baseline's Deployment (from the stable's running template) and
    /// Service.
    async fn baseline_plan(
        &self,
        stable: &Deployment,
        service: &Service,
        selector: &deployments::Labels,
        routing: &Routing,
        rename: bool,
    ) -> Result<BaselinePlan, Error> {
        if let Routing::Nginx(_) = routing {
            return Err(Error::invalid(
                "baseline: provider nginx-ingress cannot split traffic three ways",
            ));
        }
        let source = if self.gitops {
            self.running(stable).await?
        } else {
            stable.clone()
        };
        let deployment = deployments::baseline_deployment(self.ns(), &source, selector, rename)
            .map_err(Error::conflict)?;
        let service = match routing {
            Routing::Gateway(_) => Some(Object {
                resource: ApiResource::erase::<Service>(&()),
                name: format!("{}{BASELINE_SUFFIX}", self.target.service),
                body: serde_json::to_value(deployments::copy_service(
                    self.ns(),
                    service,
                    &deployment.selector,
                    deployments::Role::Baseline,
                ))
                .map_err(|e| Error::new(Kind::Internal, format!("baseline Service: {e}")))?,
            }),
            _ => None,
        };
        Ok(BaselinePlan {
            deployment,
            service,
        })
    }

    /// `stable` with the pod template its pods run (GitOps mode: git's new
    /// template waits, paused): that of its ReplicaSet with pods and the
    /// highest revision, less the `pod-template-hash` label.
    async fn running(&self, stable: &Deployment) -> Result<Deployment, Error> {
        let t = &self.target;
        let what = self.what("Deployment", &t.deployment);
        let labels = stable
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = Api::<ReplicaSet>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| api_error(&format!("ReplicaSets of {what}"), e))?;
        let revision = |rs: &ReplicaSet| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let running = list
            .items
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o.kind == "Deployment" && o.name == t.deployment)
            })
            .filter(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
            .max_by_key(revision)
            .and_then(|rs| rs.spec.template)
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "{what}: no ReplicaSet with pods to make the baseline from (it runs the stable's running pod template)"
                ))
            })?;
        let mut source = stable.clone();
        source.spec.template = running;
        if let Some(l) = source
            .spec
            .template
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
        {
            l.remove("pod-template-hash");
        }
        Ok(source)
    }

    async fn plan(&self, state: &mut State) -> Result<Plan, Error> {
        if let Some(p) = &state.plan {
            return Ok(p.clone());
        }
        let p = self.read_plan().await?;
        state.plan = Some(p.clone());
        Ok(p)
    }

    /// Canary replicas while the weight is `weight`.
    fn replicas(&self, plan: &Plan, weight: Weight) -> i32 {
        let n = if self.target.scale_with_weight {
            scaled_replicas(plan.stable_replicas, weight.hundredths())
        } else {
            plan.stable_replicas
        };
        if self.target.routes_to_canary() {
            n.max(1)
        } else {
            n
        }
    }

    /// The baseline's replicas while the canary's weight is `weight`: the
    /// canary's count for the baseline's share.
    fn baseline_replicas(&self, plan: &Plan, weight: Weight) -> i32 {
        let n = if self.target.scale_with_weight {
            scaled_replicas(plan.stable_replicas, weight.baseline_share().hundredths())
        } else {
            plan.stable_replicas
        };
        if weight > Weight::ZERO { n.max(1) } else { n }
    }

    /// Applies the baseline's Deployment with `replicas` (none without a
    /// baseline).
    async fn apply_baseline(
        &self,
        plan: &Plan,
        replicas: i32,
    ) -> Result<Option<Deployment>, Error> {
        match &plan.baseline {
            Some(b) => Ok(Some(
                self.apply_deployment(&b.deployment.with_replicas(replicas))
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// The objects beside the Deployments: the canary Service or the
    /// DestinationRule, and the baseline's Service.
    async fn apply_support(&self, plan: &Plan) -> Result<(), Error> {
        self.apply(&plan.support).await?;
        if let Some(service) = plan.baseline.as_ref().and_then(|b| b.service.as_ref()) {
            self.apply(service).await?;
        }
        Ok(())
    }

    /// First use: the canary Deployment (and the baseline's), its Service
    /// or subsets, the routing at weight 0.
    async fn set_up(&self, state: &mut State) -> Result<(), Error> {
        let plan = self.plan(state).await?;
        let replicas = self.replicas(&plan, Weight::ZERO).max(1);
        self.apply_deployment(&plan.canary.with_replicas(replicas))
            .await?;
        let baseline = self.baseline_replicas(&plan, Weight::ZERO).max(1);
        self.apply_baseline(&plan, baseline).await?;
        self.apply_support(&plan).await?;
        self.apply(&plan.routing.render(Weight::ZERO, true)).await?;
        state.set_up = true;
        Ok(())
    }

    async fn check_ready_locked(&self, state: &mut State) -> Result<(), Error> {
        if !state.set_up {
            self.set_up(state).await?;
        }
        let t = &self.target;
        let stable: Deployment = self.get_typed("Deployment", &t.deployment).await?;
        let canary_name = t.canary_deployment();
        let canary: Deployment = self.get_typed("Deployment", &canary_name).await?;
        let baseline_name = t.baseline_deployment();
        let baseline: Option<Deployment> = if t.baseline {
            Some(self.get_typed("Deployment", &baseline_name).await?)
        } else {
            None
        };
        if let Some(p) = state.plan.as_mut() {
            p.stable_replicas = stable.spec.replicas.unwrap_or(1);
        }
        let mut waiting = Vec::new();
        let mut all = vec![
            ("stable", t.deployment.as_str(), &stable),
            ("canary", canary_name.as_str(), &canary),
        ];
        if let Some(b) = &baseline {
            all.push(("baseline", baseline_name.as_str(), b));
        }
        for (role, name, d) in all {
            let r = if self.gitops && role == "stable" {
                // Paused with git's new template: its old pods serve.
                deployments::serving(d)
            } else {
                deployments::readiness(d)
            };
            if !r.done {
                waiting.push(format!(
                    "{role} Deployment {}/{name} {}/{} ready",
                    self.ns(),
                    r.ready,
                    r.want
                ));
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(Error::unavailable(waiting.join("; ")))
        }
    }

    async fn apply_weight_locked(&self, state: &mut State, weight: Weight) -> Result<(), Error> {
        if weight == Weight::ZERO {
            if !state.set_up {
                return self.set_up(state).await;
            }
            let plan = self.plan(state).await?;
            // Traffic off the canary first, in one call (forced: the safe
            // direction wins); then scale down.
            self.apply_forced(&plan.routing.render(weight, true))
                .await?;
            if self.target.scale_with_weight {
                let replicas = self.replicas(&plan, weight);
                self.apply_deployment(&plan.canary.with_replicas(replicas))
                    .await?;
                self.apply_baseline(&plan, self.baseline_replicas(&plan, weight))
                    .await?;
            }
            return Ok(());
        }
        let plan = self.plan(state).await?;
        let replicas = self.replicas(&plan, weight);
        let applied = self
            .apply_deployment(&plan.canary.with_replicas(replicas))
            .await?;
        let baseline = self
            .apply_baseline(&plan, self.baseline_replicas(&plan, weight))
            .await?;
        if !state.set_up {
            self.apply_support(&plan).await?;
            state.set_up = true;
        }
        let mut waiting = Vec::new();
        let mut applied = vec![("canary", self.target.canary_deployment(), &applied)];
        if let Some(b) = &baseline {
            applied.push(("baseline", self.target.baseline_deployment(), b));
        }
        for (role, name, d) in applied {
            let r = deployments::readiness(d);
            if !r.done {
                waiting.push(format!(
                    "{role} Deployment {}/{name} {}/{} ready",
                    self.ns(),
                    r.ready,
                    r.want
                ));
            }
        }
        if !waiting.is_empty() {
            return Err(Error::unavailable(format!(
                "{}; the weight moves to {weight} % once all are",
                waiting.join("; ")
            )));
        }
        self.apply(&plan.routing.render(weight, true)).await
    }

    /// All traffic to stable, header routes dropped, canary (and
    /// baseline) at 0 replicas.
    async fn retire_canary(&self, plan: &Plan) -> Result<(), Error> {
        self.apply_forced(&plan.routing.render(Weight::ZERO, false))
            .await?;
        self.apply_deployment(&plan.canary.with_replicas(0)).await?;
        self.apply_baseline(plan, 0).await?;
        Ok(())
    }

    /// Deletes `name` of `resource` (gone already is fine).
    async fn delete(&self, resource: &ApiResource, name: &str) -> Result<(), Error> {
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), self.ns(), resource);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error(&self.what(&resource.kind, name), e)),
        }
    }

    async fn promote_locked(&self, state: &mut State) -> Result<(), Error> {
        let plan = self.plan(state).await?;
        let t = &self.target;
        if self.gitops {
            set_paused(&self.client, self.ns(), &t.deployment, false).await?;
            self.wait_rolled_out(&plan).await?;
            self.retire_canary(&plan).await?;
            return set_paused(&self.client, self.ns(), &t.deployment, true).await;
        }
        let body = deployments::stable_image_patch(
            self.ns(),
            &t.deployment,
            &plan.canary.container,
            &plan.canary.image,
        );
        let what = self.what("Deployment", &t.deployment);
        Api::<Deployment>::namespaced(self.client.clone(), self.ns())
            .patch(
                &t.deployment,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| api_error(&what, e))?;
        self.wait_rolled_out(&plan).await?;
        self.retire_canary(&plan).await
    }

    /// Waits (bounded) until the stable Deployment has rolled out its template.
    async fn wait_rolled_out(&self, plan: &Plan) -> Result<(), Error> {
        let t = &self.target;
        let what = self.what("Deployment", &t.deployment);
        let started = tokio::time::Instant::now();
        loop {
            let stable: Deployment = self.get_typed("Deployment", &t.deployment).await?;
            let r = deployments::readiness(&stable);
            if r.done {
                break;
            }
            if started.elapsed() >= self.timeout {
                return Err(Error::unavailable(format!(
                    "{what} has not rolled out the canary's image {} after {} s ({}/{} ready); traffic stays on the canary",
                    plan.canary.image,
                    self.timeout.as_secs(),
                    r.ready,
                    r.want
                )));
            }
            tokio::time::sleep(self.poll).await;
        }
        Ok(())
    }

    /// `serin cleanup`: weight 0 without header routes, the canary scaled to
    /// 0, (nginx-ingress) the canary Ingress deleted, and the baseline's
    /// Deployment and Service deleted.
    pub async fn cleanup(&self) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        let plan = self.plan(&mut state).await?;
        self.retire_canary(&plan).await?;
        if let Routing::Nginx(p) = &plan.routing {
            let o = p.render(Weight::ZERO, false);
            self.delete(&o.resource, &o.name).await?;
        }
        if let Some(b) = &plan.baseline {
            self.delete(
                &ApiResource::erase::<Deployment>(&()),
                &self.target.baseline_deployment(),
            )
            .await?;
            if let Some(service) = &b.service {
                self.delete(&service.resource, &service.name).await?;
            }
        }
        state.set_up = false;
        Ok(())
    }
}

impl TrafficRouter for KubernetesRouter {
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let result = self.check_ready_locked(&mut state).await;
            self.noted(result)
        })
    }

    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let result = self.apply_weight_locked(&mut state, weight).await;
            self.noted(result)
        })
    }

    fn promote(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let result = self.promote_locked(&mut state).await;
            self.noted(result)
        })
    }
}

/// Sets the Deployment `namespace/name`'s `spec.paused` by a server-side
/// apply of that one field (field manager [`FIELD_MANAGER`], not forced):
/// serin's only write to a stable Deployment git owns.
pub async fn set_paused(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    paused: bool,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "paused": paused },
    });
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| api_error(&format!("Deployment {namespace}/{name}"), e))
}

/// Gives up serin's `spec.paused` on the Deployment `namespace/name`: a
/// server-side apply (field manager [`FIELD_MANAGER`]) of no field, so the
/// API server drops what serin alone owned (the Deployment is no longer
/// paused unless another manager pauses it).
pub async fn release_paused(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
    });
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| api_error(&format!("Deployment {namespace}/{name}"), e))
}

/// A client from `KUBECONFIG` (or `~/.kube/config`), else the in-cluster
/// service account.
pub async fn client_from_env() -> Result<kube::Client, Error> {
    crate::notify::install_crypto();
    let config = kube::Config::infer().await.map_err(|e| {
        Error::unavailable(format!(
            "no Kubernetes configuration (KUBECONFIG, ~/.kube/config, or in-cluster): {e}"
        ))
    })?;
    kube::Client::try_from(config)
        .map_err(|e| Error::unavailable(format!("Kubernetes client: {e}")))
}

#[cfg(test)]
mod owned_port_tests {
    use super::*;

    fn service(ports: &[(i32, Option<&str>)]) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "checkout"},
            "spec": {"ports": ports.iter().map(|(p, n)| serde_json::json!({"port": p, "name": n})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn route(port: Option<u16>) -> OwnedRoute {
        OwnedRoute::HttpRoute {
            parent_refs: Vec::new(),
            hostnames: Vec::new(),
            port,
        }
    }

    #[test]
    fn the_port_is_the_services_only_one_or_the_one_given_and_never_a_guess() {
        let one = service(&[(80, Some("http"))]);
        assert_eq!(
            owned_port(&one, &route(None), "Service shop/checkout"),
            Ok(80)
        );
        let two = service(&[(80, Some("http")), (9090, Some("metrics"))]);
        let e = owned_port(&two, &route(None), "Service shop/checkout").unwrap_err();
        assert_eq!(
            e,
            "Service shop/checkout has several ports (80 (http), 9090 (metrics)); say which one the route sends to with traffic.kubernetes.httpRoute.port"
        );
        assert_eq!(owned_port(&two, &route(Some(9090)), "S"), Ok(9090));
        let e = owned_port(&two, &route(Some(8080)), "S").unwrap_err();
        assert!(e.starts_with("S has no port 8080"), "{e}");
        let e = owned_port(&service(&[]), &route(None), "S").unwrap_err();
        assert!(e.starts_with("S has no port"), "{e}");
    }
}
