//! The live analysis: a metric source read every interval, judged by
//! `serin-analysis`. This is the driver's [`Analysis`] seam made real.
//!
//! A source that fails is *no data* (counts towards `noDataLimit`), never a
//! pass. Counters that go backwards (a restarted upstream, a replaced
//! Prometheus) restart the judge's baseline from the new numbers, and that
//! interval is no data too. Implausible numbers (`serin_analysis::bounds`)
//! are no data as well, and left out: the next sound interval is judged
//! from the last sound numbers.

use serin_analysis::{Config, Histogram, Judge, Observation};
use serin_proxy::Weight;

use crate::controller::driver::{Analysed, Analysis, BoxFuture};
use crate::controller::machine::Verdict;
use crate::providers::metrics::{MetricSource, Snapshot, Totals};

/// A source's totals, its 4xx counts (stable, canary) if it has them, and
/// its custom metrics' counts, as the judge's observation taken `at`
/// seconds (any fixed origin).
pub fn observation(
    s: &Snapshot,
    client_errors: Option<(u64, u64)>,
    at: Option<f64>,
) -> Observation {
    let side = |t: &Totals, c: Option<u64>| serin_analysis::Totals {
        requests: t.requests,
        errors: t.errors,
        client_errors: c,
        latency: (!t.le_ms.is_empty()).then(|| Histogram {
            le_ms: t.le_ms.clone(),
            counts: t.counts.clone(),
        }),
    };
    Observation {
        stable: side(&s.stable, client_errors.map(|c| c.0)),
        canary: side(&s.canary, client_errors.map(|c| c.1)),
        custom: s.custom.clone(),
        at,
    }
}

/// Judges a metric source's numbers every interval.
pub struct LiveAnalysis {
    source: Box<dyn MetricSource>,
    judge: Judge,
    /// The last snapshot the judge took as its base, for interval numbers
    /// and baselines.
    last: Option<Snapshot>,
    /// The snapshot the judge last refused as implausible, if the one after
    /// it has not been judged yet: when the judge goes on from it (the
    /// counters moved for good), the interval's numbers start there too.
    refused: Option<Snapshot>,
    /// The clock observations are timed by.
    started: std::time::Instant,
}

impl LiveAnalysis {
    /// An analysis of `source` with `config` (already validated by the rollout file).
    pub fn new(
        source: Box<dyn MetricSource>,
        config: Config,
    ) -> Result<LiveAnalysis, serin_analysis::ConfigError> {
        Ok(LiveAnalysis {
            source,
            judge: Judge::new(config)?,
            last: None,
            refused: None,
            started: std::time::Instant::now(),
        })
    }

    /// A snapshot and the judge's observation of it, timed.
    async fn read(&mut self) -> Result<(Snapshot, Observation), String> {
        let s = self.source.snapshot().await?;
        let at = self.started.elapsed().as_secs_f64();
        let o = observation(&s, self.source.client_errors(), Some(at));
        Ok((s, o))
    }
}

impl Analysis for LiveAnalysis {
    fn begin_stage(&mut self, weight: Weight) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.judge.set_canary_weight(weight.percent());
            self.refused = None;
            match self.read().await {
                Ok((s, o)) => {
                    // A refused (implausible) start leaves the base where it was.
                    if self.judge.begin_stage(&o) {
                        self.last = Some(s);
                    }
                }
                Err(e) => {
                    // The stage starts from the last numbers seen; without
                    // any, from zero.
                    tracing::warn!("metrics at the start of a stage: {e}");
                    self.judge.begin_stage_unread();
                }
            }
        })
    }

    fn analyse(&mut self, end_of_pause: bool) -> BoxFuture<'_, Analysed> {
        Box::pin(async move {
            let (now, current) = match self.read().await {
                Ok(x) => x,
                Err(e) => {
                    return Analysed {
                        verdict: Verdict::NoData,
                        reason: format!("no data: {e}"),
                        sample: None,
                    };
                }
            };
            let since = |before: &Snapshot| {
                Some((
                    now.stable.since(&before.stable)?,
                    now.canary.since(&before.canary)?,
                ))
            };
            let interval = self.last.as_ref().and_then(since);
            let backwards = self.last.is_some() && interval.is_none();
            if backwards {
                // A counter went backwards: start over from these numbers.
                self.refused = None;
                if self.judge.begin_stage(&current) {
                    self.last = Some(now);
                }
                return Analysed {
                    verdict: Verdict::NoData,
                    reason: "no data: counters went backwards (an upstream or the metric source restarted); judging restarts from here".into(),
                    sample: None,
                };
            }
            let judged = self.judge.observe(&current, end_of_pause);
            if judged.skipped {
                // Implausible: left out, the last sound numbers stay the base.
                self.refused = Some(now);
                return Analysed {
                    verdict: judged.verdict,
                    reason: judged.reason,
                    sample: None,
                };
            }
            // The interval's own numbers, from where the judge took them
            // (never across a refused spike); none before a first baseline.
            let refused = self.refused.take();
            let sample = match (judged.from_refused, &refused) {
                (true, Some(r)) => since(r),
                _ => interval,
            };
            self.last = Some(now);
            Analysed {
                verdict: judged.verdict,
                reason: judged.reason,
                sample,
            }
        })
    }
}

