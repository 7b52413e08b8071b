//! The `traffic` section: provider, listen address, sticky key, routes and
//! the provider's own settings.

use std::net::SocketAddr;

use serde_saphyr::{Location, Spanned};
use serin_proxy::{Route, StickyKey, Version};

use super::kubernetes::Context;
use super::raw::{RawTraffic, RawVersion};
use super::{Checker, NginxSettings, Provider, Side, Traffic};

impl Checker {
    pub(super) fn traffic(
        &mut self,
        raw: Option<Spanned<RawTraffic>>,
        stable: &Side,
        canary: &Side,
        canary_version_at: &Location,
    ) -> Option<Traffic> {
        let (raw, at) = match raw {
            Some(t) => (t.value, t.referenced),
            None => (
                RawTraffic {
                    provider: None,
                    listen: None,
                    sticky: None,
                    routes: Vec::new(),
                    nginx: None,
                    kubernetes: None,
                },
                Location::UNKNOWN,
            ),
        };
        let provider = raw.provider.unwrap_or(Provider::Builtin);
        let mut ok = true;
        let listen = match &raw.listen {
            Some(l) => match l.value.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.at(
                        &l.referenced,
                        format!(
                            "traffic.listen: expected an address like 127.0.0.1:8080, got `{}`",
                            l.value
                        ),
                    );
                    ok = false;
                    None
                }
            },
            None => None,
        };
        // An upstream that is serin's own address sends the version's
        // requests back through the split: the "canary" would be judged on
        // the answers of whatever the split gave them to.
        if let (Some(addr), Some(l)) = (listen, &raw.listen) {
            for (side, which) in [(stable, "stable"), (canary, "canary")] {
                if let Some(u) = &side.upstream
                    && super::values::same_server(u, &format!("http://{addr}"))
                {
                    self.at(
                        &l.referenced,
                        format!(
                            "traffic.listen: expected an address other than the {which}'s upstream `{u}` (its requests would come back through serin's own split)"
                        ),
                    );
                    ok = false;
                }
            }
        }
        if matches!(provider, Provider::Builtin | Provider::Nginx) {
            if raw.listen.is_none() {
                self.at(
                    &at,
                    format!(
                        "traffic.listen: expected an address like 127.0.0.1:8080 (required by provider {})",
                        provider.as_str()
                    ),
                );
                ok = false;
            }
            for (side, which) in [(stable, "stable"), (canary, "canary")] {
                if side.upstream.is_none() {
                    self.at(
                        &at,
                        format!(
                            "{which}.upstream: expected http://host:port (required by provider {})",
                            provider.as_str()
                        ),
                    );
                    ok = false;
                }
            }
        }
        let sticky_at = raw.sticky.as_ref().map(|s| s.referenced);
        let sticky = match raw.sticky {
            Some(s) => {
                let key = match (&s.value.cookie, &s.value.header) {
                    (Some(c), None) => StickyKey::cookie(c).map_err(|e| e.to_string()),
                    (None, Some(h)) => StickyKey::header(h).map_err(|e| e.to_string()),
                    _ => Err("expected exactly one of cookie or header".to_string()),
                };
                match key {
                    Ok(k) => Some(k),
                    Err(e) => {
                        self.at(&s.referenced, format!("traffic.sticky: {e}"));
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        // Each route read, with its index in the file and its place.
        let mut located = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let version = match r.value.version {
                RawVersion::Stable => Version::Stable,
                RawVersion::Canary => Version::Canary,
            };
            let route = match (&r.value.when.header, &r.value.when.cookie) {
                (Some(h), None) => {
                    Route::header(&h.name, &h.value, version).map_err(|e| e.to_string())
                }
                (None, Some(c)) => {
                    Route::cookie(&c.name, &c.value, version).map_err(|e| e.to_string())
                }
                _ => Err("expected exactly one of header or cookie in match".to_string()),
            };
            match route {
                Ok(route) => located.push((i, r.referenced, route)),
                Err(e) => {
                    self.at(&r.referenced, format!("traffic.routes: {e}"));
                    ok = false;
                }
            }
        }
        let nginx = match (provider, raw.nginx) {
            // nginx appends JSON to the access log: where nginx reads
            // configuration (the include, any `*.conf`) it would break
            // every later `nginx -t`, every rollout's rollback included.
            (Provider::Nginx, Some(n))
                if n.access_log == n.include
                    || n.access_log.extension().is_some_and(|e| e == "conf") =>
            {
                self.at(
                    &at,
                    format!(
                        "traffic.nginx.accessLog: expected a log file of its own, not the include nor a `.conf` file nginx could read as configuration, got `{}`",
                        n.access_log.display()
                    ),
                );
                ok = false;
                None
            }
            (Provider::Nginx, Some(n)) => Some(NginxSettings {
                include: n.include,
                test: super::argv(n.test.as_deref().unwrap_or("nginx -t")),
                reload: super::argv(n.reload.as_deref().unwrap_or("nginx -s reload")),
                access_log: n.access_log,
            }),
            (Provider::Nginx, None) => {
                self.at(
                    &at,
                    "traffic.nginx: expected a section with include and accessLog (required by provider nginx)",
                );
                ok = false;
                None
            }
            (_, Some(_)) => {
                self.at(
                    &at,
                    format!(
                        "traffic.nginx: only used by provider nginx, not {}",
                        provider.as_str()
                    ),
                );
                ok = false;
                None
            }
            (_, None) => None,
        };
        let kubernetes = match (provider.kubernetes(), raw.kubernetes) {
            (Some(kube), Some(k)) => {
                let target = self.kubernetes(
                    k,
                    Context {
                        provider: kube,
                        traffic_at: &at,
                        canary,
                        canary_version_at,
                        sticky: sticky.as_ref().zip(sticky_at.as_ref()),
                        routes: &located,
                    },
                );
                ok &= target.is_some();
                target
            }
            (Some(_), None) => {
                self.at(
                    &at,
                    format!(
                        "traffic.kubernetes: expected a section with namespace and deployment (required by provider {})",
                        provider.as_str()
                    ),
                );
                ok = false;
                None
            }
            (None, Some(_)) => {
                self.at(
                    &at,
                    format!(
                        "traffic.kubernetes: only used by the Kubernetes providers, not {}",
                        provider.as_str()
                    ),
                );
                ok = false;
                None
            }
            (None, None) => None,
        };
        ok.then_some(Traffic {
            provider,
            listen,
            sticky,
            routes: located.into_iter().map(|(_, _, r)| r).collect(),
            nginx,
            kubernetes,
        })
    }
}
