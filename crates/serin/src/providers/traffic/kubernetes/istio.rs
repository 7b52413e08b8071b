//! Istio: VirtualService route weights to the DestinationRule subsets
//! `stable` and `canary`.
//!
//! Both versions sit behind the one stable Service; the subsets tell them
//! apart by the pods' `version` label: `stable` selects the value the stable
//! pods already carry (serin requires one, and never relabels the user's
//! pods, which would restart them), `canary` selects `version: canary`.
//! Every VirtualService HTTP route that sends to the stable Service gets
//! destinations `stable` and `canary` with the split, and, ahead of it,
//! serin's `routes` as routes named `serin-…` with the same matches plus a
//! header match (a cookie as a regex on the `cookie` header). Istio takes
//! the first matching route, so the overrides win. Istio weights are whole
//! percents: a weight is rounded to the nearest one, and a weight strictly
//! between 0 and 100 stays strictly between (0.5 % is 1 %, 99.5 % is 99 %).
//!
//! With a baseline (`baseline: {}`) the DestinationRule has a third subset,
//! `baseline` (`version: baseline`, the pods of `NAME-baseline`), and the
//! weighted route a third destination with the baseline's share: canary
//! `c` (whole percents, as above), baseline `min(c, 100 − c)`, stable the
//! rest (10 %: 80/10/10; 60 %: 0/60/40).
//!
//! A VirtualService serin owns (`virtualService` given as a mapping) is not
//! read: serin writes the whole object, named after the rollout, from the
//! mapping (hosts, gateways) and one HTTP route to the stable Service, split
//! and preceded by the header routes as above; the DestinationRule of the
//! same name, with the subsets, is serin's too.

use k8s_openapi::api::apps::v1::Deployment;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use serin_proxy::{Route, Version, Weight};

use super::deployments::Labels;
use super::gateway_api::check_ours;
use super::{
    BASELINE_TRACK, CANARY_TRACK, MANAGED_BY, Object, OwnedRoute, TRACK_LABEL, cookie_regex,
    header_text,
};

/// The prefix of the names of the VirtualService routes serin adds.
pub(crate) const ROUTE_PREFIX: &str = "serin-";

/// `networking.istio.io/v1` `VirtualService` (Istio 1.22 and later).
pub(crate) fn virtual_service() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ))
}

/// `networking.istio.io/v1` `DestinationRule`.
pub(crate) fn destination_rule() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "DestinationRule",
    ))
}

/// The canary's whole percent for Istio; see the module doc.
pub(crate) fn whole_percent(weight: Weight) -> i64 {
    match weight.hundredths() {
        0 => 0,
        10_000 => 100,
        h => i64::from((h + 50) / 100).clamp(1, 99),
    }
}

/// What serin writes into the VirtualService and its DestinationRule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IstioPlan {
    namespace: String,
    name: String,
    service: String,
    /// The HTTP routes without serin's own.
    http: Vec<Value>,
    stable_version: String,
    dr_host: String,
    /// Subsets of the DestinationRule other than `stable` and `canary`.
    other_subsets: Vec<Value>,
    routes: Vec<Route>,
    /// A VirtualService serin owns: the rest of its spec (hosts, gateways).
    owned: Option<Value>,
    /// The subset `baseline` gets the baseline's share.
    baseline: bool,
}