/// An analysis that cannot judge (its configuration was refused): every
/// interval is no data, so the rollout rolls back rather than promote blind.
pub struct Refusing(pub String);

impl Analysis for Refusing {
    fn begin_stage(&mut self, _weight: Weight) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn analyse(&mut self, _end_of_pause: bool) -> BoxFuture<'_, Analysed> {
        let reason = format!("no data: the analysis cannot run: {}", self.0);
        Box::pin(async move {
            Analysed {
                verdict: Verdict::NoData,
                reason,
                sample: None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_analysis::{CustomMetric, Direction, Limit, Ratio};
    use std::collections::VecDeque;

    /// Hands out prepared snapshots, one per read.
    struct Scripted(VecDeque<Result<Snapshot, String>>);

    impl MetricSource for Scripted {
        fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, String>> {
            let next = self
                .0
                .pop_front()
                .unwrap_or_else(|| Err("script ended".into()));
            Box::pin(async move { next })
        }
    }

    /// Both versions with `n` requests and no errors, and the conversion
    /// counters (numerator, denominator) of each.
    fn at(n_s: u64, n_c: u64, stable: (u64, u64), canary: (u64, u64)) -> Snapshot {
        let t = |n| Totals {
            requests: n,
            ..Totals::default()
        };
        let r = |(numerator, denominator)| Ratio {
            numerator,
            denominator,
        };
        Snapshot {
            stable: t(n_s),
            canary: t(n_c),
            custom: vec![(r(stable), r(canary))],
        }
    }

    fn config(direction: Direction) -> Config {
        Config {
            min_requests: 100,
            error_rate: Limit::NONE,
            latency_p95: Limit::NONE,
            custom: vec![CustomMetric {
                name: "checkout conversion".into(),
                direction,
                max_ratio_to_stable: Some(1.0),
            }],
            ..Config::default()
        }
    }

    /// Runs `snapshots` (the first is the stage's start) and returns the
    /// last verdict with its reason.
    async fn judge(direction: Direction, snapshots: Vec<Snapshot>) -> Analysed {
        let mut a = LiveAnalysis::new(
            Box::new(Scripted(snapshots.into_iter().map(Ok).collect())),
            config(direction),
        )
        .unwrap();
        a.begin_stage(Weight::from_percent(50.0).unwrap()).await;
        let mut last = None;
        while let Some(x) = {
            let r = a.analyse(false).await;
            (!r.reason.contains("script ended")).then_some(r)
        } {
            last = Some(x);
        }
        last.unwrap()
    }

    /// Conversion 10 % on stable; the canary at `canary_pct` %, over
    /// `intervals` intervals of 2 000 visits per version.
    fn conversions(canary_pct: u64, intervals: u64) -> Vec<Snapshot> {
        (0..=intervals)
            .map(|i| {
                let v = 2000 * i;
                at(v, v, (v / 10, v), (v * canary_pct / 100, v))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_canary_that_converts_less_fails_on_its_custom_metric() {
        let a = judge(Direction::HigherIsBetter, conversions(5, 4)).await;
        assert_eq!(a.verdict, Verdict::Fail, "{}", a.reason);
        assert!(
            a.reason.contains("checkout conversion") && a.reason.contains("lower than stable"),
            "{}",
            a.reason
        );
    }

    #[tokio::test]
    async fn the_same_conversion_passes_and_direction_matters() {
        let same = judge(Direction::HigherIsBetter, conversions(10, 4)).await;
        assert_eq!(same.verdict, Verdict::Pass, "{}", same.reason);
        // A canary that converts more is better when higher is better...
        let more = judge(Direction::HigherIsBetter, conversions(20, 4)).await;
        assert_eq!(more.verdict, Verdict::Pass, "{}", more.reason);
        // ...and worse when the ratio counts something bad (abandonments).
        let worse = judge(Direction::LowerIsBetter, conversions(20, 4)).await;
        assert_eq!(worse.verdict, Verdict::Fail, "{}", worse.reason);
    }

    /// A canary request counter 10^12 higher for two readings (a spike
    /// Prometheus answered twice) is refused, then judged from where it
    /// moved to: the interval's numbers, kept in the history, never hold
    /// the spike.
    #[tokio::test]
    async fn a_spike_never_enters_the_interval_numbers() {
        let t = |requests, errors| Totals {
            requests,
            errors,
            ..Totals::default()
        };
        let s = |stable, (canary, errors)| Snapshot {
            stable: t(stable, 0),
            canary: t(canary, errors),
            custom: Vec::new(),
        };
        const JUMP: u64 = 1_000_000_000_000;
        let script = [
            s(1000, (100, 30)),
            s(1200, (JUMP + 200, 60)),
            s(1400, (JUMP + 300, 90)),
        ];
        let mut a = LiveAnalysis::new(
            Box::new(Scripted(script.into_iter().map(Ok).collect())),
            Config {
                min_requests: 20,
                latency_p95: Limit::NONE,
                ..Config::default()
            },
        )
        .unwrap();
        a.begin_stage(Weight::from_percent(30.0).unwrap()).await;
        let spike = a.analyse(false).await;
        assert_eq!(spike.verdict, Verdict::NoData, "{}", spike.reason);
        assert!(
            spike.reason.contains("canary requests rose by"),
            "{}",
            spike.reason
        );
        assert_eq!(spike.sample, None);
        let moved = a.analyse(false).await;
        let (stable, canary) = moved.sample.expect("a judged interval has numbers");
        assert_eq!(
            (stable.requests, canary.requests, canary.errors),
            (200, 100, 30),
            "the interval from the refused reading: {}",
            moved.reason
        );
    }

    /// A step that begins on a spike begins from the numbers before it, in
    /// the judge and in the interval numbers alike: the spike's end is no
    /// counter going backwards.
    #[tokio::test]
    async fn a_step_that_begins_on_a_spike_begins_from_before_it() {
        let t = |requests, errors| Totals {
            requests,
            errors,
            ..Totals::default()
        };
        let s = |stable, (canary, errors)| Snapshot {
            stable: t(stable, 0),
            canary: t(canary, errors),
            custom: Vec::new(),
        };
        let script = [
            s(1000, (100, 30)),
            s(1200, (200, 60)),
            s(1400, (1_000_000_000_000 + 300, 90)),
            s(1600, (400, 120)),
        ];
        let mut a = LiveAnalysis::new(
            Box::new(Scripted(script.into_iter().map(Ok).collect())),
            Config {
                min_requests: 20,
                latency_p95: Limit::NONE,
                ..Config::default()
            },
        )
        .unwrap();
        a.begin_stage(Weight::from_percent(30.0).unwrap()).await;
        a.analyse(false).await;
        a.begin_stage(Weight::from_percent(60.0).unwrap()).await;
        let after = a.analyse(false).await;
        assert!(!after.reason.contains("backwards"), "{}", after.reason);
        let (stable, canary) = after.sample.expect("a judged interval has numbers");
        assert_eq!(
            (stable.requests, canary.requests, canary.errors),
            (400, 200, 60),
            "the interval from the last sound reading: {}",
            after.reason
        );
    }

    #[tokio::test]
    async fn a_source_without_custom_values_is_no_data_for_a_custom_metric() {
        let mut snapshots = conversions(10, 3);
        for s in &mut snapshots {
            s.custom.clear();
        }
        let a = judge(Direction::HigherIsBetter, snapshots).await;
        assert_eq!(a.verdict, Verdict::NoData, "{}", a.reason);
        assert!(a.reason.starts_with("no data:"), "{}", a.reason);
    }
}
