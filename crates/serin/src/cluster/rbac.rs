//! What serin asks of the Kubernetes API server, resource by resource and
//! verb by verb, with the code that asks. `deploy/kubernetes/rbac.yaml`
//! grants exactly this (tests/k8s_packaging.rs compares the two both ways:
//! nothing missing, nothing more). Add a line here with any new API call.

/// Where a grant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace that holds Rollouts (the ClusterRole).
    Cluster,
    /// serin's own namespace (the leader-election Role).
    Own,
}

/// One resource serin uses and the verbs it needs on it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, with `/subresource` where it is one.
    pub resource: &'static str,
    /// The verbs.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// Which code makes the calls.
    pub why: &'static str,
}

const fn need(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    scope: Scope,
    why: &'static str,
) -> Need {
    Need {
        group,
        resource,
        verbs,
        scope,
        why,
    }
}

/// Everything serin's controller and its traffic providers call.
pub const NEEDS: &[Need] = &[
    need(
        "serin.dev",
        "rollouts",
        &["get", "list", "watch", "patch"],
        Scope::Cluster,
        "cluster/controller.rs: the watch of Rollouts; the finalizer (a JSON patch)",
    ),
    need(
        "serin.dev",
        "rollouts/status",
        &["get", "update", "patch"],
        Scope::Cluster,
        "cluster/status.rs: the status as the durable store, replaced with the resourceVersion read",
    ),
    need(
        "serin.dev",
        "rollouts/finalizers",
        &["update"],
        Scope::Cluster,
        "objects serin creates name their Rollout as owner (blockOwnerDeletion)",
    ),
    need(
        "apps",
        "deployments",
        &["get", "list", "watch", "patch", "create", "delete"],
        Scope::Cluster,
        "cluster/controller.rs watches the Deployments Rollouts name; providers/traffic/kubernetes \
         pauses the stable (apply), applies NAME-canary and NAME-baseline (an apply that creates) \
         and deletes NAME-baseline at cleanup",
    ),
    need(
        "apps",
        "replicasets",
        &["list"],
        Scope::Cluster,
        "providers/traffic/kubernetes: the stable's running template for NAME-baseline (GitOps mode)",
    ),
    need(
        "",
        "services",
        &["get", "patch", "create", "delete"],
        Scope::Cluster,
        "providers/traffic/kubernetes: reads the stable Service, applies SERVICE-canary and \
         SERVICE-baseline (deleted at cleanup)",
    ),
    need(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        Scope::Cluster,
        "cluster/status.rs: the run's decisions as Events",
    ),
    need(
        "networking.k8s.io",
        "ingresses",
        &["get", "patch", "create", "delete"],
        Scope::Cluster,
        "providers/traffic/kubernetes/nginx_ingress.rs: the canary Ingress (deleted by serin cleanup)",
    ),
    need(
        "networking.istio.io",
        "virtualservices",
        &["get", "patch", "create"],
        Scope::Cluster,
        "providers/traffic/kubernetes/istio.rs: weights in a VirtualService (created when serin owns it)",
    ),
    need(
        "networking.istio.io",
        "destinationrules",
        &["get", "patch"],
        Scope::Cluster,
        "providers/traffic/kubernetes/istio.rs: the stable, canary and baseline subsets",
    ),
    need(
        "gateway.networking.k8s.io",
        "httproutes",
        &["get", "patch", "create"],
        Scope::Cluster,
        "providers/traffic/kubernetes/gateway_api.rs: weights in an HTTPRoute (created when serin owns it)",
    ),
    need(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
        Scope::Own,
        "cluster/lease.rs: leader election over the Lease serin",
    ),
];
