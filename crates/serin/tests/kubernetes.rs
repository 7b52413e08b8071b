//! The Kubernetes traffic routers against kube's mock service (tower-test):
//! a small in-memory API server answers GET / apply-PATCH / DELETE, records
//! every request, and the tests assert the exact sequence each operation
//! makes (method, path, query, body). No cluster runs here; what this does
//! and does not prove is written in docs/kubernetes.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::client::Body;
use serde::Deserialize;
use serde_json::{Value, json};
use serin::controller::seams::TrafficRouter;
use serin::error::Kind;
use serin::providers::traffic::kubernetes::{
    KubeProvider, KubeTarget, KubernetesRouter, prometheus_queries, scaled_replicas,
};
use serin_proxy::{Route, Version, Weight};

const NS: &str = "shop";
const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout";
const CANARY_DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout-canary";
const SERVICE: &str = "/api/v1/namespaces/shop/services/checkout";
const CANARY_SERVICE: &str = "/api/v1/namespaces/shop/services/checkout-canary";
const INGRESS: &str = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/checkout";
const CANARY_INGRESS: &str = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/checkout-canary";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";
const VS: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout";
const DR: &str = "/apis/networking.istio.io/v1/namespaces/shop/destinationrules/checkout";

/// One request the router made.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// The in-memory API server's state.
#[derive(Default)]
struct Cluster {
    objects: BTreeMap<String, Value>,
    /// Deployments report all replicas available after a change.
    ready: bool,
    /// A path that answers 409 to every PATCH.
    conflict: Option<String>,
    log: Vec<Call>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// JSON merge of `patch` into `base` (objects merge, everything else replaces):
/// close enough to server-side apply for one field manager.
fn merge(base: &mut Value, patch: &Value) {
    match (base.as_object_mut(), patch.as_object()) {
        (Some(b), Some(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *base = patch.clone(),
    }
}

fn set_deployment_status(d: &mut Value, ready: bool) {
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
    d["metadata"]["generation"] = json!(generation);
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = if ready { want } else { 0 };
    d["status"] = json!({"observedGeneration": generation, "replicas": want,
        "updatedReplicas": want, "readyReplicas": available, "availableReplicas": available});
}

impl Cluster {
    fn answer(&mut self, call: &Call) -> (u16, Value) {
        match call.method.as_str() {
            "GET" => match self.objects.get(&call.path) {
                Some(o) => (200, o.clone()),
                None => (404, status(404, "NotFound", "not found")),
            },
            "PATCH" => {
                if self.conflict.as_deref() == Some(call.path.as_str()) {
                    return (
                        409,
                        status(
                            409,
                            "Conflict",
                            "Apply failed with 1 conflict: conflict with \"argocd-controller\": .spec.rules",
                        ),
                    );
                }
                let ready = self.ready;
                let o = self.objects.entry(call.path.clone()).or_insert(json!({}));
                merge(o, &call.body);
                if call.path.contains("/deployments/") {
                    set_deployment_status(o, ready);
                }
                (200, o.clone())
            }
            "DELETE" => match self.objects.remove(&call.path) {
                Some(_) => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ),
                None => (404, status(404, "NotFound", "not found")),
            },
            _ => (405, status(405, "MethodNotAllowed", "unexpected method")),
        }
    }
}

type Shared = Arc<Mutex<Cluster>>;

/// A kube client served by the in-memory cluster.
fn client(cluster: Shared) -> kube::Client {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or("").to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (code, answer) = {
                let mut c = cluster.lock().unwrap();
                let a = c.answer(&call);
                c.log.push(call);
                a
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    kube::Client::new(service, NS)
}

fn stable_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": NS, "generation": 3, "uid": "u-1",
                     "resourceVersion": "77", "labels": {"app": "checkout"}},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout", "version": "v1"},
                             "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {"containers": [
                    {"name": "checkout", "image": "registry.example.com/checkout:v1.1.0",
                     "ports": [{"containerPort": 8080, "name": "http"}]},
                    {"name": "sidecar", "image": "busybox:1.36"}
                ]}
            },
            "strategy": {"type": "RollingUpdate"}
        },
        "status": {"observedGeneration": 3, "replicas": 4, "updatedReplicas": 4,
                   "readyReplicas": 4, "availableReplicas": 4}
    })
}

fn stable_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.7", "selector": {"app": "checkout"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    })
}

fn primary_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "checkout", "namespace": NS,
                     "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [{"host": "shop.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "checkout", "port": {"number": 80}}}},
                {"path": "/admin", "pathType": "Prefix",
                 "backend": {"service": {"name": "admin", "port": {"number": 80}}}}
            ]}}]
        }
    })
}

fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "shop-gateway"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"group": "", "kind": "Service", "name": "checkout", "port": 80, "weight": 1}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]}
            ]
        }
    })
}

fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {
            "hosts": ["shop.example.com"], "gateways": ["shop-gateway"],
            "http": [
                {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                 "route": [{"destination": {"host": "admin"}}]},
                {"name": "main", "match": [{"uri": {"prefix": "/"}}], "timeout": "5s",
                 "route": [{"destination": {"host": "checkout.shop.svc.cluster.local", "port": {"number": 80}}}]}
            ]
        }
    })
}

fn destination_rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {"host": "checkout.shop.svc.cluster.local",
                 "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
    })
}

fn target(provider: KubeProvider) -> KubeTarget {
    KubeTarget {
        provider,
        namespace: NS.into(),
        deployment: "checkout".into(),
        service: "checkout".into(),
        ingress: Some("checkout".into()),
        virtual_service: Some("checkout".into()),
        http_route: Some("checkout".into()),
        owned_route: None,
        scale_with_weight: true,
        canary_version: "v1.2.0".into(),
        canary_image: None,
        sticky: None,
        routes: vec![],
        baseline: false,
    }
}

fn header_route() -> Route {
    Route::header("x-canary", "always", Version::Canary).unwrap()
}

fn cluster_for(provider: KubeProvider) -> Shared {
    let mut c = Cluster::default();
    c.objects.insert(DEPLOY.into(), stable_deployment());
    c.objects.insert(SERVICE.into(), stable_service());
    match provider {
        KubeProvider::NginxIngress => {
            c.objects.insert(INGRESS.into(), primary_ingress());
        }
        KubeProvider::GatewayApi => {
            c.objects.insert(ROUTE.into(), http_route());
        }
        KubeProvider::Istio => {
            c.objects.insert(VS.into(), virtual_service());
            c.objects.insert(DR.into(), destination_rule());
        }
    }
    Arc::new(Mutex::new(c))
}

fn router(cluster: &Shared, t: KubeTarget) -> KubernetesRouter {
    KubernetesRouter::new(client(cluster.clone()), t)
        .with_wait(Duration::from_millis(1), Duration::from_millis(200))
}

/// The calls made since the last `take`, as "METHOD path".
fn take(cluster: &Shared) -> Vec<Call> {
    std::mem::take(&mut cluster.lock().unwrap().log)
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

/// Every write is a server-side apply as `serin`, never forced.
fn assert_applies(calls: &[Call]) {
    for c in calls.iter().filter(|c| c.method == "PATCH") {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(c.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            [("fieldManager".to_string(), "serin".to_string())],
            "{} {}",
            c.method,
            c.path
        );
        assert_eq!(c.content_type, "application/apply-patch+yaml", "{}", c.path);
    }
}

fn w(pct: f64) -> Weight {
    Weight::from_percent(pct).unwrap()
}

fn body_of<'a>(calls: &'a [Call], method: &str, path: &str) -> &'a Value {
    &calls
        .iter()
        .find(|c| c.method == method && c.path == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {:?}", lines(calls)))
        .body
}

