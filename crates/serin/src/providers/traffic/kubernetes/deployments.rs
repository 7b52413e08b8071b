//! The canary Deployment (and, where the provider needs one, the canary
//! Service), built from the stable ones; replica counts and readiness.
//!
//! Labels: the canary's pods carry the stable pods' labels plus
//! `version: canary` ([`TRACK_LABEL`]). Where the provider routes by Service
//! (nginx-ingress, gateway-api) the stable Service must not select canary
//! pods, so every label the stable Service selects on gets the value
//! `VALUE-canary` on canary pods (as Flagger's `app-primary` does the other
//! way round); the canary Service selects on those renamed labels. Istio
//! routes by subset inside the one stable Service, so there the canary pods
//! keep the selected labels and differ only in `version`.
//!
//! The baseline (`baseline: {}`) is made the same way from the stable's
//! running pod template, its image untouched: `NAME-baseline`, pods
//! labelled `version: baseline` and, where the provider routes by Service,
//! `VALUE-baseline` for each selected label, with the Service
//! `SERVICE-baseline` selecting them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{
    BASELINE_SUFFIX, BASELINE_TRACK, CANARY_SUFFIX, CANARY_TRACK, MANAGED_BY, TRACK_LABEL,
};

/// Labels of a pod or selector.
pub(crate) type Labels = BTreeMap<String, String>;

/// The canary Deployment as serin applies it, less its replica count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CanaryDeployment {
    /// The whole object; `spec.replicas` is set per apply.
    pub object: Deployment,
    /// The container whose image serin sets.
    pub container: String,
    /// The canary's image.
    pub image: String,
    /// The labels that tell canary pods apart (the canary Service's selector).
    pub selector: Labels,
}

/// `image` with its tag (and digest) replaced by `tag`:
/// `reg:5000/team/app:v1@sha256:..` with `v2` gives `reg:5000/team/app:v2`.
pub(crate) fn retag(image: &str, tag: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let name_start = repo.rfind('/').map_or(0, |i| i + 1);
    let repo = match repo[name_start..].find(':') {
        Some(colon) => &repo[..name_start + colon],
        None => repo,
    };
    format!("{repo}:{tag}")
}

/// Which copy of the stable Deployment serin makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `NAME-canary`, the new version.
    Canary,
    /// `NAME-baseline`, the stable's running template started fresh.
    Baseline,
}

impl Role {
    /// The suffix of its names (Deployment, Service, renamed label values).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Role::Canary => CANARY_SUFFIX,
            Role::Baseline => BASELINE_SUFFIX,
        }
    }

    /// Its pods' [`TRACK_LABEL`] value.
    pub(crate) fn track(self) -> &'static str {
        match self {
            Role::Canary => CANARY_TRACK,
            Role::Baseline => BASELINE_TRACK,
        }
    }
}

/// The pods' labels of `copy`: see the module doc. `rename` is true where
/// the stable Service must not select them.
pub(crate) fn pod_labels(
    stable_pod: &Labels,
    service_selector: &Labels,
    rename: bool,
    copy: Role,
) -> Result<Labels, String> {
    let mut labels = stable_pod.clone();
    if rename {
        for (k, v) in service_selector {
            if k == TRACK_LABEL {
                continue;
            }
            let renamed = format!("{v}{}", copy.suffix());
            if renamed.len() > 63 {
                let role = match copy {
                    Role::Canary => "canary",
                    Role::Baseline => "baseline",
                };
                return Err(format!(
                    "label {k}={renamed} for the {role} pods is longer than 63 characters"
                ));
            }
            labels.insert(k.clone(), renamed);
        }
    }
    labels.insert(TRACK_LABEL.to_string(), copy.track().to_string());
    Ok(labels)
}

/// The first container named like the Deployment, else the first one.
fn main_container(stable: &Deployment, what: &str) -> Result<(String, String), String> {
    let containers = stable
        .spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let name = stable.metadata.name.as_deref().unwrap_or_default();
    let c = containers
        .iter()
        .find(|c| c.name == name)
        .or_else(|| containers.first())
        .ok_or_else(|| format!("{what} has no containers"))?;
    let image = c
        .image
        .clone()
        .ok_or_else(|| format!("{what}: container {} has no image", c.name))?;
    Ok((c.name.clone(), image))
}

