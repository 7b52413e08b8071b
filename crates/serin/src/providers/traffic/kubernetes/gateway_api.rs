//! Gateway API: the weights of an HTTPRoute's backendRefs.
//!
//! Every rule of the route that sends to the stable Service gets a second
//! backendRef, the canary Service, and the pair's weights are the split in
//! hundredths of a percent (`10000 − w` and `w`): Gateway API weights are
//! proportional integers, so 5.25 % is exact. serin's `routes` become extra
//! rules ahead of each such rule, with the same matches plus a header match
//! (a cookie is matched as a regular expression on the `Cookie` header,
//! which is Gateway API's "implementation-specific" support level). Header
//! matches are more specific, so they win over the weighted rule whatever
//! the order, by Gateway API's precedence rules.
//!
//! With a baseline (`baseline: {}`) each such rule gets a third
//! backendRef, the Service `SERVICE-baseline`, with the baseline's share:
//! canary `w`, baseline `min(w, 10000 − w)`, stable the rest (hundredths).
//!
//! A route serin owns (`httpRoute` given as a mapping) is not read: serin
//! writes the whole HTTPRoute, named after the rollout, from the mapping
//! (parentRefs, hostnames) and one rule to the stable Service, which gets
//! the canary's backendRef and the header rules as above. Applying it whole
//! each time, as its only field manager, leaves nothing for a GitOps tool
//! to conflict on.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use serin_proxy::{Route, Version, Weight};

use super::{MANAGED_BY, Object, OwnedRoute, cookie_regex, header_text};

/// `gateway.networking.k8s.io/v1` `HTTPRoute`.
pub(crate) fn resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

/// What serin writes into one HTTPRoute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoutePlan {
    namespace: String,
    name: String,
    stable: String,
    canary: String,
    /// The route's rules without serin's own header rules and canary refs.
    rules: Vec<Value>,
    routes: Vec<Route>,
    /// A route serin owns: the rest of its spec (parentRefs, hostnames).
    owned: Option<Value>,
    /// The baseline's Service (`SERVICE-baseline`), when there is one.
    baseline: Option<String>,
}

/// The header match for one of serin's routes.
fn header_match(route: &Route) -> Value {
    match &route.when {
        serin_proxy::Match::Header { name, value } => {
            json!({ "type": "Exact", "name": name.as_str(), "value": header_text(value) })
        }
        serin_proxy::Match::Cookie { name, value } => json!({
            "type": "RegularExpression",
            "name": "Cookie",
            "value": cookie_regex(name, value),
        }),
    }
}

fn ref_name(r: &Value) -> Option<&str> {
    // A backendRef to another kind (or another namespace's Service) is not ours.
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or("Service");
    let group = r.get("group").and_then(Value::as_str).unwrap_or("");
    if kind != "Service" || !group.is_empty() {
        return None;
    }
    r.get("name").and_then(Value::as_str)
}

