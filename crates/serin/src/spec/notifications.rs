//! `notifications` and `preRollout`: webhooks, each an http(s) URL.

use serde_saphyr::Location;

use super::Checker;
use super::raw::{RawFormat, RawNotification};
use crate::notify;

impl Checker {
    /// The webhooks told of phase changes; a bad URL is reported and left out.
    pub(super) fn notifications(&mut self, raw: Vec<RawNotification>) -> Vec<notify::Target> {
        raw.into_iter()
            .filter_map(|n| {
                let url = self.http_url(
                    &n.webhook.value,
                    &n.webhook.referenced,
                    "notifications[].webhook",
                )?;
                Some(notify::Target {
                    url,
                    format: match n.format {
                        Some(RawFormat::Slack) => notify::Format::Slack,
                        _ => notify::Format::Json,
                    },
                })
            })
            .collect()
    }

    pub(super) fn http_url(&mut self, url: &str, at: &Location, field: &str) -> Option<String> {
        let v = url.trim();
        if v.starts_with("http://") || v.starts_with("https://") {
            Some(v.to_string())
        } else {
            self.at(
                at,
                format!("{field}: expected an http:// or https:// URL, got `{url}`"),
            );
            None
        }
    }
}