/// Builds the canary Deployment `NAME-canary` from the stable one.
pub(crate) fn canary_deployment(
    namespace: &str,
    stable: &Deployment,
    service_selector: &Labels,
    rename: bool,
    canary_version: &str,
    canary_image: Option<&str>,
) -> Result<CanaryDeployment, String> {
    let name = stable.metadata.name.clone().unwrap_or_default();
    let what = format!("Deployment {namespace}/{name}");
    let (_, stable_image) = main_container(stable, &what)?;
    let image = match canary_image {
        Some(i) => i.to_string(),
        None => retag(&stable_image, canary_version),
    };
    copy_deployment(
        namespace,
        stable,
        service_selector,
        rename,
        Role::Canary,
        &image,
    )
}

/// Builds the baseline Deployment `NAME-baseline` from `stable` (whose pod
/// template is the one running: the caller puts the running ReplicaSet's
/// in it in the GitOps mode), its images untouched.
pub(crate) fn baseline_deployment(
    namespace: &str,
    stable: &Deployment,
    service_selector: &Labels,
    rename: bool,
) -> Result<CanaryDeployment, String> {
    let name = stable.metadata.name.clone().unwrap_or_default();
    let what = format!("Deployment {namespace}/{name}");
    let (_, image) = main_container(stable, &what)?;
    copy_deployment(
        namespace,
        stable,
        service_selector,
        rename,
        Role::Baseline,
        &image,
    )
}

/// `NAME-canary` or `NAME-baseline` from the stable Deployment, with
/// `image` in its main container.
fn copy_deployment(
    namespace: &str,
    stable: &Deployment,
    service_selector: &Labels,
    rename: bool,
    copy: Role,
    image: &str,
) -> Result<CanaryDeployment, String> {
    let name = stable.metadata.name.clone().unwrap_or_default();
    let what = format!("Deployment {namespace}/{name}");
    let spec = &stable.spec;
    let (container, _) = main_container(stable, &what)?;
    let image = image.to_string();
    let stable_pod = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let pod_labels = pod_labels(&stable_pod, service_selector, rename, copy)?;
    let mut selector: Labels = spec
        .selector
        .match_labels
        .as_ref()
        .map(|m| {
            m.keys()
                .filter_map(|k| pod_labels.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    selector.insert(TRACK_LABEL.to_string(), copy.track().to_string());
    if spec.selector.match_expressions.is_some() {
        return Err(format!(
            "{what}: selectors with matchExpressions are not supported (use matchLabels)"
        ));
    }
    let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
    for c in &mut pod_spec.containers {
        if c.name == container {
            c.image = Some(image.clone());
        }
    }
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    let mut meta_labels = pod_labels.clone();
    meta_labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    let object = Deployment {
        metadata: ObjectMeta {
            name: Some(format!("{name}{}", copy.suffix())),
            namespace: Some(namespace.to_string()),
            labels: Some(meta_labels),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: None,
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: template_meta.annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            strategy: spec.strategy.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            revision_history_limit: spec.revision_history_limit,
            paused: None,
        },
        status: None,
    };
    Ok(CanaryDeployment {
        object,
        container,
        image,
        selector,
    })
}

impl CanaryDeployment {
    /// The object to apply with `replicas` replicas.
    pub(crate) fn with_replicas(&self, replicas: i32) -> Deployment {
        let mut d = self.object.clone();
        d.spec.replicas = Some(replicas);
        d
    }
}

/// The canary Service `NAME-canary`: the stable Service's ports, selecting
/// the canary pods only.
pub(crate) fn canary_service(namespace: &str, stable: &Service, selector: &Labels) -> Service {
    copy_service(namespace, stable, selector, Role::Canary)
}

/// The Service `NAME-canary` or `NAME-baseline`: the stable Service's
/// ports, selecting that copy's pods only.
pub(crate) fn copy_service(
    namespace: &str,
    stable: &Service,
    selector: &Labels,
    copy: Role,
) -> Service {
    let name = stable.metadata.name.clone().unwrap_or_default();
    let ports = stable
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            port: p.port,
            target_port: p.target_port,
            protocol: p.protocol,
            app_protocol: p.app_protocol,
            node_port: None,
        })
        .collect();
    let mut labels = Labels::new();
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    Service {
        metadata: ObjectMeta {
            name: Some(format!("{name}{}", copy.suffix())),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector.clone()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The stable Service's selector, or why it cannot be used.
pub(crate) fn service_selector(service: &Service, what: &str) -> Result<Labels, String> {
    match service.spec.as_ref().and_then(|s| s.selector.clone()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(format!(
            "{what} has no selector; serin needs one to tell canary pods apart"
        )),
    }
}

/// The apply body that gives the stable Deployment the canary's image: only
/// the container's name (the list key) and image, so serin owns no more.
pub(crate) fn stable_image_patch(
    namespace: &str,
    name: &str,
    container: &str,
    image: &str,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "template": { "spec": { "containers": [
            { "name": container, "image": image }
        ] } } }
    })
}

/// Canary replicas for `hundredths` of a percent: ceil(stable × weight),
/// at least 1 while the weight is above 0.
pub fn scaled_replicas(stable: i32, hundredths: u16) -> i32 {
    if hundredths == 0 {
        return 0;
    }
    let stable = i64::from(stable.max(0));
    let n = (stable * i64::from(hundredths) + 9_999) / 10_000;
    i32::try_from(n.max(1)).unwrap_or(i32::MAX)
}

/// A Deployment's rollout state, as `kubectl rollout status` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// Available pods of the current template.
    pub ready: i32,
    /// Pods wanted.
    pub want: i32,
    /// The controller has seen the latest spec, all pods run it and are
    /// available, and no old pods are left.
    pub done: bool,
}