/// Compares `value` with `tests/golden/kubernetes/NAME.json`; with
/// `SERIN_BLESS=1` (re)writes the file instead.
fn golden(name: &str, value: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/kubernetes")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("SERIN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with SERIN_BLESS=1 to create)", path.display()));
    assert_eq!(
        text,
        want,
        "{} differs (SERIN_BLESS=1 rewrites it)",
        path.display()
    );
}

// ---- CRD shapes: the spec fields serin writes, unknown fields refused. ----

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CrdObject<S> {
    api_version: String,
    kind: String,
    metadata: CrdMeta,
    spec: S,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrdMeta {
    name: String,
    namespace: String,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRouteSpec {
    rules: Vec<HttpRouteRule>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HttpRouteRule {
    #[serde(default)]
    matches: Vec<HttpRouteMatch>,
    backend_refs: Vec<BackendRef>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRouteMatch {
    path: Option<PathMatch>,
    #[serde(default)]
    headers: Vec<HeaderMatch>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathMatch {
    #[serde(rename = "type")]
    type_: String,
    value: String,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderMatch {
    #[serde(rename = "type")]
    type_: String,
    name: String,
    value: String,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendRef {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    port: Option<u16>,
    weight: Option<u32>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VirtualServiceSpec {
    http: Vec<IstioHttpRoute>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioHttpRoute {
    name: Option<String>,
    #[serde(rename = "match", default)]
    match_: Vec<IstioMatch>,
    route: Vec<IstioDestinationWeight>,
    timeout: Option<String>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioMatch {
    uri: Option<BTreeMap<String, String>>,
    #[serde(default)]
    headers: BTreeMap<String, BTreeMap<String, String>>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioDestinationWeight {
    destination: IstioDestination,
    weight: Option<u32>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioDestination {
    host: String,
    subset: Option<String>,
    port: Option<BTreeMap<String, u32>>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationRuleSpec {
    host: String,
    subsets: Vec<Subset>,
}

#[allow(dead_code)] // only parsed: the check is that the bodies fit
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subset {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Parses every written body into its type: k8s-openapi for built-in
/// kinds, the CRD shapes above for Istio and Gateway API.
fn parse_all(calls: &[Call]) {
    for c in calls.iter().filter(|c| c.method == "PATCH") {
        let b = c.body.clone();
        let kind = b["kind"].as_str().unwrap_or_default().to_string();
        let ok = match kind.as_str() {
            "Deployment" => serde_json::from_value::<Deployment>(b).map(|_| ()),
            "Service" => serde_json::from_value::<Service>(b).map(|_| ()),
            "Ingress" => serde_json::from_value::<Ingress>(b).map(|_| ()),
            "HTTPRoute" => serde_json::from_value::<CrdObject<HttpRouteSpec>>(b).map(|o| {
                assert_eq!(o.api_version, "gateway.networking.k8s.io/v1");
                assert_eq!(
                    (o.metadata.name.as_str(), o.metadata.namespace.as_str()),
                    ("checkout", NS)
                );
            }),
            "VirtualService" => {
                serde_json::from_value::<CrdObject<VirtualServiceSpec>>(b).map(|o| {
                    assert_eq!(o.api_version, "networking.istio.io/v1");
                    assert_eq!(o.kind, "VirtualService");
                })
            }
            "DestinationRule" => {
                serde_json::from_value::<CrdObject<DestinationRuleSpec>>(b).map(|o| {
                    assert_eq!(o.api_version, "networking.istio.io/v1");
                })
            }
            other => panic!("unexpected kind {other} at {}", c.path),
        };
        ok.unwrap_or_else(|e| panic!("{kind} at {} does not parse: {e}", c.path));
    }
}

fn route_weights(body: &Value) -> Vec<(String, u64)> {
    let rules: CrdObject<HttpRouteSpec> = serde_json::from_value(body.clone()).unwrap();
    rules
        .spec
        .rules
        .iter()
        .flat_map(|r| r.backend_refs.iter())
        .filter(|b| b.name.starts_with("checkout"))
        .map(|b| (b.name.clone(), u64::from(b.weight.unwrap_or(1))))
        .collect()
}

fn deployment_replicas(body: &Value) -> i32 {
    let d: Deployment = serde_json::from_value(body.clone()).unwrap();
    d.spec.replicas.unwrap()
}

#[tokio::test]
async fn gateway_api_whole_rollout_request_by_request() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    let mut t = target(KubeProvider::GatewayApi);
    t.routes = vec![header_route()];
    let r = router(&cluster, t);

    // First check: read, set up at weight 0, then wait for the canary.
    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    let err = err.to_string();
    assert!(
        err.contains("canary Deployment shop/checkout-canary 0/1 ready"),
        "{err}"
    );
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("GET {DEPLOY}"),
            format!("GET {SERVICE}"),
            format!("GET {ROUTE}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {CANARY_SERVICE}"),
            format!("PATCH {ROUTE}"),
            format!("GET {DEPLOY}"),
            format!("GET {CANARY_DEPLOY}"),
        ]
    );
    assert_applies(&calls);
    parse_all(&calls);
    let canary = body_of(&calls, "PATCH", CANARY_DEPLOY);
    assert_eq!(deployment_replicas(canary), 1);
    assert_eq!(
        canary["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout:v1.2.0"
    );
    assert_eq!(
        canary["spec"]["template"]["spec"]["containers"][1]["image"],
        "busybox:1.36"
    );
    assert_eq!(
        canary["spec"]["selector"]["matchLabels"],
        json!({"app": "checkout-canary", "version": "canary"})
    );
    assert!(canary["metadata"].get("resourceVersion").is_none());
    assert!(canary.get("status").is_none());
    golden("gateway-api-canary-deployment", canary);
    let svc = body_of(&calls, "PATCH", CANARY_SERVICE);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "checkout-canary", "version": "canary"})
    );
    assert!(svc["spec"].get("clusterIP").is_none());
    golden("gateway-api-canary-service", svc);
    let route = body_of(&calls, "PATCH", ROUTE);
    assert_eq!(
        route_weights(route),
        [
            ("checkout-canary".to_string(), 1),
            ("checkout".to_string(), 10_000),
            ("checkout-canary".to_string(), 0)
        ]
    );
    assert!(
        route["spec"].get("parentRefs").is_none(),
        "serin must not own parentRefs"
    );
    golden("gateway-api-route-0", route);

    // Still waiting: only reads.
    assert!(r.check_ready().await.is_err());
    assert_eq!(
        lines(&take(&cluster)),
        [format!("GET {DEPLOY}"), format!("GET {CANARY_DEPLOY}")]
    );

    cluster.lock().unwrap().ready = true;
    let canary = cluster.lock().unwrap().objects[CANARY_DEPLOY].clone();
    let mut c2 = canary.clone();
    set_deployment_status(&mut c2, true);
    cluster
        .lock()
        .unwrap()
        .objects
        .insert(CANARY_DEPLOY.into(), c2);
    r.check_ready().await.unwrap();
    assert_eq!(
        lines(&take(&cluster)),
        [format!("GET {DEPLOY}"), format!("GET {CANARY_DEPLOY}")]
    );

    // 25 %: canary scaled to ceil(4 × 0.25) = 1, then the weights.
    r.apply_weight(w(25.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [format!("PATCH {CANARY_DEPLOY}"), format!("PATCH {ROUTE}")]
    );
    assert_applies(&calls);
    assert_eq!(deployment_replicas(&calls[0].body), 1);
    assert_eq!(
        route_weights(&calls[1].body),
        [
            ("checkout-canary".to_string(), 1),
            ("checkout".to_string(), 7500),
            ("checkout-canary".to_string(), 2500)
        ]
    );
    golden("gateway-api-route-25", &calls[1].body);

    // 5.25 % is exact.
    r.apply_weight(w(5.25)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        route_weights(&calls[1].body)[1..],
        [
            ("checkout".to_string(), 9475),
            ("checkout-canary".to_string(), 525)
        ]
    );

    // 60 %: ceil(4 × 0.6) = 3 replicas.
    r.apply_weight(w(60.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(deployment_replicas(&calls[0].body), 3);

    // Rollback: the weight first, in one call, then the scale-down.
    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [format!("PATCH {ROUTE}"), format!("PATCH {CANARY_DEPLOY}")]
    );
    assert_eq!(
        route_weights(&calls[0].body)[1..],
        [
            ("checkout".to_string(), 10_000),
            ("checkout-canary".to_string(), 0)
        ]
    );
    // The header route stays in force (as with every router), so one pod stays.
    assert_eq!(deployment_replicas(&calls[1].body), 1);

    // Promote: stable takes the image, rolls out, traffic back, canary to 0.
    r.promote().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {DEPLOY}"),
            format!("GET {DEPLOY}"),
            format!("PATCH {ROUTE}"),
            format!("PATCH {CANARY_DEPLOY}"),
        ]
    );
    assert_applies(&calls);
    parse_all(&calls);
    assert_eq!(
        calls[0].body,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "checkout", "namespace": NS},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "checkout", "image": "registry.example.com/checkout:v1.2.0"}]}}}})
    );
    assert_eq!(
        route_weights(&calls[2].body),
        [
            ("checkout".to_string(), 10_000),
            ("checkout-canary".to_string(), 0)
        ],
        "no header rule after promotion"
    );
    assert_eq!(deployment_replicas(&calls[3].body), 0);
    golden("gateway-api-route-promoted", &calls[2].body);

    r.cleanup().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [format!("PATCH {ROUTE}"), format!("PATCH {CANARY_DEPLOY}")]
    );
}

