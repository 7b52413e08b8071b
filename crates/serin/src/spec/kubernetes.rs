//! `traffic.kubernetes`: what a Kubernetes provider rolls out where, checked
//! here with the rest of the file (object names, the routing object each
//! provider needs, the canary's image tag, what ingress-nginx can route), so
//! every problem comes with its line and column, all of them at once.
//! The result, [`KubeTarget`], is what the Kubernetes traffic router takes.

use serde_saphyr::{Location, Spanned};
use serin_proxy::{Match, Route, StickyKey, Version};

use super::raw::{RawHttpRoute, RawKubernetes, RawRouteRef, RawVirtualService};
use super::{Checker, Side};

/// Appended to the stable names for the objects serin owns.
pub const CANARY_SUFFIX: &str = "-canary";
/// Appended to the stable names for the baseline's objects (`baseline: {}`).
pub const BASELINE_SUFFIX: &str = "-baseline";

/// Which Kubernetes traffic provider routes the canary's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeProvider {
    /// ingress-nginx: a canary Ingress with the `canary-*` annotations.
    NginxIngress,
    /// Istio: VirtualService weights to DestinationRule subsets.
    Istio,
    /// Gateway API: HTTPRoute backendRef weights.
    GatewayApi,
}

impl KubeProvider {
    /// The name used in rollout files (`traffic.provider`).
    pub fn as_str(self) -> &'static str {
        match self {
            KubeProvider::NginxIngress => "nginx-ingress",
            KubeProvider::Istio => "istio",
            KubeProvider::GatewayApi => "gateway-api",
        }
    }
}

/// What to roll out where: the rollout file's `traffic.kubernetes` section
/// with the canary's version and image, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeTarget {
    /// The traffic provider.
    pub provider: KubeProvider,
    /// Namespace of every object.
    pub namespace: String,
    /// The stable Deployment; serin manages `DEPLOYMENT-canary`.
    pub deployment: String,
    /// The stable Service; the canary's is `SERVICE-canary` (not for Istio).
    pub service: String,
    /// nginx-ingress: the primary Ingress; serin owns `INGRESS-canary`.
    pub ingress: Option<String>,
    /// istio: the VirtualService, and the DestinationRule of the same name
    /// (the rollout's name when serin owns the route).
    pub virtual_service: Option<String>,
    /// gateway-api: the HTTPRoute (the rollout's name when serin owns it).
    pub http_route: Option<String>,
    /// The route serin creates and owns whole (`httpRoute` / `virtualService`
    /// given as a mapping), named after the rollout; `None`: the route named
    /// above is the user's, and serin edits only its weights in place.
    /// (Boxed: a target is mostly names, this part is rare and larger.)
    pub owned_route: Option<Box<OwnedRoute>>,
    /// Canary replicas = ceil(stable × weight / 100), at least 1 above 0.
    pub scale_with_weight: bool,
    /// The canary's version (the image tag unless `canary_image` is given).
    pub canary_version: String,
    /// The canary's image (`canary.image`).
    pub canary_image: Option<String>,
    /// Sticky assignment; none of the Kubernetes providers can keep it, so
    /// a rollout file that asks for it is refused.
    pub sticky: Option<StickyKey>,
    /// A/B overrides, applied before the weight.
    pub routes: Vec<Route>,
    /// `baseline: {}` (Istio, Gateway API): serin runs `DEPLOYMENT-baseline`
    /// from the stable's running pod template and gives it the canary's
    /// share (see the Kubernetes router's module doc).
    pub baseline: bool,
}

/// A route serin creates and owns whole: what the rollout file says of it.
/// Everything else (the rules, the destinations) is serin's: all traffic
/// to the stable Service, the canary's share to the canary, the header
/// routes as rules of their own ahead of the weighted one.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedRoute {
    /// gateway-api: an HTTPRoute attached to `parent_refs`, for `hostnames`
    /// (none: every host name of the listeners).
    HttpRoute {
        parent_refs: Vec<ParentRef>,
        hostnames: Vec<String>,
        /// The Services' port (default: the stable Service's only port).
        port: Option<u16>,
    },
    /// istio: a VirtualService for `hosts`, through `gateways` (none: the
    /// mesh's sidecars only, Istio's own default).
    VirtualService {
        hosts: Vec<String>,
        gateways: Vec<String>,
        /// The Service's port (default: its only port).
        port: Option<u16>,
    },
}