/// Reads a Deployment's status.
/// The image of the stable's main container in its pod template (in the
/// GitOps mode, git's new one).
pub(crate) fn template_image(stable: &Deployment, what: &str) -> Result<String, String> {
    main_container(stable, what).map(|(_, image)| image)
}

/// A paused Deployment's pods serve: all its replicas are available,
/// whatever template they run (in the GitOps mode git's new template waits
/// for the promotion while the old pods serve).
pub(crate) fn serving(d: &Deployment) -> Readiness {
    let want = d.spec.replicas.unwrap_or(1);
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    Readiness {
        ready: available.min(want),
        want,
        done: available >= want,
    }
}

pub(crate) fn readiness(d: &Deployment) -> Readiness {
    let want = d.spec.replicas.unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let seen = match (status.observed_generation, d.metadata.generation) {
        (Some(o), Some(g)) => o >= g,
        (None, Some(_)) => false,
        _ => true,
    };
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = if seen { available.min(updated) } else { 0 };
    Readiness {
        ready,
        want,
        done: seen && updated >= want && total <= want && available >= want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retag_replaces_tag_and_digest_only() {
        assert_eq!(retag("nginx", "v2"), "nginx:v2");
        assert_eq!(retag("nginx:1.27", "v2"), "nginx:v2");
        assert_eq!(retag("reg:5000/team/app", "v2"), "reg:5000/team/app:v2");
        assert_eq!(retag("reg:5000/team/app:v1", "v2"), "reg:5000/team/app:v2");
        assert_eq!(retag("reg/app:v1@sha256:abc", "v2"), "reg/app:v2");
    }

    #[test]
    fn replicas_scale_with_weight_and_stay_at_one() {
        assert_eq!(scaled_replicas(10, 0), 0);
        assert_eq!(scaled_replicas(10, 1), 1);
        assert_eq!(scaled_replicas(10, 500), 1);
        assert_eq!(scaled_replicas(10, 2500), 3);
        assert_eq!(scaled_replicas(4, 5000), 2);
        assert_eq!(scaled_replicas(3, 3334), 2);
        assert_eq!(scaled_replicas(3, 10_000), 3);
        assert_eq!(scaled_replicas(0, 5000), 1);
    }

    #[test]
    fn renamed_labels_leave_the_stable_service() {
        let pod: Labels = [("app", "checkout"), ("tier", "web")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sel: Labels = [("app".to_string(), "checkout".to_string())].into();
        let l = pod_labels(&pod, &sel, true, Role::Canary).unwrap();
        assert_eq!(l["app"], "checkout-canary");
        assert_eq!(l["tier"], "web");
        assert_eq!(l["version"], "canary");
        let l = pod_labels(&pod, &sel, false, Role::Canary).unwrap();
        assert_eq!(l["app"], "checkout");
        let long: Labels = [("app".to_string(), "a".repeat(60))].into();
        assert!(pod_labels(&pod, &long, true, Role::Canary).is_err());
        // The baseline's leave it too, under names of their own.
        let l = pod_labels(&pod, &sel, true, Role::Baseline).unwrap();
        assert_eq!(l["app"], "checkout-baseline");
        assert_eq!(l["version"], "baseline");
    }
}