#[tokio::test]
async fn gateway_api_reads_back_its_own_rules_idempotently() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    let mut t = target(KubeProvider::GatewayApi);
    t.routes = vec![
        header_route(),
        Route::cookie("beta", "yes", Version::Canary).unwrap(),
    ];
    let r = router(&cluster, t.clone());
    r.apply_weight(Weight::ZERO).await.unwrap();
    let first = body_of(&take(&cluster), "PATCH", ROUTE).clone();
    golden("gateway-api-route-header-cookie", &first);
    // A restarted serin reads the route it wrote and writes the same thing.
    let again = router(&cluster, t);
    again.apply_weight(Weight::ZERO).await.unwrap();
    let second = body_of(&take(&cluster), "PATCH", ROUTE).clone();
    assert_eq!(first, second);
    let rules = first["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4, "2 header rules + weighted rule + /admin");
    assert_eq!(
        rules[1]["matches"][0]["headers"][0]["type"],
        "RegularExpression"
    );
    assert_eq!(rules[1]["matches"][0]["headers"][0]["name"], "Cookie");
    assert_eq!(
        rules[3]["backendRefs"],
        json!([{"name": "admin", "port": 80}])
    );
}

#[tokio::test]
async fn istio_whole_rollout_request_by_request() {
    let cluster = cluster_for(KubeProvider::Istio);
    let mut t = target(KubeProvider::Istio);
    t.routes = vec![header_route()];
    let r = router(&cluster, t);
    cluster.lock().unwrap().ready = true;

    // The driver's first call on start is apply_weight(0): it sets up.
    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("GET {DEPLOY}"),
            format!("GET {SERVICE}"),
            format!("GET {VS}"),
            format!("GET {DR}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {DR}"),
            format!("PATCH {VS}"),
        ]
    );
    assert_applies(&calls);
    parse_all(&calls);
    let canary = body_of(&calls, "PATCH", CANARY_DEPLOY);
    // Istio: canary pods stay behind the stable Service, told apart by version.
    assert_eq!(
        canary["spec"]["template"]["metadata"]["labels"],
        json!({"app": "checkout", "version": "canary"})
    );
    golden("istio-canary-deployment", canary);
    let dr = body_of(&calls, "PATCH", DR);
    assert_eq!(
        dr["spec"],
        json!({"host": "checkout.shop.svc.cluster.local", "subsets": [
            {"name": "stable", "labels": {"version": "v1"}},
            {"name": "canary", "labels": {"version": "canary"}}]}),
        "only host (same value) and subsets: trafficPolicy stays the user's"
    );
    golden("istio-destination-rule", dr);
    let vs = body_of(&calls, "PATCH", VS);
    golden("istio-virtual-service-0", vs);
    let http = vs["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 3);
    assert_eq!(http[0]["name"], "admin");
    assert_eq!(http[1]["name"], "serin-1-0");
    assert_eq!(
        http[1]["match"],
        json!([{"uri": {"prefix": "/"}, "headers": {"x-canary": {"exact": "always"}}}])
    );
    assert_eq!(
        http[1]["route"],
        json!([{"destination": {"host": "checkout.shop.svc.cluster.local", "port": {"number": 80}, "subset": "canary"}, "weight": 100}])
    );
    assert_eq!(http[2]["timeout"], "5s");
    assert_eq!(http[2]["route"][0]["weight"], 100);
    assert_eq!(http[2]["route"][1]["weight"], 0);

    r.check_ready().await.unwrap();
    assert_eq!(
        lines(&take(&cluster)),
        [format!("GET {DEPLOY}"), format!("GET {CANARY_DEPLOY}")]
    );

    r.apply_weight(w(25.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [format!("PATCH {CANARY_DEPLOY}"), format!("PATCH {VS}")]
    );
    let http = &calls[1].body["spec"]["http"];
    assert_eq!(
        (
            http[2]["route"][0]["weight"].as_i64(),
            http[2]["route"][1]["weight"].as_i64()
        ),
        (Some(75), Some(25))
    );
    golden("istio-virtual-service-25", &calls[1].body);

    // Istio takes whole percents; a small canary never rounds to 0.
    r.apply_weight(w(0.5)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(calls[1].body["spec"]["http"][2]["route"][1]["weight"], 1);

    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [format!("PATCH {VS}"), format!("PATCH {CANARY_DEPLOY}")]
    );

    r.promote().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {DEPLOY}"),
            format!("GET {DEPLOY}"),
            format!("PATCH {VS}"),
            format!("PATCH {CANARY_DEPLOY}")
        ]
    );
    parse_all(&calls);
    assert_eq!(
        calls[2].body["spec"]["http"].as_array().unwrap().len(),
        2,
        "header route gone"
    );
    assert_eq!(deployment_replicas(&calls[3].body), 0);

    r.cleanup().await.unwrap();
    assert_eq!(
        lines(&take(&cluster)),
        [format!("PATCH {VS}"), format!("PATCH {CANARY_DEPLOY}")]
    );
}

#[tokio::test]
async fn istio_needs_a_version_label_on_stable_pods() {
    let cluster = cluster_for(KubeProvider::Istio);
    cluster.lock().unwrap().objects.get_mut(DEPLOY).unwrap()["spec"]["template"]["metadata"]["labels"] =
        json!({"app": "checkout"});
    let r = router(&cluster, target(KubeProvider::Istio));
    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.kind(), Kind::Conflict, "{err}");
    let err = err.to_string();
    assert!(
        err.contains("Deployment shop/checkout: its pods need a `version` label"),
        "{err}"
    );
    assert!(
        take(&cluster).iter().all(|c| c.method == "GET"),
        "nothing written"
    );
}