impl IstioPlan {
    /// Reads the live VirtualService and DestinationRule.
    pub(crate) fn new(
        namespace: &str,
        live: &Value,
        dr: Option<&Value>,
        stable: &Deployment,
        selector: &Labels,
        service: &str,
        routes: &[Route],
    ) -> Result<IstioPlan, String> {
        let name = live["metadata"]["name"].as_str().unwrap_or_default();
        let deployment = stable.metadata.name.as_deref().unwrap_or_default();
        if selector.contains_key(TRACK_LABEL) {
            return Err(format!(
                "Service {namespace}/{service} selects on `{TRACK_LABEL}`; with Istio the canary pods must be behind the stable Service, so its selector cannot include `{TRACK_LABEL}`"
            ));
        }
        let stable_version = stable
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(TRACK_LABEL))
            .filter(|v| v.as_str() != CANARY_TRACK)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "Deployment {namespace}/{deployment}: its pods need a `{TRACK_LABEL}` label other than `{CANARY_TRACK}` for the DestinationRule subset `stable` (add e.g. `{TRACK_LABEL}: stable` to spec.template.metadata.labels)"
                )
            })?;
        let what = format!("VirtualService {namespace}/{name}");
        let mut http = Vec::new();
        for r in live["spec"]["http"].as_array().cloned().unwrap_or_default() {
            let ours = r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(ROUTE_PREFIX));
            if ours {
                continue;
            }
            let dests = r["route"].as_array().cloned().unwrap_or_default();
            let to_service = dests
                .iter()
                .filter(|d| is_service(&d["destination"]["host"], service, namespace))
                .count();
            if to_service > 0 && to_service != dests.len() {
                let label = r["name"].as_str().unwrap_or("(unnamed)");
                return Err(format!(
                    "{what}: HTTP route {label} sends to {service} and to other hosts; serin splits only routes that send to {service} alone"
                ));
            }
            http.push(r);
        }
        if !http.iter().any(|r| targets(r, service, namespace)) {
            return Err(format!(
                "{what} has no HTTP route to host {service} (traffic.kubernetes.service)"
            ));
        }
        let dr_host = dr
            .and_then(|d| d["spec"]["host"].as_str())
            .unwrap_or(service)
            .to_string();
        let other_subsets = dr
            .and_then(|d| d["spec"]["subsets"].as_array())
            .map(|subsets| {
                subsets
                    .iter()
                    .filter(|s| !matches!(s["name"].as_str(), Some("stable" | "canary")))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(IstioPlan {
            namespace: namespace.to_string(),
            name: name.to_string(),
            service: service.to_string(),
            http,
            stable_version,
            dr_host,
            other_subsets,
            routes: routes.to_vec(),
            owned: None,
            baseline: false,
        })
    }

    /// The same plan with the subset `baseline` (see the module doc); the
    /// stable pods' `version` must tell them from the baseline's.
    pub(crate) fn with_baseline(mut self, deployment: &str) -> Result<IstioPlan, String> {
        if self.stable_version == BASELINE_TRACK {
            return Err(format!(
                "Deployment {}/{deployment}: its pods' `{TRACK_LABEL}: {BASELINE_TRACK}` is the baseline's; give the stable pods another `{TRACK_LABEL}` for the DestinationRule subset `stable`",
                self.namespace
            ));
        }
        self.other_subsets
            .retain(|s| s["name"].as_str() != Some("baseline"));
        self.baseline = true;
        Ok(self)
    }

    /// The VirtualService `name` serin creates and owns, from the rollout
    /// file's mapping, with its DestinationRule; `live_vs` and `dr` are the
    /// objects of that name if there are any, which must be serin's
    /// (labelled [`MANAGED_BY`]). `port` is the Service's port.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn owned(
        namespace: &str,
        name: &str,
        spec: &OwnedRoute,
        live_vs: Option<&Value>,
        dr: Option<&Value>,
        stable: &Deployment,
        selector: &Labels,
        service: &str,
        port: i32,
        routes: &[Route],
    ) -> Result<IstioPlan, String> {
        let OwnedRoute::VirtualService {
            hosts, gateways, ..
        } = spec
        else {
            return Err(format!(
                "VirtualService {namespace}/{name}: the rollout describes an HTTPRoute, not a VirtualService"
            ));
        };
        if let Some(live) = live_vs {
            check_ours(
                live,
                &format!("VirtualService {namespace}/{name}"),
                "virtualService",
            )?;
        }
        if let Some(dr) = dr {
            check_ours(
                dr,
                &format!("DestinationRule {namespace}/{name}"),
                "virtualService",
            )?;
        }
        let wanted = json!({
            "metadata": { "name": name },
            "spec": { "http": [{
                "name": "primary",
                "route": [{ "destination": { "host": service, "port": { "number": port } } }],
            }] },
        });
        let mut plan = IstioPlan::new(namespace, &wanted, dr, stable, selector, service, routes)?;
        let mut rest = json!({ "hosts": hosts });
        if !gateways.is_empty() {
            rest["gateways"] = json!(gateways);
        }
        plan.owned = Some(rest);
        Ok(plan)
    }

    /// The labels of the objects serin owns whole, set on `body`.
    fn label_owned(&self, body: &mut Value) {
        if self.owned.is_some() {
            body["metadata"]["labels"] = json!({ MANAGED_BY.0: MANAGED_BY.1 });
        }
    }

    /// The DestinationRule (same name as the VirtualService) with the subsets.
    pub(crate) fn destination_rule(&self) -> Object {
        let mut subsets = self.other_subsets.clone();
        subsets.push(json!({ "name": "stable", "labels": { TRACK_LABEL: self.stable_version } }));
        subsets.push(json!({ "name": "canary", "labels": { TRACK_LABEL: CANARY_TRACK } }));
        if self.baseline {
            subsets.push(json!({ "name": "baseline", "labels": { TRACK_LABEL: BASELINE_TRACK } }));
        }
        let mut body = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "spec": { "host": self.dr_host, "subsets": subsets },
        });
        self.label_owned(&mut body);
        Object {
            resource: destination_rule(),
            name: self.name.clone(),
            body,
        }
    }

    /// The VirtualService as serin applies it: `spec.http` only.
    pub(crate) fn render(&self, weight: Weight, overrides: bool) -> Object {
        let canary = whole_percent(weight);
        let mut http = Vec::new();
        for (i, r) in self.http.iter().enumerate() {
            if !targets(r, &self.service, &self.namespace) {
                http.push(r.clone());
                continue;
            }
            let first = r["route"][0]["destination"].clone();
            let dest = |subset: &str| {
                let mut d = first.clone();
                d["subset"] = json!(subset);
                d
            };
            if overrides {
                for (j, route) in self.routes.iter().enumerate() {
                    let cond = match &route.when {
                        serin_proxy::Match::Header { name, value } => (
                            name.as_str().to_string(),
                            json!({ "exact": header_text(value) }),
                        ),
                        serin_proxy::Match::Cookie { name, value } => (
                            "cookie".to_string(),
                            json!({ "regex": cookie_regex(name, value) }),
                        ),
                    };
                    let matches: Vec<Value> = match r["match"].as_array() {
                        Some(ms) if !ms.is_empty() => ms
                            .iter()
                            .map(|m| {
                                let mut m = m.clone();
                                m["headers"][&cond.0] = cond.1.clone();
                                m
                            })
                            .collect(),
                        _ => vec![json!({ "headers": { cond.0.clone(): cond.1.clone() } })],
                    };
                    let mut extra = r.clone();
                    let subset = match route.version {
                        Version::Stable | Version::Baseline => "stable",
                        Version::Canary => "canary",
                    };
                    extra["name"] = json!(format!("{ROUTE_PREFIX}{i}-{j}"));
                    extra["match"] = Value::Array(matches);
                    extra["route"] = json!([{ "destination": dest(subset), "weight": 100 }]);
                    http.push(extra);
                }
            }
            let mut weighted = r.clone();
            weighted["route"] = if self.baseline {
                let baseline = canary.min(100 - canary);
                json!([
                    { "destination": dest("stable"), "weight": 100 - canary - baseline },
                    { "destination": dest("canary"), "weight": canary },
                    { "destination": dest("baseline"), "weight": baseline },
                ])
            } else {
                json!([
                    { "destination": dest("stable"), "weight": 100 - canary },
                    { "destination": dest("canary"), "weight": canary },
                ])
            };
            http.push(weighted);
        }
        let mut body = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "spec": { "http": http },
        });
        self.label_owned(&mut body);
        if let (Some(spec), Some(rest)) = (
            body["spec"].as_object_mut(),
            self.owned.as_ref().and_then(Value::as_object),
        ) {
            for (k, v) in rest {
                spec.insert(k.clone(), v.clone());
            }
        }
        Object {
            resource: virtual_service(),
            name: self.name.clone(),
            body,
        }
    }
}