impl RoutePlan {
    /// Reads the live HTTPRoute `live` (its JSON).
    pub(crate) fn new(
        namespace: &str,
        live: &Value,
        stable: &str,
        routes: &[Route],
    ) -> Result<RoutePlan, String> {
        let name = live["metadata"]["name"].as_str().unwrap_or_default();
        let canary = format!("{stable}{}", super::CANARY_SUFFIX);
        let baseline = format!("{stable}{}", super::BASELINE_SUFFIX);
        let what = format!("HTTPRoute {namespace}/{name}");
        let ours: Vec<Value> = routes.iter().map(header_match).collect();
        let rules = live["spec"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut kept = Vec::new();
        for mut rule in rules {
            let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
            let only_ours =
                refs.len() == 1 && ref_name(&refs[0]).is_some_and(|n| n == stable || n == canary);
            let matches = rule["matches"].as_array().cloned().unwrap_or_default();
            let serin_rule = only_ours
                && !ours.is_empty()
                && !matches.is_empty()
                && matches.iter().all(|m| {
                    m["headers"]
                        .as_array()
                        .is_some_and(|hs| hs.iter().any(|h| ours.contains(h)))
                });
            if serin_rule {
                continue;
            }
            if let Some(list) = rule["backendRefs"].as_array_mut() {
                list.retain(|r| {
                    ref_name(r) != Some(canary.as_str()) && ref_name(r) != Some(baseline.as_str())
                });
            }
            kept.push(rule);
        }
        if !kept.iter().any(|r| targets(r, stable)) {
            return Err(format!(
                "{what} has no rule with a backendRef to Service {stable} (traffic.kubernetes.service)"
            ));
        }
        Ok(RoutePlan {
            namespace: namespace.to_string(),
            name: name.to_string(),
            stable: stable.to_string(),
            canary,
            rules: kept,
            routes: routes.to_vec(),
            owned: None,
            baseline: None,
        })
    }

    /// The HTTPRoute `name` serin creates and owns, from the rollout file's
    /// mapping; `live` is the object of that name if there is one, which
    /// must be serin's (labelled [`MANAGED_BY`]): serin never takes over a
    /// route someone else made. `port` is the Services' port.
    pub(crate) fn owned(
        namespace: &str,
        name: &str,
        spec: &OwnedRoute,
        live: Option<&Value>,
        stable: &str,
        port: i32,
        routes: &[Route],
    ) -> Result<RoutePlan, String> {
        let OwnedRoute::HttpRoute {
            parent_refs,
            hostnames,
            ..
        } = spec
        else {
            return Err(format!(
                "HTTPRoute {namespace}/{name}: the rollout describes a VirtualService, not an HTTPRoute"
            ));
        };
        if let Some(live) = live {
            check_ours(live, &format!("HTTPRoute {namespace}/{name}"), "httpRoute")?;
        }
        let parents: Vec<Value> = parent_refs
            .iter()
            .map(|p| {
                let mut r = json!({ "name": p.name });
                if let Some(ns) = &p.namespace {
                    r["namespace"] = json!(ns);
                }
                if let Some(s) = &p.section_name {
                    r["sectionName"] = json!(s);
                }
                r
            })
            .collect();
        let mut rest = json!({ "parentRefs": parents });
        if !hostnames.is_empty() {
            rest["hostnames"] = json!(hostnames);
        }
        Ok(RoutePlan {
            namespace: namespace.to_string(),
            name: name.to_string(),
            stable: stable.to_string(),
            canary: format!("{stable}{}", super::CANARY_SUFFIX),
            rules: vec![json!({ "backendRefs": [{ "name": stable, "port": port }] })],
            routes: routes.to_vec(),
            owned: Some(rest),
            baseline: None,
        })
    }

    /// The same plan with the baseline's backendRef (see the module doc).
    pub(crate) fn with_baseline(mut self) -> RoutePlan {
        self.baseline = Some(format!("{}{}", self.stable, super::BASELINE_SUFFIX));
        self
    }

    /// The HTTPRoute as serin applies it: `spec.rules` only.
    pub(crate) fn render(&self, weight: Weight, overrides: bool) -> Object {
        let h = i64::from(weight.hundredths());
        let mut rules = Vec::new();
        for rule in &self.rules {
            if !targets(rule, &self.stable) {
                rules.push(rule.clone());
                continue;
            }
            let stable_ref = rule["backendRefs"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| ref_name(r) == Some(&self.stable)))
                .cloned()
                .unwrap_or_else(|| json!({ "name": self.stable }));
            let to = |version: Version, weight: Option<i64>| {
                let mut r = stable_ref.clone();
                match (version, &self.baseline) {
                    (Version::Canary, _) => r["name"] = json!(self.canary),
                    (Version::Baseline, Some(b)) => r["name"] = json!(b),
                    _ => {}
                }
                match weight {
                    Some(w) => r["weight"] = json!(w),
                    None => {
                        if let Some(o) = r.as_object_mut() {
                            o.remove("weight");
                        }
                    }
                }
                r
            };
            if overrides {
                for route in &self.routes {
                    let mut extra = rule.clone();
                    if let Some(o) = extra.as_object_mut() {
                        o.remove("name");
                    }
                    let cond = header_match(route);
                    let matches = match rule["matches"].as_array() {
                        Some(ms) if !ms.is_empty() => ms
                            .iter()
                            .map(|m| {
                                let mut m = m.clone();
                                let mut hs = m["headers"].as_array().cloned().unwrap_or_default();
                                hs.push(cond.clone());
                                m["headers"] = Value::Array(hs);
                                m
                            })
                            .collect(),
                        _ => vec![json!({ "headers": [cond] })],
                    };
                    extra["matches"] = Value::Array(matches);
                    extra["backendRefs"] = json!([to(route.version, None)]);
                    rules.push(extra);
                }
            }
            let mut weighted = rule.clone();
            let mut refs = Vec::new();
            for r in rule["backendRefs"].as_array().cloned().unwrap_or_default() {
                if ref_name(&r) == Some(&self.stable) {
                    let b = if self.baseline.is_some() {
                        h.min(10_000 - h)
                    } else {
                        0
                    };
                    refs.push(to(Version::Stable, Some(10_000 - h - b)));
                    refs.push(to(Version::Canary, Some(h)));
                    if self.baseline.is_some() {
                        refs.push(to(Version::Baseline, Some(b)));
                    }
                } else {
                    refs.push(r);
                }
            }
            weighted["backendRefs"] = Value::Array(refs);
            rules.push(weighted);
        }
        let mut body = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "spec": { "rules": rules },
        });
        if let Some(rest) = &self.owned {
            body["metadata"]["labels"] = json!({ MANAGED_BY.0: MANAGED_BY.1 });
            if let (Some(spec), Some(rest)) = (body["spec"].as_object_mut(), rest.as_object()) {
                for (k, v) in rest {
                    spec.insert(k.clone(), v.clone());
                }
            }
        }
        Object {
            resource: resource(),
            name: self.name.clone(),
            body,
        }
    }
}