#[tokio::test]
async fn nginx_ingress_whole_rollout_request_by_request() {
    let cluster = cluster_for(KubeProvider::NginxIngress);
    let mut t = target(KubeProvider::NginxIngress);
    t.routes = vec![
        header_route(),
        Route::cookie("canary", "always", Version::Canary).unwrap(),
        Route::cookie("canary", "never", Version::Stable).unwrap(),
    ];
    t.canary_image = Some("registry.example.com/checkout@sha256:0123".into());
    t.scale_with_weight = false;
    let r = router(&cluster, t);

    let err = r.check_ready().await.unwrap_err().to_string();
    assert!(err.contains("checkout-canary 0/4 ready"), "{err}");
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("GET {DEPLOY}"),
            format!("GET {SERVICE}"),
            format!("GET {INGRESS}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {CANARY_SERVICE}"),
            format!("PATCH {CANARY_INGRESS}"),
            format!("GET {DEPLOY}"),
            format!("GET {CANARY_DEPLOY}"),
        ]
    );
    assert_applies(&calls);
    parse_all(&calls);
    let canary = body_of(&calls, "PATCH", CANARY_DEPLOY);
    assert_eq!(
        deployment_replicas(canary),
        4,
        "not scaled with the weight: stable's size"
    );
    assert_eq!(
        canary["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout@sha256:0123"
    );
    let ing = body_of(&calls, "PATCH", CANARY_INGRESS);
    golden("nginx-ingress-canary-0", ing);
    let ingress: Ingress = serde_json::from_value(ing.clone()).unwrap();
    let a = ingress.metadata.annotations.unwrap();
    assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "0");
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-weight-total"],
        "10000"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header"],
        "x-canary"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "always"
    );
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-by-cookie"], "canary");
    assert!(!a.contains_key("nginx.ingress.kubernetes.io/proxy-body-size"));
    let spec = ingress.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rules = spec.rules.unwrap();
    let paths = &rules[0].http.as_ref().unwrap().paths;
    assert_eq!(paths.len(), 1, "only the stable Service's paths");
    assert_eq!(
        paths[0].backend.service.as_ref().unwrap().name,
        "checkout-canary"
    );

    cluster.lock().unwrap().ready = true;
    let mut c = cluster.lock().unwrap().objects[CANARY_DEPLOY].clone();
    set_deployment_status(&mut c, true);
    cluster
        .lock()
        .unwrap()
        .objects
        .insert(CANARY_DEPLOY.into(), c);
    r.check_ready().await.unwrap();
    take(&cluster);

    r.apply_weight(w(12.34)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {CANARY_INGRESS}")
        ]
    );
    assert_eq!(
        calls[1].body["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
        "1234"
    );
    golden("nginx-ingress-canary-12.34", &calls[1].body);

    // Rollback without scaling: one call, the weight.
    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(lines(&calls), [format!("PATCH {CANARY_INGRESS}")]);
    assert_eq!(
        calls[0].body["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
        "0"
    );

    r.promote().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {DEPLOY}"),
            format!("GET {DEPLOY}"),
            format!("PATCH {CANARY_INGRESS}"),
            format!("PATCH {CANARY_DEPLOY}")
        ]
    );
    let a = &calls[2].body["metadata"]["annotations"];
    assert!(
        a.get("nginx.ingress.kubernetes.io/canary-by-header")
            .is_none()
    );
    assert_eq!(
        calls[0].body["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout@sha256:0123"
    );

    r.cleanup().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {CANARY_INGRESS}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("DELETE {CANARY_INGRESS}")
        ]
    );
    assert!(!cluster.lock().unwrap().objects.contains_key(CANARY_INGRESS));
}

#[tokio::test]
async fn a_conflict_is_reported_with_the_object_and_not_forced() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    cluster.lock().unwrap().conflict = Some(ROUTE.into());
    let r = router(&cluster, target(KubeProvider::GatewayApi));
    let err = r.apply_weight(Weight::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Conflict, "{err}");
    let err = err.to_string();
    assert!(
        err.starts_with("HTTPRoute shop/checkout: conflict, not forced"),
        "{err}"
    );
    assert!(err.contains("argocd-controller"), "{err}");
    let calls = take(&cluster);
    let route_patches: Vec<_> = calls
        .iter()
        .filter(|c| c.path == ROUTE && c.method == "PATCH")
        .collect();
    assert_eq!(route_patches.len(), 1, "not retried");
    assert!(calls.iter().all(|c| !c.query.contains("force")));
}

#[tokio::test]
async fn the_weight_waits_for_scaled_up_canary_pods() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    let r = router(&cluster, target(KubeProvider::GatewayApi));
    cluster.lock().unwrap().ready = true;
    r.apply_weight(Weight::ZERO).await.unwrap();
    take(&cluster);
    cluster.lock().unwrap().ready = false;
    let err = r.apply_weight(w(50.0)).await.unwrap_err().to_string();
    assert!(
        err.contains("checkout-canary 0/2 ready; the weight moves to 50 %"),
        "{err}"
    );
    assert_eq!(
        lines(&take(&cluster)),
        [format!("PATCH {CANARY_DEPLOY}")],
        "weight not moved"
    );
    cluster.lock().unwrap().ready = true;
    r.apply_weight(w(50.0)).await.unwrap();
    assert_eq!(
        lines(&take(&cluster)),
        [format!("PATCH {CANARY_DEPLOY}"), format!("PATCH {ROUTE}")]
    );
}

#[tokio::test]
async fn a_restart_mid_rollout_does_not_shrink_the_canary() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    cluster.lock().unwrap().ready = true;
    let r = router(&cluster, target(KubeProvider::GatewayApi));
    r.apply_weight(w(75.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("GET {DEPLOY}"),
            format!("GET {SERVICE}"),
            format!("GET {ROUTE}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {CANARY_SERVICE}"),
            format!("PATCH {ROUTE}"),
        ]
    );
    assert_eq!(deployment_replicas(&calls[3].body), 3);
}

#[tokio::test]
async fn promotion_gives_up_after_the_timeout_and_keeps_traffic() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    let r = router(&cluster, target(KubeProvider::GatewayApi));
    let err = r.promote().await.unwrap_err().to_string();
    assert!(
        err.contains("Deployment shop/checkout has not rolled out the canary's image"),
        "{err}"
    );
    let calls = take(&cluster);
    assert!(
        calls.iter().all(|c| c.path != ROUTE || c.method == "GET"),
        "traffic untouched"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.method == "GET" && c.path == DEPLOY)
            .count()
            >= 2
    );
}

#[tokio::test]
async fn missing_objects_are_named() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    cluster.lock().unwrap().objects.remove(ROUTE);
    let r = router(&cluster, target(KubeProvider::GatewayApi));
    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.to_string(), "HTTPRoute shop/checkout: not found");
    assert_eq!(err.kind(), Kind::Unavailable);
    let cluster = cluster_for(KubeProvider::NginxIngress);
    cluster.lock().unwrap().objects.remove(SERVICE);
    let r = router(&cluster, target(KubeProvider::NginxIngress));
    assert_eq!(
        r.check_ready().await.unwrap_err().to_string(),
        "Service shop/checkout: not found"
    );
}

