//! `traffic.kubernetes`: what a Kubernetes provider rolls out where, checked
//! here with the rest of the file (object names, the routing object each
//! provider needs, the canary's image tag, what ingress-nginx can route), so
//! every problem comes with its line and column, all of them at once.
//! The result, [`KubeTarget`], is what the Kubernetes traffic router takes.

use serde_saphyr::{Location, Spanned};
use serin_proxy::{Match, Route, StickyKey, Version};

use super::raw::RawKubernetes;
use super::{Checker, Side};

/// Appended to the stable names for the objects serin owns.
pub const CANARY_SUFFIX: &str = "-canary";

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
    /// istio: the VirtualService, and the DestinationRule of the same name.
    pub virtual_service: Option<String>,
    /// gateway-api: the HTTPRoute.
    pub http_route: Option<String>,
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
                    Version::Stable => "never",
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
        let (field, value) = match cx.provider {
            KubeProvider::NginxIngress => ("ingress", &k.ingress),
            KubeProvider::Istio => ("virtualService", &k.virtual_service),
            KubeProvider::GatewayApi => ("httpRoute", &k.http_route),
        };
        match value {
            None => self.at(
                cx.traffic_at,
                format!(
                    "traffic.kubernetes.{field}: expected a name (required by provider {})",
                    cx.provider.as_str()
                ),
            ),
            Some(v) => {
                self.object_name(field, v, NameRule::Subdomain, 253 - CANARY_SUFFIX.len(), "");
            }
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
        let namespace = name(k.namespace)
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        Some(KubeTarget {
            provider: cx.provider,
            namespace,
            service: name(k.service).unwrap_or_else(|| deployment.value.clone()),
            deployment: deployment.value,
            ingress: name(k.ingress),
            virtual_service: name(k.virtual_service),
            http_route: name(k.http_route),
            scale_with_weight: k.scale_with_weight.unwrap_or(true),
            canary_version: cx.canary.version.clone(),
            canary_image: cx.canary.image.clone(),
            sticky: cx.sticky.map(|(s, _)| s.clone()),
            routes: cx.routes.iter().map(|(_, _, r)| r.clone()).collect(),
        })
    }
}
