//! ingress-nginx: a canary Ingress mirroring the primary one.
//!
//! serin owns `INGRESS-canary` whole: the primary's hosts and paths that
//! send to the stable Service, sent to the canary Service instead, and the
//! annotations `canary: "true"`, `canary-weight` in hundredths of a percent
//! with `canary-weight-total: "10000"` (exact two-decimal weights; needs
//! ingress-nginx 1.1.2 or later), and for serin's `routes`
//! `canary-by-header` / `canary-by-header-value` / `canary-by-cookie`.
//! ingress-nginx checks the header first, then the cookie, then the weight.
//!
//! ingress-nginx can express only some routes: one header (to the canary
//! when it has the given value; to stable only with the value `never`) and
//! one cookie name (value `always` to the canary, `never` to stable).
//! The rollout file's checks (`spec/kubernetes.rs`) refuse the rest before
//! anything changes.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;
use serin_proxy::{Match, Route, Version, Weight};

use super::{CANARY_SUFFIX, MANAGED_BY, Object, header_text};

/// The annotation prefix of ingress-nginx.
pub(crate) const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The canary Ingress, less its per-weight annotations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CanaryIngress {
    object: Ingress,
    routes: Vec<Route>,
}

fn to_canary(backend: &IngressBackend, stable: &str) -> Option<IngressBackend> {
    let service = backend.service.as_ref()?;
    if service.name != stable {
        return None;
    }
    let mut b = backend.clone();
    if let Some(s) = b.service.as_mut() {
        s.name = format!("{stable}{CANARY_SUFFIX}");
    }
    Some(b)
}

impl CanaryIngress {
    /// Mirrors `primary` for Service `stable`.
    pub(crate) fn new(
        namespace: &str,
        primary: &Ingress,
        stable: &str,
        routes: &[Route],
    ) -> Result<CanaryIngress, String> {
        let name = primary.metadata.name.clone().unwrap_or_default();
        let spec = primary.spec.clone().unwrap_or_default();
        let mut rules = Vec::new();
        for rule in spec.rules.unwrap_or_default() {
            let Some(mut http) = rule.http.clone() else {
                continue;
            };
            http.paths = http
                .paths
                .iter()
                .filter_map(|p| {
                    to_canary(&p.backend, stable).map(|backend| {
                        let mut p = p.clone();
                        p.backend = backend;
                        p
                    })
                })
                .collect();
            if !http.paths.is_empty() {
                let mut rule = rule.clone();
                rule.http = Some(http);
                rules.push(rule);
            }
        }
        let default_backend = spec
            .default_backend
            .as_ref()
            .and_then(|b| to_canary(b, stable));
        if rules.is_empty() && default_backend.is_none() {
            return Err(format!(
                "Ingress {namespace}/{name} has no path to Service {stable} (traffic.kubernetes.service)"
            ));
        }
        let mut annotations = BTreeMap::new();
        // The pre-IngressClass way of picking a controller must be mirrored too.
        if let Some(class) = primary
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/ingress.class"))
        {
            annotations.insert("kubernetes.io/ingress.class".to_string(), class.clone());
        }
        let labels = BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())]);
        let object = Ingress {
            metadata: ObjectMeta {
                name: Some(format!("{name}{CANARY_SUFFIX}")),
                namespace: Some(namespace.to_string()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: spec.ingress_class_name.clone(),
                default_backend,
                rules: Some(rules),
                tls: spec.tls.clone(),
            }),
            status: None,
        };
        Ok(CanaryIngress {
            object,
            routes: routes.to_vec(),
        })
    }

    /// The canary Ingress at `weight`, with the header/cookie annotations
    /// when `overrides`.
    pub(crate) fn render(&self, weight: Weight, overrides: bool) -> Object {
        let mut o = self.object.clone();
        let a = o.metadata.annotations.get_or_insert_with(BTreeMap::new);
        let mut put = |k: &str, v: String| {
            a.insert(format!("{PREFIX}{k}"), v);
        };
        put("canary", "true".to_string());
        put("canary-weight", weight.hundredths().to_string());
        put("canary-weight-total", "10000".to_string());
        if overrides {
            for r in &self.routes {
                match (&r.when, r.version) {
                    (Match::Header { name, value }, version) => {
                        put("canary-by-header", name.as_str().to_string());
                        if version == Version::Canary {
                            put("canary-by-header-value", header_text(value));
                        }
                    }
                    (Match::Cookie { name, .. }, _) => put("canary-by-cookie", name.clone()),
                }
            }
        }
        let name = o.metadata.name.clone().unwrap_or_default();
        Object {
            resource: ApiResource::erase::<Ingress>(&()),
            name,
            body: serde_json::to_value(&o).unwrap_or_default(),
        }
    }
}