/// A Kubernetes rollout file: `kube` under `traffic.kubernetes` (after
/// namespace and deployment, lines 9 and 10), `traffic` after it.
fn kube_file(provider: &str, kube: &str, traffic: &str) -> String {
    format!(
        "name: checkout
stable:
  version: v1.1.0
canary:
  version: v1.2.0
traffic:
  provider: {provider}
  kubernetes:
    namespace: shop
    deployment: checkout
{kube}{traffic}analysis:
  prometheus:
    address: http://prometheus.monitoring:9090
"
    )
}

/// Every problem the file has, one per line, or none.
fn file_problems(text: &str) -> Vec<String> {
    match serin::spec::parse(text, "r.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn the_rollout_file_gives_the_target_the_router_takes() {
    let all = "    service: checkout\n    ingress: checkout\n    virtualService: checkout\n    httpRoute: checkout\n";
    for p in [
        KubeProvider::NginxIngress,
        KubeProvider::Istio,
        KubeProvider::GatewayApi,
    ] {
        let r = serin::spec::parse(&kube_file(p.as_str(), all, ""), "r.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.traffic.kubernetes, Some(target(p)), "{}", p.as_str());
    }
}

/// The checks are the rollout file's: each problem names its field, at its
/// line and column, and all of them are reported at once.
#[test]
fn validation_names_the_field() {
    let p = file_problems(&kube_file("nginx-ingress", "", ""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(
            "traffic.kubernetes.ingress: expected a name (required by provider nginx-ingress)"
        ),
        "{p:?}"
    );
    let p = file_problems(&kube_file("istio", "", ""));
    assert!(p[0].contains("traffic.kubernetes.virtualService"), "{p:?}");
    let p = file_problems(&kube_file("gateway-api", "", ""));
    assert!(p[0].contains("traffic.kubernetes.httpRoute"), "{p:?}");
    let route = "    httpRoute: checkout\n";
    let p = file_problems(&kube_file(
        "gateway-api",
        &format!("    service: Checkout\n{route}"),
        "",
    ));
    assert_eq!(
        p,
        [
            "r.yaml:11:14: traffic.kubernetes.service: expected a Service name: lowercase letters, digits and `-`, starting with a letter and ending with a letter or digit, at most 56 characters, got `Checkout`"
        ]
    );
    let bad_tag = kube_file("gateway-api", route, "").replace("v1.2.0", "v1/2");
    let p = file_problems(&bad_tag);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("r.yaml:5:12: canary.version: `v1/2` cannot be an image tag"),
        "{p:?}"
    );
    let with_image = bad_tag.replace(
        "  version: v1/2\n",
        "  version: v1/2\n  image: reg/app:any\n",
    );
    assert_eq!(file_problems(&with_image), Vec::<String>::new());
    let p = file_problems(&kube_file(
        "istio",
        "    virtualService: checkout\n",
        "  sticky:\n    cookie: session\n",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "r.yaml:13:5: traffic.sticky: provider istio cannot keep a user on one version"
        ),
        "{p:?}"
    );
    let two_headers = "  routes:\n    - match: { header: { name: x-canary, value: always } }\n      version: canary\n    - match: { header: { name: x-other, value: \"1\" } }\n      version: canary\n";
    let p = file_problems(&kube_file(
        "nginx-ingress",
        "    ingress: checkout\n",
        two_headers,
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("r.yaml:15:7: traffic.routes[1]: nginx-ingress takes one header"),
        "{p:?}"
    );
    let cookie = "  routes:\n    - match: { cookie: { name: beta, value: \"yes\" } }\n      version: canary\n";
    let p = file_problems(&kube_file(
        "nginx-ingress",
        "    ingress: checkout\n",
        cookie,
    ));
    assert!(p[0].contains("`always`"), "{p:?}");
    assert_eq!(
        file_problems(&kube_file("gateway-api", route, cookie)),
        Vec::<String>::new()
    );
    assert_eq!(
        file_problems(&kube_file("gateway-api", route, two_headers)),
        Vec::<String>::new()
    );
    // All at once, each at its place: before, the first only, and none
    // with a place.
    let p = file_problems(
        &kube_file(
            "nginx-ingress",
            "    service: Checkout\n    ingress: checkout\n",
            &format!("  sticky:\n    header: x-user\n{two_headers}"),
        )
        .replace("v1.2.0", "v1/2"),
    );
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].starts_with("r.yaml:5:12: canary.version"), "{p:?}");
    assert!(
        p[1].starts_with("r.yaml:11:14: traffic.kubernetes.service"),
        "{p:?}"
    );
    assert!(p[2].starts_with("r.yaml:14:5: traffic.sticky"), "{p:?}");
    assert!(p[3].starts_with("r.yaml:18:7: traffic.routes[1]"), "{p:?}");
}

#[test]
fn replicas_follow_the_weight() {
    assert_eq!(scaled_replicas(4, 2500), 1);
    assert_eq!(scaled_replicas(4, 2501), 2);
    assert_eq!(scaled_replicas(4, 0), 0);
    assert_eq!(scaled_replicas(4, 1), 1);
    assert_eq!(scaled_replicas(4, 10_000), 4);
}

#[test]
fn prometheus_templates_per_provider() {
    let mut all = serde_json::Map::new();
    for p in [
        KubeProvider::NginxIngress,
        KubeProvider::Istio,
        KubeProvider::GatewayApi,
    ] {
        let (requests, errors, buckets) = prometheus_queries(p, &target(p));
        for q in [&requests, &errors, &buckets] {
            assert_eq!(q.matches("{{version}}").count(), 1, "{q}");
            assert_eq!(q.matches('(').count(), q.matches(')').count(), "{q}");
            assert_eq!(q.matches('"').count() % 2, 0, "{q}");
        }
        assert!(buckets.contains("sum by (le, serin_version)"), "{buckets}");
        assert!(errors.contains("5.."), "{errors}");
        all.insert(
            p.as_str().to_string(),
            json!({"requests": requests, "errors": errors, "latencyBuckets": buckets}),
        );
    }
    golden("prometheus-queries", &Value::Object(all));
}

/// A `promtool test rules` file that evaluates every template, for stable
/// and canary, on made-up series of each provider's metrics. Pinned as a
/// golden file so it always holds the current queries; run it with
/// `promtool test rules crates/serin/tests/golden/kubernetes/promtool-tests.json`
/// (see docs/kubernetes.md for the version it passed with).
#[test]
fn promtool_test_file_holds_the_current_queries() {
    let series = |s: &str, v: u64| json!({"series": s, "values": v.to_string()});
    let sample = |labels: &str, v: f64| json!({"labels": labels, "value": v});
    let mut tests = Vec::new();
    for p in [
        KubeProvider::NginxIngress,
        KubeProvider::Istio,
        KubeProvider::GatewayApi,
    ] {
        let (requests, errors, buckets) = prometheus_queries(p, &target(p));
        let (input, le) = match p {
            KubeProvider::NginxIngress => {
                let m = |extra: &str, v| {
                    series(
                        &format!(
                            "nginx_ingress_controller_requests{{namespace=\"shop\",ingress=\"checkout\",{extra}}}"
                        ),
                        v,
                    )
                };
                let b = |canary: &str, le: &str, v| {
                    series(
                        &format!(
                            "nginx_ingress_controller_request_duration_seconds_bucket{{namespace=\"shop\",ingress=\"checkout\",canary=\"{canary}\",le=\"{le}\"}}"
                        ),
                        v,
                    )
                };
                (
                    vec![
                        m("status=\"200\",canary=\"\"", 100),
                        m("status=\"500\",canary=\"\"", 5),
                        m("status=\"200\",canary=\"shop-checkout-canary-80\"", 20),
                        m("status=\"503\",canary=\"shop-checkout-canary-80\"", 2),
                        series(
                            "nginx_ingress_controller_requests{namespace=\"shop\",ingress=\"other\",status=\"500\",canary=\"\"}",
                            999,
                        ),
                        b("", "0.1", 50),
                        b("", "1", 100),
                        b("", "+Inf", 105),
                        b("shop-checkout-canary-80", "0.1", 10),
                        b("shop-checkout-canary-80", "1", 20),
                        b("shop-checkout-canary-80", "+Inf", 22),
                    ],
                    vec![
                        ("0.1", 50.0, 10.0),
                        ("1", 100.0, 20.0),
                        ("+Inf", 105.0, 22.0),
                    ],
                )
            }
            KubeProvider::Istio => {
                let m = |reporter: &str, w: &str, code: &str, v| {
                    series(
                        &format!(
                            "istio_requests_total{{reporter=\"{reporter}\",destination_workload_namespace=\"shop\",destination_workload=\"{w}\",response_code=\"{code}\"}}"
                        ),
                        v,
                    )
                };
                let b = |w: &str, le: &str, v| {
                    series(
                        &format!(
                            "istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"shop\",destination_workload=\"{w}\",le=\"{le}\"}}"
                        ),
                        v,
                    )
                };
                let mut input = vec![
                    m("destination", "checkout", "200", 100),
                    m("destination", "checkout", "500", 5),
                    m("destination", "checkout-canary", "200", 20),
                    m("destination", "checkout-canary", "503", 2),
                    m("source", "checkout", "500", 999),
                    m("destination", "checkout-db", "500", 999),
                ];
                let les = [
                    ("0.5", "0.0005"),
                    ("5", "0.005"),
                    ("25", "0.025"),
                    ("250", "0.250"),
                    ("2500", "2.500"),
                    ("+Inf", "+Inf"),
                ];
                let mut want = Vec::new();
                for (i, (ms, s)) in les.iter().enumerate() {
                    let (st, ca) = (10 * (i as u64 + 1), 2 * (i as u64 + 1));
                    input.push(b("checkout", ms, st));
                    input.push(b("checkout-canary", ms, ca));
                    want.push((*s, st as f64, ca as f64));
                }
                (input, want)
            }
            KubeProvider::GatewayApi => {
                let m = |pod: &str, code: &str, v| {
                    series(
                        &format!(
                            "http_requests_total{{namespace=\"shop\",pod=\"{pod}\",code=\"{code}\"}}"
                        ),
                        v,
                    )
                };
                let b = |pod: &str, le: &str, v| {
                    series(
                        &format!(
                            "http_request_duration_seconds_bucket{{namespace=\"shop\",pod=\"{pod}\",le=\"{le}\"}}"
                        ),
                        v,
                    )
                };
                let (sp, cp) = ("checkout-5d9f8b7c4-x2k9q", "checkout-canary-7c6b9d-fzq4m");
                (
                    vec![
                        m(sp, "200", 60),
                        m("checkout-7f8c9d6b5-b4n7r", "200", 40),
                        m(sp, "500", 5),
                        m(cp, "200", 20),
                        m(cp, "502", 2),
                        m("checkout-db-0", "500", 999),
                        b(sp, "0.1", 50),
                        b(sp, "+Inf", 65),
                        b(cp, "0.1", 10),
                        b(cp, "+Inf", 22),
                    ],
                    vec![("0.1", 50.0, 10.0), ("+Inf", 65.0, 22.0)],
                )
            }
        };
        // Every provider's input has stable 105 requests (5 errors), canary 22 (2).
        let totals = [(105.0, 5.0), (22.0, 2.0)];
        let mut exprs = Vec::new();
        for (i, version) in ["stable", "canary"].iter().enumerate() {
            let at = |q: &str| q.replace("{{version}}", version);
            let one = format!("{{serin_version=\"{version}\"}}");
            exprs.push(json!({"expr": at(&requests), "eval_time": "0m", "exp_samples": [sample(&one, totals[i].0)]}));
            exprs.push(json!({"expr": at(&errors), "eval_time": "0m", "exp_samples": [sample(&one, totals[i].1)]}));
            let samples: Vec<Value> = le
                .iter()
                .map(|(le, s, c)| {
                    sample(
                        &format!("{{le=\"{le}\",serin_version=\"{version}\"}}"),
                        if i == 0 { *s } else { *c },
                    )
                })
                .collect();
            exprs.push(json!({"expr": at(&buckets), "eval_time": "0m", "exp_samples": samples}));
        }
        tests.push(json!({"interval": "1m", "input_series": input, "promql_expr_test": exprs}));
    }
    golden(
        "promtool-tests",
        &json!({"rule_files": [], "evaluation_interval": "1m", "tests": tests}),
    );
}

#[tokio::test]
async fn istio_refuses_a_route_that_also_sends_elsewhere() {
    let cluster = cluster_for(KubeProvider::Istio);
    cluster.lock().unwrap().objects.get_mut(VS).unwrap()["spec"]["http"][1]["route"] = json!([
        {"destination": {"host": "checkout"}, "weight": 90},
        {"destination": {"host": "legacy"}, "weight": 10}
    ]);
    let r = router(&cluster, target(KubeProvider::Istio));
    let err = r.apply_weight(Weight::ZERO).await.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "VirtualService shop/checkout: HTTP route main sends to checkout and to other hosts"
        ),
        "{err}"
    );
    assert!(
        take(&cluster).iter().all(|c| c.method == "GET"),
        "nothing written"
    );
}

