//! The live analysis: a metric source read every interval, judged by
//! `serin-analysis`. This is the driver's [`Analysis`] seam made real.
//!
//! A source that fails is *no data* (counts towards `noDataLimit`), never a
//! pass. Counters that go backwards (a restarted upstream, a replaced
//! Prometheus) restart the judge's baseline from the new numbers, and that
//! interval is no data too. Implausible numbers (`serin_analysis::bounds`)
//! are no data as well, and left out: the next sound interval is judged
//! from the last sound numbers.

use serin_analysis::{Config, Histogram, Judge, Observation, Totals};
use serin_proxy::Weight;

use crate::controller::seams::{
    Analysed, Analysis, BoxFuture, IntervalSample, MetricSource, Snapshot, Unanswered,
};
use crate::error::Error;
use crate::rollout::Verdict;
use crate::store::VersionSample;

/// The numbers of the interval between `before` and `now`: request and
/// error deltas, and quantiles of the latency bucket deltas. `None` where
/// counters went backwards or the buckets changed (the caller decides what
/// that means; the judge reports it).
pub fn interval(now: &Totals, before: &Totals) -> Option<VersionSample> {
    let requests = now.requests.checked_sub(before.requests)?;
    let errors = now.errors.checked_sub(before.errors)?;
    let none = Histogram::default();
    let (n, b) = (
        now.latency.as_ref().unwrap_or(&none),
        before.latency.as_ref().unwrap_or(&none),
    );
    let counts: Vec<u64> = if b.counts.is_empty() && before.requests == 0 {
        n.counts.clone()
    } else if b.le_ms == n.le_ms {
        n.counts
            .iter()
            .zip(&b.counts)
            .map(|(a, b)| a.checked_sub(*b))
            .collect::<Option<_>>()?
    } else {
        return None;
    };
    let deltas = Histogram {
        le_ms: n.le_ms.clone(),
        counts,
    };
    // Interpolated within a bucket: to the microsecond, not to the last bit
    // of a float (a report's JSON said 12.345000000000001).
    let q = |p: f64| {
        deltas
            .quantile(requests, p)
            .map(|ms| (ms * 1000.0).round() / 1000.0)
    };
    Some(VersionSample {
        requests,
        errors,
        p50_ms: q(0.50),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
    })
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
    /// The base a new stage replaced before an interval was judged from
    /// it: the next interval's numbers start there, so the requests between
    /// the last interval and the step change are in a sample too (a report
    /// lost a whole interval at every step change).
    sample_from: Option<Snapshot>,
    /// The clock observations are timed by.
    started: std::time::Instant,
    /// While canary requests are in flight: the canary's request count when
    /// one was last seen answered (or the first reading with some in
    /// flight), and when.
    canary_answered: Option<(u64, std::time::Instant)>,
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
            sample_from: None,
            started: std::time::Instant::now(),
            canary_answered: None,
        })
    }

    /// With sticky sessions the split is per client: the split check
    /// allows the observed share to stray further from the weight.
    pub fn with_sticky_split(mut self, sticky: bool) -> LiveAnalysis {
        self.judge.set_split_tolerance(sticky);
        self
    }

    /// The canary requests held open at `now`, if its source can tell: how
    /// many, and how long none of them has been answered (counted from the
    /// first reading that saw them, so never more than the truth).
    fn unanswered(&mut self, now: &Snapshot) -> Option<Unanswered> {
        let in_flight = now.canary_in_flight?;
        let requests = now.canary.requests;
        let at = std::time::Instant::now();
        let since = match self.canary_answered {
            _ if in_flight == 0 => None,
            Some((n, since)) if n == requests => Some(since),
            _ => Some(at),
        };
        self.canary_answered = since.map(|t| (requests, t));
        Some(Unanswered {
            in_flight,
            silent_ms: since.map_or(0, |t| {
                u64::try_from(at.duration_since(t).as_millis()).unwrap_or(u64::MAX)
            }),
        })
    }

    /// A snapshot and the judge's observation of it, timed.
    async fn read(&mut self) -> Result<(Snapshot, Observation), Error> {
        let s = self.source.snapshot().await?;
        let at = self.started.elapsed().as_secs_f64();
        let mut o = s.observation(Some(at));
        o.routed = s.routed;
        // With a fresh baseline the observation carries it beside the
        // stable: the judge compares the canary with it (a source without
        // its numbers yet gives nothing to compare with, never the
        // stable's) and checks it against the stable.
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
                        let before = self.last.replace(s);
                        if self.sample_from.is_none() {
                            self.sample_from = before;
                        }
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
                    return Analysed::without_judgement(Verdict::NoData, format!("no data: {e}"));
                }
            };
            let unanswered = self.unanswered(&now);
            let since = |before: &Snapshot| {
                Some(IntervalSample {
                    canary_unanswered: unanswered,
                    stable: interval(&now.stable, &before.stable)?,
                    canary: interval(&now.canary, &before.canary)?,
                    // The baseline's own, like the others'; a baseline
                    // that went backwards has none (the judge's two
                    // versions decide whether the interval counts).
                    baseline: match (&now.baseline, &before.baseline) {
                        (Some(n), Some(b)) => interval(n, b),
                        (Some(n), None) => interval(n, &Totals::default()),
                        (None, _) => None,
                    },
                })
            };
            let interval = self.last.as_ref().and_then(since);
            let backwards = self.last.is_some() && interval.is_none();
            if backwards {
                // A counter went backwards: start over from these numbers.
                self.refused = None;
                self.sample_from = None;
                if self.judge.begin_stage(&current) {
                    self.last = Some(now);
                }
                return Analysed::without_judgement(
                    Verdict::NoData,
                    "no data: counters went backwards (an upstream or the metric source restarted); judging restarts from here".into(),
                );
            }
            let judged = self.judge.observe(&current, end_of_pause);
            if judged.skipped {
                // Implausible: left out, the last sound numbers stay the base.
                self.refused = Some(now);
                return Analysed::without_judgement(judged.verdict, judged.reason);
            }
            // The interval's own numbers, from where the judge took them
            // (never across a refused spike); none before a first baseline.
            let refused = self.refused.take();
            let sample = match (judged.from_refused, &refused) {
                (true, Some(r)) => since(r),
                _ => match self.sample_from.take() {
                    Some(from) => since(&from).or(interval),
                    None => interval,
                },
            };
            self.last = Some(now);
            Analysed {
                verdict: judged.verdict,
                reason: judged.reason,
                sample,
                canary_requests: Some(judged.stage_canary_requests),
                would_fail: judged.would_fail,
                within_limits: judged.within_limits,
                split: judged.split.map(|s| crate::rollout::SplitSeen {
                    mismatch: s.mismatch,
                    reason: s.reason,
                    requested: s.requested,
                    observed: s.observed,
                }),
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
        Box::pin(async move { Analysed::without_judgement(Verdict::NoData, reason) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_analysis::{CustomMetric, Direction, Limit, Ratio};
    use std::collections::VecDeque;

    /// Hands out prepared snapshots, one per read.
    struct Scripted(VecDeque<Result<Snapshot, Error>>);

    impl MetricSource for Scripted {
        fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>> {
            let next = self
                .0
                .pop_front()
                .unwrap_or_else(|| Err(Error::unavailable("script ended")));
            Box::pin(async move { next })
        }
    }

    #[test]
    fn interval_numbers_come_from_deltas() {
        let le = vec![10.0, 20.0, 40.0];
        let with = |requests, errors, counts: Vec<u64>| Totals {
            requests,
            errors,
            latency: Some(Histogram {
                le_ms: le.clone(),
                counts,
            }),
            ..Totals::default()
        };
        let a = with(100, 1, vec![50, 90, 100]);
        let b = with(200, 11, vec![60, 180, 200]);
        let s = interval(&b, &a).unwrap();
        assert_eq!((s.requests, s.errors), (100, 10));
        // Deltas: 10 at <=10, 80 in (10,20], 10 in (20,40]. Median rank 50:
        // in the second bucket, (50-10)/80 of the way from 10 to 20.
        assert!((s.p50_ms.unwrap() - 15.0).abs() < 1e-9);
        assert!((s.p95_ms.unwrap() - 30.0).abs() < 1e-9);
        // Interpolation to the microsecond: rank 2 of 4 is a third of the
        // way through (10,20], 13.333333333333334 ms unrounded.
        let thirds = interval(&with(4, 0, vec![1, 4, 4]), &Totals::default()).unwrap();
        assert_eq!(thirds.p50_ms, Some(13.333));
        let backwards = Totals {
            requests: 50,
            ..b.clone()
        };
        assert!(interval(&backwards, &b).is_none());
        // From nothing: the buckets as they are; other buckets: no interval.
        let first = interval(&a, &Totals::default()).unwrap();
        assert_eq!(first.requests, 100);
        let rebucketed = Totals {
            latency: Some(Histogram {
                le_ms: vec![5.0],
                counts: vec![250],
            }),
            ..with(250, 11, vec![])
        };
        assert!(interval(&rebucketed, &b).is_none());
    }

    #[test]
    fn quantiles_of_an_interval_edges() {
        let h = |le_ms: &[f64], counts: &[u64]| Histogram {
            le_ms: le_ms.to_vec(),
            counts: counts.to_vec(),
        };
        assert_eq!(h(&[1.0], &[0]).quantile(0, 0.5), None);
        assert_eq!(
            h(&[1.0, 2.0], &[0, 0]).quantile(10, 0.5),
            Some(2.0),
            "all beyond the last bound"
        );
        assert_eq!(h(&[1.0, 2.0], &[10, 10]).quantile(10, 0.99), Some(0.99));
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
            ..Snapshot::default()
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

    /// Stable's requests, and the canary's (requests, errors).
    fn s(stable: u64, (canary, errors): (u64, u64)) -> Snapshot {
        let t = |requests, errors| Totals {
            requests,
            errors,
            ..Totals::default()
        };
        Snapshot {
            stable: t(stable, 0),
            canary: t(canary, errors),
            custom: Vec::new(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn requests_held_open_are_timed_from_the_first_reading_that_saw_them() {
        let mut a =
            LiveAnalysis::new(Box::new(Scripted(VecDeque::new())), Config::default()).unwrap();
        let held = |canary, in_flight: Option<u64>| Snapshot {
            canary_in_flight: in_flight,
            ..s(100, (canary, 0))
        };
        // A source that cannot tell says nothing.
        assert_eq!(a.unanswered(&held(5, None)), None);
        // Nothing in flight: no silence to time.
        let none = a.unanswered(&held(5, Some(0))).unwrap();
        assert_eq!((none.in_flight, none.silent_ms), (0, 0));
        assert!(a.canary_answered.is_none());
        // First seen in flight: timed from here, 0 so far.
        let first = a.unanswered(&held(5, Some(37))).unwrap();
        assert_eq!((first.in_flight, first.silent_ms), (37, 0));
        let since = a.canary_answered.expect("timed").1;
        // None answered since: still timed from the first reading.
        let still = a.unanswered(&held(5, Some(40))).unwrap();
        assert_eq!(still.in_flight, 40);
        assert_eq!(a.canary_answered, Some((5, since)));
        // One answered: timed again from this reading.
        a.unanswered(&held(6, Some(40))).unwrap();
        let (n, again) = a.canary_answered.expect("timed");
        assert!(n == 6 && again >= since);
        assert!(a.unanswered(&held(6, Some(0))).is_some());
        assert!(a.canary_answered.is_none());
    }

    /// A canary request counter 10^12 higher for two readings (a spike
    /// Prometheus answered twice) is refused, then judged from where it
    /// moved to: the interval's numbers, kept in the history, never hold
    /// the spike.
    #[tokio::test]
    async fn a_spike_never_enters_the_interval_numbers() {
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
        let IntervalSample { stable, canary, .. } =
            moved.sample.expect("a judged interval has numbers");
        assert_eq!(
            (stable.requests, canary.requests, canary.errors),
            (200, 100, 30),
            "the interval from the refused reading: {}",
            moved.reason
        );
    }

    /// A step change between two intervals starts the judge's stage from
    /// its own reading; the next interval's numbers still start where the
    /// last interval ended, so no request is missing from the samples.
    #[tokio::test]
    async fn the_requests_before_a_step_change_are_in_the_next_sample() {
        let script = [
            s(1000, (100, 0)),
            s(1500, (150, 0)),
            s(1900, (250, 0)),
            s(2600, (450, 0)),
            s(3000, (550, 0)),
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
        a.begin_stage(Weight::from_percent(10.0).unwrap()).await;
        let first = a.analyse(false).await.sample.expect("numbers");
        assert_eq!((first.stable.requests, first.canary.requests), (500, 50));
        // The step changes at 1900 (400 and 100 requests since 1500).
        a.begin_stage(Weight::from_percent(25.0).unwrap()).await;
        let second = a.analyse(false).await.sample.expect("numbers");
        assert_eq!(
            (second.stable.requests, second.canary.requests),
            (1100, 300),
            "from 1500, not from the step change at 1900"
        );
        let third = a.analyse(false).await.sample.expect("numbers");
        assert_eq!((third.stable.requests, third.canary.requests), (400, 100));
    }

    /// With a baseline, each interval carries its numbers too, counted
    /// like the others' (from the reading before); without one, none.
    #[tokio::test]
    async fn the_baseline_gets_its_interval_numbers_like_the_others() {
        let with_baseline = |stable, canary, baseline| Snapshot {
            baseline: Some(Totals {
                requests: baseline,
                errors: 1,
                ..Totals::default()
            }),
            ..s(stable, (canary, 0))
        };
        let script = [
            with_baseline(1000, 100, 100),
            with_baseline(1800, 300, 290),
            s(2600, (500, 0)),
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
        a.begin_stage(Weight::from_percent(20.0).unwrap()).await;
        let first = a.analyse(false).await;
        let sample = first.sample.expect("a judged interval has numbers");
        assert_eq!(
            (sample.stable.requests, sample.canary.requests),
            (800, 200),
            "{}",
            first.reason
        );
        assert_eq!(
            sample.baseline.map(|b| (b.requests, b.errors)),
            Some((190, 0))
        );
        let without = a.analyse(false).await;
        assert_eq!(without.sample.and_then(|s| s.baseline), None);
    }

    /// A step that begins on a spike begins from the numbers before it, in
    /// the judge and in the interval numbers alike: the spike's end is no
    /// counter going backwards.
    #[tokio::test]
    async fn a_step_that_begins_on_a_spike_begins_from_before_it() {
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
        let IntervalSample { stable, canary, .. } =
            after.sample.expect("a judged interval has numbers");
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
