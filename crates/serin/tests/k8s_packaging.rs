//! deploy/kubernetes/ is one kustomization (`kubectl apply -k
//! deploy/kubernetes`): it builds, every object parses as its Kubernetes
//! type and says what docs/kubernetes.md promises (two replicas of `serin
//! serve --kubernetes`, the Downward API's POD_NAMESPACE and POD_NAME, probes
//! on the daemon's health endpoint, non-root with a read-only root, a
//! PodDisruptionBudget, anti-affinity), its RBAC grants exactly what serin
//! calls (`cluster::rbac::NEEDS`, both ways), and it applies to kubesim.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::kubesim::KubeSim;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use serin::cluster::rbac::{NEEDS, Scope};

const NS: &str = "serin-system";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubectl kustomize deploy/kubernetes`, as documents.
fn built() -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(repo())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/kubernetes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let mut of: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(of.len(), 1, "one {kind}");
    serde_json::from_value(of.remove(0).clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn the_kustomization_builds_the_controller_with_its_namespace_crd_and_rights() {
    let docs = built();
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ])
    );
    assert_eq!(docs.len(), kinds.len(), "one of each");
    for d in &docs {
        let cluster_wide = [
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ];
        if !cluster_wide.contains(&d["kind"].as_str().unwrap()) {
            assert_eq!(d["metadata"]["namespace"], NS, "{}", d["kind"]);
        }
    }
    let ns: Namespace = one(&docs, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some(NS));
    // The CRD is the generated file, unchanged.
    let crd: CustomResourceDefinition = one(&docs, "CustomResourceDefinition");
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/crd.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&crd).unwrap(),
        serde_json::from_value::<CustomResourceDefinition>(file)
            .map(|c| serde_json::to_value(c).unwrap())
            .unwrap()
    );
    let _: ServiceAccount = one(&docs, "ServiceAccount");

    let d: Deployment = one(&docs, "Deployment");
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(2));
    let labels = spec.selector.match_labels.clone().unwrap();
    let pod_meta = spec.template.metadata.unwrap();
    assert_eq!(pod_meta.labels.as_ref(), Some(&labels));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("serin"));
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[..2], ["serve", "--kubernetes"]);
    let env = c.env.clone().unwrap();
    for (name, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let e = env
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        let from = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
        assert_eq!(from.map(|f| f.field_path.as_str()), Some(field), "{name}");
    }
    // The probes ask the daemon's health endpoint (api/server.rs).
    let server = std::fs::read_to_string(repo().join("crates/serin/src/api/server.rs")).unwrap();
    for probe in [&c.readiness_probe, &c.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let path = get.path.as_deref().unwrap();
        assert!(
            server.contains(&format!(".route(\"{path}\"")),
            "{path} is not served"
        );
    }
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(
        preferred[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        preferred[0]
            .pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref(),
        Some(&labels)
    );
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none(),
        "preferred only"
    );

    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget");
    let pdb = pdb.spec.unwrap();
    assert_eq!(
        pdb.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(pdb.selector.unwrap().match_labels, Some(labels.clone()));
    let svc: Service = one(&docs, "Service");
    assert_eq!(svc.spec.unwrap().selector, Some(labels));
}

/// (group, resource, verb, scope) of every rule.
fn grants(rules: &[PolicyRule], scope: Scope) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    assert_ne!(v, "*", "no wildcard verbs");
                    assert_ne!(res, "*", "no wildcard resources");
                    out.insert((g.clone(), res.clone(), v.clone(), format!("{scope:?}")));
                }
            }
        }
    }
    out
}

#[test]
fn the_rbac_grants_exactly_what_serin_calls() {
    let docs = built();
    let cluster: ClusterRole = one(&docs, "ClusterRole");
    let role: Role = one(&docs, "Role");
    let mut granted = grants(&cluster.rules.unwrap(), Scope::Cluster);
    granted.extend(grants(role.rules.as_ref().unwrap(), Scope::Own));
    let needed: BTreeSet<(String, String, String, String)> = NEEDS
        .iter()
        .flat_map(|n| {
            n.verbs.iter().map(move |v| {
                (
                    n.group.to_string(),
                    n.resource.to_string(),
                    v.to_string(),
                    format!("{:?}", n.scope),
                )
            })
        })
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "rbac.yaml and cluster/rbac.rs NEEDS differ:\nmissing from rbac.yaml: {missing:?}\nnot needed: {extra:?}"
    );
    // Leases: read and renewed only by their name.
    let named: Vec<_> = role
        .rules
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.verbs.iter().any(|v| v == "get" || v == "update"))
        .map(|r| r.resource_names.clone())
        .collect();
    assert_eq!(named, [Some(vec!["serin".to_string()])]);
    // Both roles are bound to serin's ServiceAccount.
    let crb: ClusterRoleBinding = one(&docs, "ClusterRoleBinding");
    let rb: RoleBinding = one(&docs, "RoleBinding");
    assert_eq!(crb.role_ref.name, cluster.metadata.name.unwrap());
    assert_eq!(rb.role_ref.name, role.metadata.name.unwrap());
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "serin");
        assert_eq!(subjects[0].namespace.as_deref(), Some(NS));
    }
}

#[test]
fn apply_k_installs_everything_on_a_cluster() {
    let sim = KubeSim::start(&["--no-seed"]);
    let dir = repo().join("deploy/kubernetes");
    let dir = dir.to_str().unwrap();
    let out = sim.kubectl(&["apply", "-k", dir, "--server-side"]);
    assert!(
        out.status.success(),
        "kubectl apply -k: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (what, namespaced) in [
        ("namespace/serin-system", false),
        ("customresourcedefinition/rollouts.serin.dev", false),
        ("clusterrole/serin", false),
        ("clusterrolebinding/serin", false),
        ("serviceaccount/serin", true),
        ("role/serin-leader-election", true),
        ("rolebinding/serin-leader-election", true),
        ("deployment/serin", true),
        ("service/serin", true),
        ("poddisruptionbudget/serin", true),
    ] {
        let mut args = vec!["get", what, "-o", "name"];
        if namespaced {
            args.extend(["-n", NS]);
        }
        let out = sim.kubectl(&args);
        assert!(
            out.status.success(),
            "kubectl get {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The Rollout kind is served at once.
    let out = sim.kubectl(&["get", "rollouts", "-A"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Applied again: nothing conflicts.
    let again = sim.kubectl(&["apply", "-k", dir, "--server-side"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