#[tokio::test]
async fn nginx_sends_a_never_header_to_stable() {
    let cluster = cluster_for(KubeProvider::NginxIngress);
    let mut t = target(KubeProvider::NginxIngress);
    t.routes = vec![Route::header("x-canary", "never", Version::Stable).unwrap()];
    let r = router(&cluster, t);
    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    let a = &body_of(&calls, "PATCH", CANARY_INGRESS)["metadata"]["annotations"];
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header"],
        "x-canary"
    );
    assert!(
        a.get("nginx.ingress.kubernetes.io/canary-by-header-value")
            .is_none()
    );
    // No route to the canary: at weight 0 with scaling, one pod to get ready on.
    assert_eq!(
        deployment_replicas(body_of(&calls, "PATCH", CANARY_DEPLOY)),
        1
    );
}

/// An analysis that passes every interval and, when the 50 % stage begins,
/// stops the cluster's pods from becoming ready: the canary replicas of the
/// next weight will not be ready.
struct PassThenStall {
    cluster: Shared,
}

impl serin::controller::seams::Analysis for PassThenStall {
    fn begin_stage(&mut self, weight: Weight) -> serin::controller::seams::BoxFuture<'_, ()> {
        if weight == w(50.0) {
            self.cluster.lock().unwrap().ready = false;
        }
        Box::pin(async {})
    }
    fn analyse(
        &mut self,
        _end_of_pause: bool,
    ) -> serin::controller::seams::BoxFuture<'_, serin::controller::seams::Analysed> {
        Box::pin(async {
            serin::controller::seams::Analysed {
                verdict: serin::rollout::Verdict::Pass,
                reason: "scripted pass".into(),
                sample: None,
                canary_requests: None,
                would_fail: None,
                within_limits: None,
                split: None,
            }
        })
    }
}