/// Whether `host` names Service `service` in `namespace`.
fn is_service(host: &Value, service: &str, namespace: &str) -> bool {
    let Some(h) = host.as_str() else {
        return false;
    };
    let short = format!("{service}.{namespace}");
    h == service
        || h == short
        || h.strip_prefix(&short)
            .is_some_and(|rest| rest.starts_with(".svc"))
}

fn targets(r: &Value, service: &str, namespace: &str) -> bool {
    r["route"].as_array().is_some_and(|ds| {
        ds.iter()
            .any(|d| is_service(&d["destination"]["host"], service, namespace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_percents_never_hide_a_canary() {
        let w = |h| whole_percent(Weight::from_hundredths(h).unwrap());
        assert_eq!(w(0), 0);
        assert_eq!(w(1), 1);
        assert_eq!(w(50), 1);
        assert_eq!(w(525), 5);
        assert_eq!(w(550), 6);
        assert_eq!(w(2500), 25);
        assert_eq!(w(9950), 99);
        assert_eq!(w(9999), 99);
        assert_eq!(w(10_000), 100);
    }

    #[test]
    fn hosts_match_short_and_full_names() {
        for h in [
            "checkout",
            "checkout.shop",
            "checkout.shop.svc",
            "checkout.shop.svc.cluster.local",
        ] {
            assert!(is_service(&json!(h), "checkout", "shop"), "{h}");
        }
        for h in ["checkout2", "checkout.other", "checkout.shopx.svc"] {
            assert!(!is_service(&json!(h), "checkout", "shop"), "{h}");
        }
    }
}

#[cfg(test)]
mod owned_tests {
    use super::*;

    fn stable() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "checkout"}},
                     "template": {"metadata": {"labels": {"app": "checkout", "version": "stable"}}}},
        }))
        .unwrap()
    }

    fn owned_spec() -> OwnedRoute {
        OwnedRoute::VirtualService {
            hosts: vec!["checkout.example.com".into()],
            gateways: vec!["istio-system/public".into()],
            port: None,
        }
    }

    fn plan(live: Option<&Value>, dr: Option<&Value>) -> Result<IstioPlan, String> {
        let selector: Labels = [("app".to_string(), "checkout".to_string())]
            .into_iter()
            .collect();
        let route = Route {
            when: serin_proxy::Match::Header {
                name: http::HeaderName::from_static("x-canary"),
                value: http::HeaderValue::from_static("always"),
            },
            version: Version::Canary,
        };
        IstioPlan::owned(
            "shop",
            "checkout",
            &owned_spec(),
            live,
            dr,
            &stable(),
            &selector,
            "checkout",
            80,
            &[route],
        )
    }

    #[test]
    fn an_owned_virtual_service_and_its_rule_are_written_whole() {
        let p = plan(None, None).unwrap();
        let dest =
            |subset: &str| json!({"host": "checkout", "port": {"number": 80}, "subset": subset});
        assert_eq!(
            p.render(Weight::from_hundredths(2000).unwrap(), true).body,
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "checkout", "namespace": "shop",
                             "labels": {"app.kubernetes.io/managed-by": "serin"}},
                "spec": {
                    "hosts": ["checkout.example.com"],
                    "gateways": ["istio-system/public"],
                    "http": [
                        {"name": "serin-0-0",
                         "match": [{"headers": {"x-canary": {"exact": "always"}}}],
                         "route": [{"destination": dest("canary"), "weight": 100}]},
                        {"name": "primary",
                         "route": [{"destination": dest("stable"), "weight": 80},
                                   {"destination": dest("canary"), "weight": 20}]},
                    ],
                },
            })
        );
        assert_eq!(
            p.destination_rule().body,
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "checkout", "namespace": "shop",
                             "labels": {"app.kubernetes.io/managed-by": "serin"}},
                "spec": {"host": "checkout", "subsets": [
                    {"name": "stable", "labels": {"version": "stable"}},
                    {"name": "canary", "labels": {"version": "canary"}},
                ]},
            })
        );
    }

    #[test]
    fn objects_of_that_name_serin_did_not_make_are_refused() {
        let theirs = json!({"metadata": {"name": "checkout"}});
        let e = plan(None, Some(&theirs)).unwrap_err();
        assert!(
            e.starts_with("DestinationRule shop/checkout exists and was not created by serin"),
            "{e}"
        );
        let e = plan(Some(&theirs), None).unwrap_err();
        assert!(
            e.starts_with("VirtualService shop/checkout exists and was not created by serin"),
            "{e}"
        );
    }
}