/// A Gateway an owned HTTPRoute attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The Gateway's name.
    pub name: String,
    /// Its namespace (default: the route's).
    pub namespace: Option<String>,
    /// One of its listeners (default: all).
    pub section_name: Option<String>,
}

/// Whether `host` is a host name a route can answer for: a DNS name of
/// lowercase labels, optionally with `*.` in front; `*` alone when `star`.
fn valid_host(host: &str, star: bool) -> bool {
    if star && host == "*" {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    host.len() <= 253 && NameRule::Subdomain.accepts(name, 253)
}

/// Whether `gateway` names an Istio Gateway: `mesh`, or `[NAMESPACE/]NAME`.
fn valid_gateway(gateway: &str) -> bool {
    match gateway.split_once('/') {
        Some((ns, name)) => {
            NameRule::Label.accepts(ns, 63) && NameRule::Subdomain.accepts(name, 253)
        }
        None => NameRule::Subdomain.accepts(gateway, 253),
    }
}

/// Whether `tag` is a valid image tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub(super) fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The three ways Kubernetes spells an object's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameRule {
    /// An RFC 1123 label (namespaces, Deployments as serin uses them):
    /// lowercase letters, digits and `-`, a letter or digit at each end.
    Label,
    /// An RFC 1035 label (Services): a label that starts with a letter.
    ServiceLabel,
    /// A DNS subdomain (Ingresses, VirtualServices, HTTPRoutes): labels
    /// joined by `.`.
    Subdomain,
}

impl NameRule {
    pub(super) fn accepts(self, value: &str, max: usize) -> bool {
        let label = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        value.len() <= max
            && match self {
                NameRule::Label => label(value),
                NameRule::ServiceLabel => {
                    label(value) && value.starts_with(|c: char| c.is_ascii_lowercase())
                }
                NameRule::Subdomain => value.split('.').all(label),
            }
    }

    pub(super) fn expected(self, max: usize) -> String {
        match self {
            NameRule::Label => format!(
                "a name of lowercase letters, digits and `-` (a letter or digit at each end), at most {max} characters"
            ),
            NameRule::ServiceLabel => format!(
                "a Service name: lowercase letters, digits and `-`, starting with a letter and ending with a letter or digit, at most {max} characters"
            ),
            NameRule::Subdomain => format!(
                "a name of lowercase letters, digits, `-` and `.` (a letter or digit at each end of every part between dots), at most {max} characters"
            ),
        }
    }
}

/// The routes ingress-nginx cannot express, by their index in the file:
/// one header (to the canary when it has the given value; to stable only
/// with the value `never`) and one cookie name (value `always` to the
/// canary, `never` to stable).
pub(super) fn nginx_ingress_route_problems(routes: &[(usize, &Route)]) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    let mut header: Option<String> = None;
    let mut cookie: Option<String> = None;
    for &(i, r) in routes {
        let at = format!("traffic.routes[{i}]");
        match (&r.when, r.version) {
            (Match::Header { name, value }, version) => {
                if header.is_some() {
                    problems.push((
                        i,
                        format!(
                            "{at}: nginx-ingress takes one header route only (canary-by-header)"
                        ),
                    ));
                } else if version == Version::Stable && value.as_bytes() != b"never" {
                    problems.push((
                        i,
                        format!(
                            "{at}: nginx-ingress sends a header to stable only with the value `never`"
                        ),
                    ));
                } else {
                    header = Some(name.as_str().to_string());
                }
            }
            (Match::Cookie { name, value }, version) => {
                let want = match version {
                    Version::Canary => "always",
                    Version::Stable | Version::Baseline => "never",
                };
                if cookie.as_ref().is_some_and(|c| c != name) {
                    problems.push((
                        i,
                        format!(
                            "{at}: nginx-ingress takes one cookie name only (canary-by-cookie)"
                        ),
                    ));
                } else if value != want {
                    problems.push((
                        i,
                        format!(
                            "{at}: nginx-ingress sends cookie {name} to the {version} only with the value `{want}`"
                        ),
                    ));
                } else {
                    cookie = Some(name.clone());
                }
            }
        }
    }
    problems
}