/// With scaleWithWeight, a last `setWeight: 100` whose canary replicas are
/// not ready is refused; the rollout holds at 50 % (never promoted there)
/// and is promoted only after 100 % has landed and been judged.
#[tokio::test]
async fn the_driver_holds_a_last_weight_until_its_canary_pods_are_ready() {
    use serin::controller::driver::Driver;
    use serin::rollout::{Phase, Plan, State, Step};
    use serin::store::{RolloutRecord, Store};
    use serin::time::now as now_millis;

    let cluster = cluster_for(KubeProvider::GatewayApi);
    cluster.lock().unwrap().ready = true;
    let r = router(&cluster, target(KubeProvider::GatewayApi));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let record = store
        .register(
            &RolloutRecord {
                name: "checkout".into(),
                spec: String::new(),
                stable_version: "v1.1.0".into(),
                canary_version: Some("v1.2.0".into()),
                former_stable_version: None,
                stable_upstream: None,
                canary_upstream: None,
                state: State::new(now_millis()),
                last_verdict: None,
                generation: 0,
                run: 0,
            },
            now_millis(),
        )
        .unwrap();
    let plan = Plan {
        steps: vec![
            Step::SetWeight(w(50.0)),
            Step::PauseFor {
                duration: Duration::from_millis(200),
                early: false,
            },
            Step::SetWeight(w(100.0)),
        ],
        interval: Duration::from_millis(50),
        no_data_limit: 3,
        judge_at_end_of_pause: false,
        progress_deadline: None,
        min_requests: 100,
        advisory: false,
    };
    let (driver, handle) = Driver::new(
        plan,
        store.clone(),
        record,
        Arc::new(r),
        Box::new(PassThenStall {
            cluster: cluster.clone(),
        }),
    );
    let task = tokio::spawn(driver.run(std::future::pending()));
    let full = scaled_replicas(4, w(100.0).hundredths());
    let refused_at_100 = || {
        cluster
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|c| {
                c.method == "PATCH"
                    && c.path == CANARY_DEPLOY
                    && deployment_replicas(&c.body) == full
            })
            .count()
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        while refused_at_100() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("100 % asked for three times");
    let stored = store.get("checkout").unwrap();
    assert_eq!(stored.state.phase, Phase::Progressing, "held, not promoted");
    assert_eq!(stored.stable_version, "v1.1.0");
    let last_route = cluster
        .lock()
        .unwrap()
        .log
        .iter()
        .rev()
        .find(|c| c.method == "PATCH" && c.path == ROUTE)
        .map(|c| route_weights(&c.body))
        .expect("the route was applied");
    assert!(
        last_route.contains(&("checkout-canary".to_string(), 5_000)),
        "the route still holds 50 %: {last_route:?}"
    );
    assert!(
        !lines(&cluster.lock().unwrap().log).contains(&format!("PATCH {DEPLOY}")),
        "promotion not started"
    );
    let health = handle.health();
    assert_eq!(health.weight_pending, Some(w(100.0)), "{health:?}");
    assert!(
        health
            .router_error
            .as_deref()
            .is_some_and(|e| e.contains("ready")),
        "{health:?}"
    );

    cluster.lock().unwrap().ready = true;
    let done = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("finished in time")
        .unwrap()
        .unwrap();
    assert_eq!(done.state.phase, Phase::Succeeded);
    let log = cluster.lock().unwrap().log.clone();
    let route_at_100 = log
        .iter()
        .position(|c| {
            c.method == "PATCH"
                && c.path == ROUTE
                && route_weights(&c.body).contains(&("checkout-canary".to_string(), 10_000))
        })
        .expect("100 % reached the route");
    let promoted = log
        .iter()
        .position(|c| c.method == "PATCH" && c.path == DEPLOY)
        .expect("promoted");
    assert!(route_at_100 < promoted, "{:#?}", lines(&log));
    assert!(
        store
            .events("checkout")
            .unwrap()
            .iter()
            .any(|e| e.kind == "verdict" && e.decision.weight == w(100.0)),
        "judged at 100 % before the promotion"
    );
}

// ---------------------------------------------------------------- baseline

const BASELINE_DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout-baseline";
const BASELINE_SERVICE: &str = "/api/v1/namespaces/shop/services/checkout-baseline";
const REPLICASETS: &str = "/apis/apps/v1/namespaces/shop/replicasets";

/// A target with `baseline: {}`.
fn baseline_target(provider: KubeProvider) -> KubeTarget {
    KubeTarget {
        baseline: true,
        ..target(provider)
    }
}

/// The weighted route's (subset, weight) pairs of a VirtualService body.
fn vs_weights(body: &Value) -> Vec<(String, i64)> {
    let http = body["spec"]["http"].as_array().cloned().unwrap_or_default();
    let weighted = http
        .iter()
        .rfind(|r| r["route"].as_array().is_some_and(|d| d.len() > 1))
        .cloned()
        .unwrap_or_default();
    weighted["route"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d["destination"]["subset"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                d["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Marks the Deployment at `path` rolled out.
fn roll_out(cluster: &Shared, path: &str) {
    let mut c = cluster.lock().unwrap();
    let mut d = c.objects[path].clone();
    set_deployment_status(&mut d, true);
    c.objects.insert(path.into(), d);
}

/// Gateway API with a baseline: `checkout-baseline` from the stable's
/// template (its image), its own Service, the canary's share in the route
/// (min(w, 100 − w)), 0 at rollback, deleted at cleanup.
#[tokio::test]
async fn gateway_api_baseline_request_by_request() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    let r = router(&cluster, baseline_target(KubeProvider::GatewayApi));

    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    let err = err.to_string();
    assert!(
        err.contains("canary Deployment shop/checkout-canary 0/1 ready")
            && err.contains("baseline Deployment shop/checkout-baseline 0/1 ready"),
        "{err}"
    );
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("GET {DEPLOY}"),
            format!("GET {SERVICE}"),
            format!("GET {ROUTE}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}"),
            format!("PATCH {CANARY_SERVICE}"),
            format!("PATCH {BASELINE_SERVICE}"),
            format!("PATCH {ROUTE}"),
            format!("GET {DEPLOY}"),
            format!("GET {CANARY_DEPLOY}"),
            format!("GET {BASELINE_DEPLOY}"),
        ]
    );
    assert_applies(&calls);
    parse_all(&calls);
    let baseline = body_of(&calls, "PATCH", BASELINE_DEPLOY);
    assert_eq!(deployment_replicas(baseline), 1);
    assert_eq!(
        baseline["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout:v1.1.0",
        "the stable's image"
    );
    assert_eq!(
        baseline["spec"]["selector"]["matchLabels"],
        json!({"app": "checkout-baseline", "version": "baseline"})
    );
    assert_eq!(
        baseline["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "serin"
    );
    let svc = body_of(&calls, "PATCH", BASELINE_SERVICE);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "checkout-baseline", "version": "baseline"})
    );
    assert_eq!(
        route_weights(body_of(&calls, "PATCH", ROUTE)),
        [
            ("checkout".to_string(), 10_000),
            ("checkout-canary".to_string(), 0),
            ("checkout-baseline".to_string(), 0)
        ]
    );

    cluster.lock().unwrap().ready = true;
    roll_out(&cluster, CANARY_DEPLOY);
    roll_out(&cluster, BASELINE_DEPLOY);
    r.check_ready().await.unwrap();
    take(&cluster);

    // 10 %: canary and baseline 10 % each, ceil(4 × 0.1) = 1 replica each.
    r.apply_weight(w(10.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}"),
            format!("PATCH {ROUTE}")
        ]
    );
    assert_eq!(deployment_replicas(&calls[1].body), 1);
    assert_eq!(
        route_weights(&calls[2].body),
        [
            ("checkout".to_string(), 8000),
            ("checkout-canary".to_string(), 1000),
            ("checkout-baseline".to_string(), 1000)
        ]
    );

    // 60 %: the baseline gets what is left, 40 %, and ceil(4 × 0.4) = 2.
    r.apply_weight(w(60.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        (
            deployment_replicas(&calls[0].body),
            deployment_replicas(&calls[1].body)
        ),
        (3, 2)
    );
    assert_eq!(
        route_weights(&calls[2].body),
        [
            ("checkout".to_string(), 0),
            ("checkout-canary".to_string(), 6000),
            ("checkout-baseline".to_string(), 4000)
        ]
    );

    // Rollback: the routing first, then both to 0 replicas.
    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {ROUTE}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}")
        ]
    );
    assert_eq!(
        route_weights(&calls[0].body),
        [
            ("checkout".to_string(), 10_000),
            ("checkout-canary".to_string(), 0),
            ("checkout-baseline".to_string(), 0)
        ]
    );
    assert_eq!(deployment_replicas(&calls[2].body), 0);

    // Cleanup: as the end of a promotion, then the baseline's objects go.
    r.cleanup().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {ROUTE}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}"),
            format!("DELETE {BASELINE_DEPLOY}"),
            format!("DELETE {BASELINE_SERVICE}"),
        ]
    );
    let c = cluster.lock().unwrap();
    assert!(!c.objects.contains_key(BASELINE_DEPLOY));
    assert!(!c.objects.contains_key(BASELINE_SERVICE));
}

