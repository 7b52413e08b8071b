//! The `steps` section: weights in order, pauses, gates.

use serde_saphyr::{Location, Spanned};
use serin_proxy::Weight;

use super::raw::{RawPause, RawStep, RawUntil};
use super::{Checker, Step, default_steps};

impl Checker {
    pub(super) fn steps(
        &mut self,
        raw: Option<Spanned<Option<Vec<RawStep>>>>,
    ) -> Option<Vec<Step>> {
        let Some(raw) = raw else {
            return Some(default_steps());
        };
        let list = raw.value.unwrap_or_default();
        if list.is_empty() {
            self.at(
                &raw.referenced,
                "steps: expected at least one step (or leave steps out for 5, 25, 50, 100 % with 60 s pauses)",
            );
            return None;
        }
        let mut ok = true;
        let mut steps = Vec::new();
        // The weight in force before each step, and where it was set.
        let mut weight = Weight::ZERO;
        let mut last_set: Option<(Location, &'static str)> = None;
        let mut ever_above_zero = false;
        for step in list {
            match step {
                RawStep::SetWeight(w) => {
                    let new = w.value.0;
                    if new < weight {
                        self.at(
                            &w.referenced,
                            format!(
                                "setWeight: {new} lowers the canary weight from {weight} %, refused as a likely typo: expected a weight of at least {weight}, or `lowerWeight: {new}` to lower it on purpose"
                            ),
                        );
                        ok = false;
                    }
                    weight = new;
                    ever_above_zero |= new > Weight::ZERO;
                    last_set = Some((w.referenced, "setWeight"));
                    steps.push(Step::SetWeight(new));
                }
                RawStep::LowerWeight(w) => {
                    let new = w.value.0;
                    if new >= weight {
                        self.at(
                            &w.referenced,
                            format!(
                                "lowerWeight: {new} does not lower the canary weight ({weight} % before it): expected a weight below {weight}, or `setWeight: {new}`"
                            ),
                        );
                        ok = false;
                    }
                    weight = new;
                    last_set = Some((w.referenced, "lowerWeight"));
                    steps.push(Step::SetWeight(new));
                }
                RawStep::Pause(p) => {
                    let RawPause {
                        duration,
                        until,
                        url,
                        early,
                    } = p.value;
                    if early.is_some() && duration.is_none() {
                        self.at(
                            &p.referenced,
                            "pause.early: expected a duration with it, like {duration: 10m, early: true} (early success ends a timed pause sooner; a pause without a duration waits for its operator or gate)",
                        );
                        ok = false;
                    }
                    if early == Some(true) {
                        self.early_pauses.push(p.referenced);
                    }
                    let step = match (duration, until, url) {
                        (Some(d), None, None) => Some(Step::PauseFor {
                            duration: d.0,
                            early: early.unwrap_or(false),
                        }),
                        (None, None, None) | (None, Some(RawUntil::Promoted), None) => {
                            Some(Step::PauseUntilPromoted)
                        }
                        (None, Some(RawUntil::Webhook), Some(url)) => self
                            .http_url(&url, &p.referenced, "pause.url")
                            .map(Step::PauseUntilGate),
                        (None, Some(RawUntil::Webhook), None) => {
                            self.at(&p.referenced, "pause: `until: webhook` expects a url");
                            None
                        }
                        _ => {
                            self.at(
                                &p.referenced,
                                "pause: expected one of {duration: 60s}, {duration: 10m, early: true}, {} (wait for promote), or {until: webhook, url: http://…}",
                            );
                            None
                        }
                    };
                    match step {
                        Some(s) => steps.push(s),
                        None => ok = false,
                    }
                }
            }
        }
        // The end promotes the canary, which needs a passing verdict at a
        // weight above 0: a plan whose weight is 0 at the end can never earn it.
        if !ever_above_zero {
            self.at(
                &raw.referenced,
                "steps: expected a setWeight above 0 before the end (without canary traffic the plan can never be judged, and its end promotes the canary)",
            );
            ok = false;
        } else if weight == Weight::ZERO
            && let Some((at, key)) = last_set
        {
            self.at(
                &at,
                format!(
                    "{key}: 0 is the last weight: the end promotes the canary, which can never be judged at 0 %; expected a last weight above 0"
                ),
            );
            ok = false;
        }
        ok.then_some(steps)
    }
}