/// What the section's checks need besides the section itself.
pub(super) struct Context<'a> {
    /// The provider, a Kubernetes one.
    pub provider: KubeProvider,
    /// Where `traffic` is (for what is missing from it).
    pub traffic_at: &'a Location,
    /// The canary, and where its version is written.
    pub canary: &'a Side,
    pub canary_version_at: &'a Location,
    /// The sticky key and where it is written.
    pub sticky: Option<(&'a StickyKey, &'a Location)>,
    /// The routes read, each with its index in the file and place.
    pub routes: &'a [(usize, Location, Route)],
}

impl Checker {
    /// A name field: reported where it is written when it cannot name an
    /// object. `why` says what makes the rule apply when it is not the
    /// field's own kind.
    fn object_name(
        &mut self,
        field: &str,
        value: &Spanned<String>,
        rule: NameRule,
        max: usize,
        why: &str,
    ) -> bool {
        if rule.accepts(&value.value, max) {
            return true;
        }
        self.at(
            &value.referenced,
            format!(
                "traffic.kubernetes.{field}: expected {}{why}, got `{}`",
                rule.expected(max),
                value.value
            ),
        );
        false
    }

    /// `traffic.kubernetes` for a Kubernetes provider: every problem
    /// recorded; the target when there is none.
    pub(super) fn kubernetes(
        &mut self,
        k: Spanned<RawKubernetes>,
        cx: Context<'_>,
    ) -> Option<KubeTarget> {
        let before = self.problems.len();
        let section_at = k.referenced;
        let k = k.value;
        let deployment = match &k.deployment {
            Some(d) => d.clone(),
            None => {
                self.at(
                    &section_at,
                    "traffic.kubernetes.deployment: expected the stable Deployment's name (serin manages DEPLOYMENT-canary beside it)",
                );
                Spanned {
                    value: String::new(),
                    referenced: section_at,
                    defined: section_at,
                }
            }
        };
        // Room for the `-canary` serin appends.
        let room = 63 - CANARY_SUFFIX.len();
        if let Some(ns) = &k.namespace {
            self.object_name("namespace", ns, NameRule::Label, 63, "");
        }
        match &k.service {
            Some(service) => {
                if k.deployment.is_some() {
                    self.object_name("deployment", &deployment, NameRule::Label, room, "");
                }
                self.object_name("service", service, NameRule::ServiceLabel, room, "");
            }
            // Left out, the Service is the Deployment's name.
            None if k.deployment.is_some() => {
                self.object_name(
                    "deployment",
                    &deployment,
                    NameRule::ServiceLabel,
                    room,
                    " (it names the Service too, as traffic.kubernetes.service is not given)",
                );
            }
            None => {}
        }
        let mut owned = None;
        let required = |field: &str| {
            format!(
                "traffic.kubernetes.{field}: expected a name (required by provider {})",
                cx.provider.as_str()
            )
        };
        let route_max = 253 - CANARY_SUFFIX.len();
        match cx.provider {
            KubeProvider::NginxIngress => match &k.ingress {
                None => self.at(cx.traffic_at, required("ingress")),
                Some(v) => {
                    self.object_name("ingress", v, NameRule::Subdomain, route_max, "");
                }
            },
            KubeProvider::GatewayApi => match &k.http_route {
                None => self.at(
                    cx.traffic_at,
                    format!(
                        "{}: the HTTPRoute serin edits, or {{parentRefs: [{{name: GATEWAY}}], hostnames: [...]}} for one serin creates and owns",
                        required("httpRoute")
                    ),
                ),
                Some(r) => match &r.value {
                    RawRouteRef::Name(n) => {
                        self.object_name(
                            "httpRoute",
                            &spanned(n, r),
                            NameRule::Subdomain,
                            route_max,
                            "",
                        );
                    }
                    RawRouteRef::Owned(m) => owned = self.owned_http_route(m, &r.referenced),
                },
            },
            KubeProvider::Istio => match &k.virtual_service {
                None => self.at(
                    cx.traffic_at,
                    format!(
                        "{}: the VirtualService serin edits, or {{hosts: [...], gateways: [...]}} for one serin creates and owns",
                        required("virtualService")
                    ),
                ),
                Some(r) => match &r.value {
                    RawRouteRef::Name(n) => {
                        self.object_name(
                            "virtualService",
                            &spanned(n, r),
                            NameRule::Subdomain,
                            route_max,
                            "",
                        );
                    }
                    RawRouteRef::Owned(m) => {
                        owned = self.owned_virtual_service(m, &r.referenced);
                    }
                },
            },
        }
        let version = &cx.canary.version;
        // An empty or unreadable version is reported with the canary.
        if cx.canary.image.is_none()
            && !version.trim().is_empty()
            && super::readable_label(version)
            && !valid_tag(version)
        {
            self.at(
                cx.canary_version_at,
                format!(
                    "canary.version: `{version}` cannot be an image tag (letters, digits, `_`, `.`, `-`, at most 128); give canary.image"
                ),
            );
        }
        if let Some((_, at)) = cx.sticky {
            self.at(
                at,
                format!(
                    "traffic.sticky: provider {} cannot keep a user on one version while the weight changes; remove it, or pin users with traffic.routes (see docs/kubernetes.md)",
                    cx.provider.as_str()
                ),
            );
        }
        if cx.provider == KubeProvider::NginxIngress {
            let indexed: Vec<(usize, &Route)> = cx.routes.iter().map(|(i, _, r)| (*i, r)).collect();
            for (i, message) in nginx_ingress_route_problems(&indexed) {
                let at = cx
                    .routes
                    .iter()
                    .find(|(j, _, _)| *j == i)
                    .map_or(Location::UNKNOWN, |(_, at, _)| *at);
                self.at(&at, message);
            }
        }
        if self.problems.len() > before {
            return None;
        }
        let name = |s: Option<Spanned<String>>| s.map(|s| s.value);
        // An owned route is named after the rollout (a name is always
        // there when nothing was refused).
        let virtual_service = route_name(k.virtual_service, self.rollout_name.as_ref());
        let http_route = route_name(k.http_route, self.rollout_name.as_ref());
        let namespace = name(k.namespace)
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        Some(KubeTarget {
            provider: cx.provider,
            namespace,
            service: name(k.service).unwrap_or_else(|| deployment.value.clone()),
            deployment: deployment.value,
            ingress: name(k.ingress),
            virtual_service,
            http_route,
            owned_route: owned.map(Box::new),
            scale_with_weight: k.scale_with_weight.unwrap_or(true),
            canary_version: cx.canary.version.clone(),
            canary_image: cx.canary.image.clone(),
            sticky: cx.sticky.map(|(s, _)| s.clone()),
            routes: cx.routes.iter().map(|(_, _, r)| r.clone()).collect(),
            // Set with the rollout's `baseline` section.
            baseline: false,
        })
    }
}