/// Istio with a baseline: the subset `baseline` (`version: baseline`)
/// behind the stable Service, the canary's share in the VirtualService,
/// promotion retires it; stable pods labelled `version: baseline` are
/// refused.
#[tokio::test]
async fn istio_baseline_request_by_request() {
    let cluster = cluster_for(KubeProvider::Istio);
    let r = router(&cluster, baseline_target(KubeProvider::Istio));
    cluster.lock().unwrap().ready = true;

    r.apply_weight(Weight::ZERO).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("GET {DEPLOY}"),
            format!("GET {SERVICE}"),
            format!("GET {VS}"),
            format!("GET {DR}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}"),
            format!("PATCH {DR}"),
            format!("PATCH {VS}"),
        ]
    );
    assert_applies(&calls);
    parse_all(&calls);
    let baseline = body_of(&calls, "PATCH", BASELINE_DEPLOY);
    assert_eq!(
        baseline["spec"]["template"]["metadata"]["labels"],
        json!({"app": "checkout", "version": "baseline"})
    );
    assert_eq!(
        baseline["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout:v1.1.0"
    );
    let subsets = &body_of(&calls, "PATCH", DR)["spec"]["subsets"];
    assert_eq!(
        subsets,
        &json!([
            {"name": "stable", "labels": {"version": "v1"}},
            {"name": "canary", "labels": {"version": "canary"}},
            {"name": "baseline", "labels": {"version": "baseline"}},
        ])
    );
    assert_eq!(
        vs_weights(body_of(&calls, "PATCH", VS)),
        [
            ("stable".to_string(), 100),
            ("canary".to_string(), 0),
            ("baseline".to_string(), 0)
        ]
    );

    r.apply_weight(w(25.0)).await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}"),
            format!("PATCH {VS}")
        ]
    );
    assert_eq!(
        vs_weights(&calls[2].body),
        [
            ("stable".to_string(), 50),
            ("canary".to_string(), 25),
            ("baseline".to_string(), 25)
        ]
    );

    r.promote().await.unwrap();
    let calls = take(&cluster);
    assert_eq!(
        lines(&calls),
        [
            format!("PATCH {DEPLOY}"),
            format!("GET {DEPLOY}"),
            format!("PATCH {VS}"),
            format!("PATCH {CANARY_DEPLOY}"),
            format!("PATCH {BASELINE_DEPLOY}"),
        ]
    );
    assert_eq!(vs_weights(&calls[2].body)[2], ("baseline".to_string(), 0));
    assert_eq!(deployment_replicas(&calls[4].body), 0);

    // Stable pods that already say `version: baseline` cannot be told apart.
    let cluster = cluster_for(KubeProvider::Istio);
    cluster.lock().unwrap().objects.get_mut(DEPLOY).unwrap()["spec"]["template"]["metadata"]["labels"]
        ["version"] = json!("baseline");
    let r = router(&cluster, baseline_target(KubeProvider::Istio));
    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.kind(), Kind::Conflict, "{err}");
    assert!(err.to_string().contains("`version: baseline`"), "{err}");
    assert!(
        take(&cluster).iter().all(|c| c.method == "GET"),
        "nothing written"
    );
}

/// GitOps: the stable is paused with git's new template; the baseline is
/// made from the template its pods run (its ReplicaSet with pods and the
/// highest revision), not git's new image; with no such ReplicaSet nothing
/// is written.
#[tokio::test]
async fn gitops_baseline_runs_the_running_template() {
    let cluster = cluster_for(KubeProvider::GatewayApi);
    {
        let mut c = cluster.lock().unwrap();
        let d = c.objects.get_mut(DEPLOY).unwrap();
        d["spec"]["paused"] = json!(true);
        d["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example.com/checkout:v1.2.0");
    }
    let r = KubernetesRouter::new(
        client(cluster.clone()),
        baseline_target(KubeProvider::GatewayApi),
    )
    .gitops();
    // No ReplicaSets to read (an API without them), then none with pods.
    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    assert!(
        err.to_string()
            .contains("ReplicaSets of Deployment shop/checkout: not found"),
        "{err}"
    );
    cluster.lock().unwrap().objects.insert(
        REPLICASETS.into(),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": []}),
    );
    let err = r.check_ready().await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    assert!(err.to_string().contains("no ReplicaSet with pods"), "{err}");
    assert!(take(&cluster).iter().all(|c| c.method == "GET"));

    let rs = |revision: &str, replicas: i64, image: &str, owner: &str| {
        json!({
            "metadata": {"name": format!("checkout-{revision}"), "namespace": NS,
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": owner, "uid": "u-1"}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "checkout"}},
                "template": {
                    "metadata": {"labels": {"app": "checkout", "version": "v1",
                                            "pod-template-hash": format!("h{revision}")}},
                    "spec": {"containers": [{"name": "checkout", "image": image}]}}},
            "status": {"replicas": replicas}
        })
    };
    cluster.lock().unwrap().objects.insert(
        REPLICASETS.into(),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {},
        "items": [
            rs("3", 4, "registry.example.com/checkout:v1.1.0", "checkout"),
            rs("2", 0, "registry.example.com/checkout:v1.0.0", "checkout"),
            rs("9", 2, "registry.example.com/other:v9", "checkout-canary"),
        ]}),
    );
    let r = KubernetesRouter::new(
        client(cluster.clone()),
        baseline_target(KubeProvider::GatewayApi),
    )
    .gitops();
    assert!(r.check_ready().await.is_err(), "pods not ready yet");
    let calls = take(&cluster);
    let list = calls
        .iter()
        .find(|c| c.path == REPLICASETS)
        .expect("the ReplicaSets are listed");
    assert!(
        list.query.contains("labelSelector=app%3Dcheckout"),
        "{}",
        list.query
    );
    let baseline = body_of(&calls, "PATCH", BASELINE_DEPLOY);
    assert_eq!(
        baseline["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout:v1.1.0",
        "the running template, not git's new one"
    );
    assert_eq!(
        baseline["spec"]["template"]["metadata"]["labels"],
        json!({"app": "checkout-baseline", "version": "baseline"})
    );
    // The canary is git's new template, as without a baseline.
    assert_eq!(
        body_of(&calls, "PATCH", CANARY_DEPLOY)["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/checkout:v1.2.0"
    );
    assert!(
        calls.iter().all(|c| c.path != DEPLOY || c.method == "GET"),
        "the stable is never written"
    );
}