/// A route of the name serin would create that serin did not create: it
/// is refused, never taken over.
pub(crate) fn check_ours(live: &Value, what: &str, field: &str) -> Result<(), String> {
    if live["metadata"]["labels"][MANAGED_BY.0].as_str() == Some(MANAGED_BY.1) {
        return Ok(());
    }
    Err(format!(
        "{what} exists and was not created by serin (no label {}={}); serin creates the route it owns under the rollout's name and never takes over another: give traffic.kubernetes.{field} that route's name to have serin edit its weights, or remove or rename it",
        MANAGED_BY.0, MANAGED_BY.1
    ))
}

/// Whether `rule` sends to Service `stable`.
fn targets(rule: &Value, stable: &str) -> bool {
    rule["backendRefs"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| ref_name(r) == Some(stable)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ParentRef;

    fn owned_spec() -> OwnedRoute {
        OwnedRoute::HttpRoute {
            parent_refs: vec![ParentRef {
                name: "shop-gateway".into(),
                namespace: Some("infra".into()),
                section_name: None,
            }],
            hostnames: vec!["checkout.example.com".into()],
            port: None,
        }
    }

    fn header_route() -> Route {
        Route {
            when: serin_proxy::Match::Header {
                name: http::HeaderName::from_static("x-canary"),
                value: http::HeaderValue::from_static("always"),
            },
            version: Version::Canary,
        }
    }

    #[test]
    fn an_owned_route_is_written_whole_with_the_header_rule_ahead() {
        let plan = RoutePlan::owned(
            "shop",
            "checkout",
            &owned_spec(),
            None,
            "checkout",
            80,
            &[header_route()],
        )
        .unwrap();
        let o = plan.render(Weight::from_hundredths(2500).unwrap(), true);
        assert_eq!(o.name, "checkout");
        assert_eq!(
            o.body,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "checkout", "namespace": "shop",
                             "labels": {"app.kubernetes.io/managed-by": "serin"}},
                "spec": {
                    "parentRefs": [{"name": "shop-gateway", "namespace": "infra"}],
                    "hostnames": ["checkout.example.com"],
                    "rules": [
                        {"matches": [{"headers": [{"type": "Exact", "name": "x-canary", "value": "always"}]}],
                         "backendRefs": [{"name": "checkout-canary", "port": 80}]},
                        {"backendRefs": [{"name": "checkout", "port": 80, "weight": 7500},
                                         {"name": "checkout-canary", "port": 80, "weight": 2500}]},
                    ],
                },
            })
        );
        // Retired: all to stable, no header rule; the route stays.
        let o = plan.render(Weight::ZERO, false);
        assert_eq!(
            o.body["spec"]["rules"],
            json!([{"backendRefs": [{"name": "checkout", "port": 80, "weight": 10000},
                                    {"name": "checkout-canary", "port": 80, "weight": 0}]}])
        );
        assert_eq!(o.body["spec"]["parentRefs"][0]["name"], "shop-gateway");
    }

    #[test]
    fn an_owned_route_never_takes_over_a_route_serin_did_not_make() {
        let theirs = json!({"metadata": {"name": "checkout", "labels": {"app": "checkout"}}});
        let e = RoutePlan::owned(
            "shop",
            "checkout",
            &owned_spec(),
            Some(&theirs),
            "checkout",
            80,
            &[],
        )
        .unwrap_err();
        assert!(
            e.starts_with("HTTPRoute shop/checkout exists and was not created by serin"),
            "{e}"
        );
        let ours = json!({"metadata": {"name": "checkout",
                                       "labels": {"app.kubernetes.io/managed-by": "serin"}}});
        assert!(
            RoutePlan::owned(
                "shop",
                "checkout",
                &owned_spec(),
                Some(&ours),
                "checkout",
                80,
                &[]
            )
            .is_ok()
        );
    }
}