/// The name of the route a rollout uses: the one given, or the rollout's
/// for a route serin owns.
fn route_name<T>(r: Option<Spanned<RawRouteRef<T>>>, rollout: Option<&String>) -> Option<String> {
    match r.map(|r| r.value) {
        Some(RawRouteRef::Name(n)) => Some(n),
        Some(RawRouteRef::Owned(_)) => rollout.cloned(),
        None => None,
    }
}

/// A name written as a route reference, with the reference's place.
fn spanned<T>(name: &str, at: &Spanned<T>) -> Spanned<String> {
    Spanned {
        value: name.to_string(),
        referenced: at.referenced,
        defined: at.defined,
    }
}

impl Checker {
    /// The Services' port of an owned route.
    fn owned_port(&mut self, field: &str, port: Option<&Spanned<u32>>) -> Option<u16> {
        let p = port?;
        match u16::try_from(p.value) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.at(
                    &p.referenced,
                    format!(
                        "traffic.kubernetes.{field}.port: expected the Service's port, 1 to 65535, got {}",
                        p.value
                    ),
                );
                None
            }
        }
    }

    /// Host names of an owned route, each checked where it is written.
    fn owned_hosts(&mut self, field: &str, hosts: &[Spanned<String>], star: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            if valid_host(&h.value, star) {
                out.push(h.value.clone());
            } else {
                let star = if star { ", or * for all" } else { "" };
                self.at(
                    &h.referenced,
                    format!(
                        "traffic.kubernetes.{field}[{i}]: expected a host name like checkout.example.com (lowercase letters, digits, `-` and `.`, `*.` in front for a wildcard{star}), got `{}`",
                        h.value
                    ),
                );
            }
        }
        out
    }

    /// `httpRoute` as a mapping: the HTTPRoute serin creates and owns.
    fn owned_http_route(&mut self, m: &RawHttpRoute, at: &Location) -> Option<OwnedRoute> {
        let before = self.problems.len();
        let mut parent_refs = Vec::new();
        match &m.parent_refs {
            Some(list) if !list.value.is_empty() => {
                for (i, p) in list.value.iter().enumerate() {
                    let field = format!("httpRoute.parentRefs[{i}]");
                    let Some(name) = &p.value.name else {
                        self.at(
                            &p.referenced,
                            format!(
                                "traffic.kubernetes.{field}.name: expected the name of a Gateway the route attaches to"
                            ),
                        );
                        continue;
                    };
                    self.object_name(&format!("{field}.name"), name, NameRule::Subdomain, 253, "");
                    if let Some(ns) = &p.value.namespace {
                        self.object_name(&format!("{field}.namespace"), ns, NameRule::Label, 63, "");
                    }
                    if let Some(section) = &p.value.section_name {
                        self.object_name(
                            &format!("{field}.sectionName"),
                            section,
                            NameRule::Subdomain,
                            253,
                            " (a listener's name)",
                        );
                    }
                    parent_refs.push(ParentRef {
                        name: name.value.clone(),
                        namespace: p.value.namespace.as_ref().map(|n| n.value.clone()),
                        section_name: p.value.section_name.as_ref().map(|n| n.value.clone()),
                    });
                }
            }
            other => self.at(
                other.as_ref().map_or(at, |l| &l.referenced),
                "traffic.kubernetes.httpRoute.parentRefs: expected at least one Gateway the route serin creates attaches to, like [{name: shop-gateway}]",
            ),
        }
        let hostnames = self.owned_hosts("httpRoute.hostnames", &m.hostnames, false);
        let port = self.owned_port("httpRoute", m.port.as_ref());
        (self.problems.len() == before).then_some(OwnedRoute::HttpRoute {
            parent_refs,
            hostnames,
            port,
        })
    }

    /// `virtualService` as a mapping: the VirtualService serin creates and
    /// owns.
    fn owned_virtual_service(
        &mut self,
        m: &RawVirtualService,
        at: &Location,
    ) -> Option<OwnedRoute> {
        let before = self.problems.len();
        let hosts = match &m.hosts {
            Some(list) if !list.value.is_empty() => {
                self.owned_hosts("virtualService.hosts", &list.value, true)
            }
            other => {
                self.at(
                    other.as_ref().map_or(at, |l| &l.referenced),
                    "traffic.kubernetes.virtualService.hosts: expected at least one host the VirtualService serin creates answers for, like [checkout.example.com] (through a gateway) or [checkout] (in the mesh)",
                );
                Vec::new()
            }
        };
        let mut gateways = Vec::new();
        for (i, g) in m.gateways.iter().enumerate() {
            if valid_gateway(&g.value) {
                gateways.push(g.value.clone());
            } else {
                self.at(
                    &g.referenced,
                    format!(
                        "traffic.kubernetes.virtualService.gateways[{i}]: expected an Istio Gateway as NAME or NAMESPACE/NAME (lowercase letters, digits, `-` and `.`), or mesh, got `{}`",
                        g.value
                    ),
                );
            }
        }
        let port = self.owned_port("virtualService", m.port.as_ref());
        (self.problems.len() == before).then_some(OwnedRoute::VirtualService {
            hosts,
            gateways,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(provider: &str, route: &str) -> String {
        format!(
            "name: shop-checkout
stable: {{version: v1.1.0}}
canary: {{version: v1.2.0}}
traffic:
  provider: {provider}
  kubernetes:
    namespace: shop
    deployment: checkout
{route}analysis:
  prometheus: {{address: http://prometheus:9090}}
"
        )
    }

    fn problems(text: &str) -> Vec<String> {
        match super::super::parse(text, "r.yaml") {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_route_map_is_a_route_serin_owns_named_after_the_rollout() {
        let text = file(
            "gateway-api",
            "    httpRoute:\n      parentRefs: [{name: shop-gateway, namespace: infra, sectionName: https}]\n      hostnames: [checkout.example.com, \"*.shop.example.com\"]\n      port: 8080\n",
        );
        let r = super::super::parse(&text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
        let t = r.traffic.kubernetes.unwrap();
        assert_eq!(t.http_route.as_deref(), Some("shop-checkout"));
        assert_eq!(
            t.owned_route.map(|o| *o),
            Some(OwnedRoute::HttpRoute {
                parent_refs: vec![ParentRef {
                    name: "shop-gateway".into(),
                    namespace: Some("infra".into()),
                    section_name: Some("https".into()),
                }],
                hostnames: vec!["checkout.example.com".into(), "*.shop.example.com".into()],
                port: Some(8080),
            })
        );
        let text = file(
            "istio",
            "    virtualService: {hosts: [checkout.example.com], gateways: [istio-system/public, mesh]}\n",
        );
        let t = super::super::parse(&text, "r.yaml")
            .unwrap_or_else(|e| panic!("{e}"))
            .traffic
            .kubernetes
            .unwrap();
        assert_eq!(t.virtual_service.as_deref(), Some("shop-checkout"));
        assert_eq!(
            t.owned_route.map(|o| *o),
            Some(OwnedRoute::VirtualService {
                hosts: vec!["checkout.example.com".into()],
                gateways: vec!["istio-system/public".into(), "mesh".into()],
                port: None,
            })
        );
        // A name is the user's route, as before.
        let text = file("gateway-api", "    httpRoute: checkout\n");
        let t = super::super::parse(&text, "r.yaml")
            .unwrap()
            .traffic
            .kubernetes
            .unwrap();
        assert_eq!(t.http_route.as_deref(), Some("checkout"));
        assert_eq!(t.owned_route, None);
    }

    #[test]
    fn each_problem_of_a_route_map_is_told_at_its_place() {
        let text = file(
            "gateway-api",
            concat!(
                "    httpRoute:\n",
                "      parentRefs:\n",
                "        - {namespace: infra}\n",
                "        - {name: Shop_Gateway, sectionName: \"-x\"}\n",
                "      hostnames: [Checkout.example.com]\n",
                "      port: 70000\n",
            ),
        );
        assert_eq!(
            problems(&text),
            vec![
                "r.yaml:11:11: traffic.kubernetes.httpRoute.parentRefs[0].name: expected the name of a Gateway the route attaches to".to_string(),
                format!("r.yaml:12:18: traffic.kubernetes.httpRoute.parentRefs[1].name: expected {}, got `Shop_Gateway`", NameRule::Subdomain.expected(253)),
                format!("r.yaml:12:45: traffic.kubernetes.httpRoute.parentRefs[1].sectionName: expected {} (a listener's name), got `-x`", NameRule::Subdomain.expected(253)),
                "r.yaml:13:19: traffic.kubernetes.httpRoute.hostnames[0]: expected a host name like checkout.example.com (lowercase letters, digits, `-` and `.`, `*.` in front for a wildcard), got `Checkout.example.com`".to_string(),
                "r.yaml:14:13: traffic.kubernetes.httpRoute.port: expected the Service's port, 1 to 65535, got 70000".to_string(),
            ]
        );
        let p = problems(&file(
            "gateway-api",
            "    httpRoute: {hostnames: [a.example.com]}\n",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("r.yaml:9:16: traffic.kubernetes.httpRoute.parentRefs: expected at least one Gateway"),
            "{p:?}"
        );
        let p = problems(&file(
            "istio",
            "    virtualService: {gateways: [a/b/c], hosts: []}\n",
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("r.yaml:9:33: traffic.kubernetes.virtualService.gateways[0]: expected an Istio Gateway"), "{p:?}");
        assert!(
            p[1].starts_with(
                "r.yaml:9:48: traffic.kubernetes.virtualService.hosts: expected at least one host"
            ),
            "{p:?}"
        );
        // Unknown keys are refused where they are written, as elsewhere.
        let p = problems(&file(
            "gateway-api",
            "    httpRoute:\n      parentRefs: [{name: gw}]\n      hostname: [a.example.com]\n",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("r.yaml:11:7: unknown field `hostname`"),
            "{p:?}"
        );
        let p = problems(&file(
            "gateway-api",
            "    httpRoute: {parentRefs: [{name: gw, kind: Service}]}\n",
        ));
        assert!(p[0].contains("unknown field `kind`"), "{p:?}");
        let p = problems(&file("gateway-api", "    httpRoute: 7\n"));
        assert!(
            p[0].contains("the route's name, or a mapping for a route serin owns"),
            "{p:?}"
        );
    }

    #[test]
    fn from_the_api_server_each_problem_names_its_field() {
        let spec = json!({
            "stable": {"version": "v1"},
            "canary": {"version": "v2"},
            "traffic": {"provider": "gateway-api", "kubernetes": {
                "deployment": "checkout",
                "httpRoute": {"parentRefs": [{"name": "Bad"}], "hostnames": ["ok.example.com", "x_y"]},
            }},
            "analysis": {"prometheus": {"address": "http://prometheus:9090"}},
        });
        let e = super::super::check_resource("checkout", "shop", &spec).unwrap_err();
        let m: Vec<String> = e.problems.into_iter().map(|p| p.message).collect();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].starts_with(
                "spec.traffic.kubernetes.httpRoute.hostnames[1]: expected a host name"
            ),
            "{m:?}"
        );
        assert!(
            m[1].starts_with(
                "spec.traffic.kubernetes.httpRoute.parentRefs[0].name: expected a name"
            ),
            "{m:?}"
        );
        let mut unknown = spec.clone();
        unknown["traffic"]["kubernetes"]["httpRoute"] =
            json!({"parentRefs": [{"name": "gw", "port": 80}]});
        let e = super::super::check_resource("checkout", "shop", &unknown).unwrap_err();
        assert!(
            e.problems[0].message.starts_with(
                "spec.traffic.kubernetes.httpRoute.parentRefs[0].port: unknown field `port`"
            ),
            "{e}"
        );
        let mut good = spec;
        good["traffic"]["kubernetes"]["httpRoute"] = json!({"parentRefs": [{"name": "gw"}]});
        let r = super::super::check_resource("checkout", "shop", &good).unwrap();
        let t = r.traffic.kubernetes.unwrap();
        assert_eq!(t.http_route.as_deref(), Some("checkout"));
        assert!(t.owned_route.is_some());
    }
}
