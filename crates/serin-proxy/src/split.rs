//! The choice of version for one request: a pure function of the routing
//! table, the request head and a sequence number.
//!
//! Order of precedence: route overrides (first match wins), then the sticky
//! key's bucket if the request carries the key, then the exact split on a
//! sequence number. The shell (the proxy) owns the counter that produces the
//! sequence numbers and hands [`route`] a way to take the next; keeping the
//! counter out of here makes the split testable without sockets or threads.
//!
//! With a baseline, the weight splits three ways: the canary gets exactly the
//! requests it gets without one (the same sequence numbers and buckets), and
//! the baseline its share ([`Weight::baseline_share`]) taken from the
//! stable's: an exact split of the requests the canary leaves, and the
//! topmost sticky buckets.

use http::request::Parts;

use crate::cookie;
use crate::table::{Match, Route, RoutingTable, StickyKey};
use crate::weight::{Version, Weight};

/// Buckets a sticky key falls into; one per hundredth of a percent of weight.
pub const STICKY_BUCKETS: u64 = 10_000;

/// The version that serves `req`, given the table and a source of sequence
/// numbers (`0, 1, 2, ...` in arrival order). `next_seq` is called only for
/// a request that reaches the split (no route override matched and it
/// carries no sticky key), so the split is exact over exactly those.
pub fn route(table: &RoutingTable, req: &Parts, next_seq: impl FnOnce() -> u64) -> Version {
    choose(table, req, next_seq).0
}

/// What decided a request's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A route override: the version whatever the weight.
    Route,
    /// The sticky key's bucket, by the weight.
    Sticky,
    /// The exact split, by the weight.
    Split,
}

/// [`route`], and what decided: requests a route override sent are left out
/// when the observed split is compared with the weight.
pub fn choose(table: &RoutingTable, req: &Parts, next_seq: impl FnOnce() -> u64) -> (Version, Via) {
    if let Some(version) = matched_route(table.routes(), req) {
        return (version, Via::Route);
    }
    if let Some(key) = table.sticky().and_then(|k| sticky_value(k, req)) {
        let version = sticky_with_baseline(key, table.weight(), table.baseline_share());
        return (version, Via::Sticky);
    }
    let version = split_with_baseline(next_seq(), table.weight(), table.baseline_share());
    (version, Via::Split)
}

/// The first route override that matches, if any. A route to the baseline
/// (only possible when built by hand) sends to the stable: the baseline is
/// reached by the weight only.
fn matched_route(routes: &[Route], req: &Parts) -> Option<Version> {
    routes
        .iter()
        .find(|r| matches(&r.when, req))
        .map(|r| match r.version {
            Version::Baseline => Version::Stable,
            v => v,
        })
}

fn matches(m: &Match, req: &Parts) -> bool {
    match m {
        Match::Header { name, value } => req.headers.get_all(name).iter().any(|v| v == value),
        Match::Cookie { name, value } => cookie::find(&req.headers, name) == Some(value.as_str()),
    }
}

fn sticky_value<'r>(key: &StickyKey, req: &'r Parts) -> Option<&'r [u8]> {
    match key {
        StickyKey::Cookie(name) => cookie::find(&req.headers, name).map(str::as_bytes),
        StickyKey::Header(name) => req.headers.get(name).map(|v| v.as_bytes()),
    }
}

/// The exact split: request `seq` goes to the canary iff
/// `floor((seq+1)·w / 10000) > floor(seq·w / 10000)` (Bresenham's line).
///
/// Any `n` consecutive sequence numbers then hold `floor(n·w/10000)` or
/// `ceil(n·w/10000)` canary requests, so the canary gets the traffic analysis
/// was promised even over short windows, and the two versions interleave
/// instead of taking turns in runs as weighted round robin would.
pub fn split(seq: u64, weight: Weight) -> Version {
    // The pattern repeats every 10000 requests; reducing first keeps the
    // products far from overflow for any seq.
    let s = seq % STICKY_BUCKETS;
    let w = u64::from(weight.hundredths());
    if (s + 1) * w / STICKY_BUCKETS > s * w / STICKY_BUCKETS {
        Version::Canary
    } else {
        Version::Stable
    }
}

/// The exact three-way split: the canary's requests are [`split`]'s, and of
/// the others (request `seq` is the `j`-th of them, `j = seq − floor(seq·w /
/// 10000)` within the period), the baseline takes the `j` where
/// `floor((j+1)·b / (10000 − w)) > floor(j·b / (10000 − w))`.
///
/// Every 10000 consecutive sequence numbers hold exactly `w` canary and `b`
/// baseline requests, and any `n` consecutive ones within one of `n·w/10000`
/// canary and within two of `n·b/10000` baseline requests. With `b` zero it
/// is [`split`].
pub fn split_with_baseline(seq: u64, weight: Weight, baseline: Weight) -> Version {
    let s = seq % STICKY_BUCKETS;
    let w = u64::from(weight.hundredths());
    let b = u64::from(baseline.hundredths());
    if (s + 1) * w / STICKY_BUCKETS > s * w / STICKY_BUCKETS {
        return Version::Canary;
    }
    // The others' count: positive, since this request is one of them.
    let others = STICKY_BUCKETS - w;
    if b == 0 || others == 0 {
        return Version::Stable;
    }
    let j = s - s * w / STICKY_BUCKETS;
    if (j + 1) * b / others > j * b / others {
        Version::Baseline
    } else {
        Version::Stable
    }
}

/// Sticky assignment with a baseline: [`sticky`]'s canary (buckets below
/// the weight), the baseline the topmost `b` buckets (`10000 − b` and up),
/// the stable the rest. Raising the weight below 50 % moves users only from
/// the stable, to the canary or to the baseline; above, from the baseline
/// to the canary.
pub fn sticky_with_baseline(key: &[u8], weight: Weight, baseline: Weight) -> Version {
    let bucket = sticky_bucket(key);
    if bucket < weight.hundredths() {
        Version::Canary
    } else if STICKY_BUCKETS - u64::from(bucket) <= u64::from(baseline.hundredths()) {
        Version::Baseline
    } else {
        Version::Stable
    }
}

/// The bucket `0..10000` of a sticky key: `xxh3_64(key) mod 10000`.
///
/// xxh3 is a specified algorithm, so a user's bucket is the same on every
/// machine, process and release of serin.
pub fn sticky_bucket(key: &[u8]) -> u16 {
    // The remainder is below 10000, so it fits.
    (xxhash_rust::xxh3::xxh3_64(key) % STICKY_BUCKETS) as u16
}

/// Sticky assignment: canary iff the key's bucket is below the weight in
/// hundredths. Monotone in the weight: raising it only moves users from
/// stable to canary, and weight 0 puts everyone on stable.
pub fn sticky(key: &[u8], weight: Weight) -> Version {
    if sticky_bucket(key) < weight.hundredths() {
        Version::Canary
    } else {
        Version::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_golden_value_pins_every_users_bucket() {
        // If this changes, every sticky user changes version on upgrade.
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b"user-1") % 10_000, 6057);
        assert_eq!(sticky_bucket(b"user-1"), 6057);
        assert_eq!(
            sticky(b"user-1", Weight::from_hundredths(6057).unwrap()),
            Version::Stable
        );
        assert_eq!(
            sticky(b"user-1", Weight::from_hundredths(6058).unwrap()),
            Version::Canary
        );
    }

    #[test]
    fn only_requests_that_reach_the_split_take_a_sequence_number() {
        let t = RoutingTable::new("http://a:1", "http://b:1", Weight::FULL)
            .unwrap()
            .with_sticky(Some(StickyKey::header("x-user").unwrap()))
            .with_routes(vec![
                Route::header("x-canary", "never", Version::Stable).unwrap(),
            ]);
        let req = |headers: &[(&str, &str)]| {
            let mut b = http::Request::get("/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let taken = std::cell::Cell::new(0);
        let next = || taken.replace(taken.get() + 1);
        assert_eq!(
            route(&t, &req(&[("x-canary", "never")]), next),
            Version::Stable
        );
        assert_eq!(route(&t, &req(&[("x-user", "u1")]), next), Version::Canary);
        assert_eq!(taken.get(), 0);
        assert_eq!(route(&t, &req(&[]), next), Version::Canary);
        assert_eq!(taken.get(), 1);
    }

    #[test]
    fn a_route_built_by_hand_to_the_baseline_sends_to_the_stable() {
        let t = RoutingTable::new(
            "http://a:1",
            "http://b:1",
            Weight::from_percent(10.0).unwrap(),
        )
        .unwrap()
        .with_baseline(Some(crate::Upstream::parse("http://c:1").unwrap()))
        .with_routes(vec![Route {
            when: Match::Header {
                name: http::header::HeaderName::from_static("x-b"),
                value: http::HeaderValue::from_static("1"),
            },
            version: Version::Baseline,
        }]);
        let req = http::Request::get("/")
            .header("x-b", "1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(choose(&t, &req, || 0), (Version::Stable, Via::Route));
    }

    #[test]
    fn split_extremes() {
        for seq in 0..20_000 {
            assert_eq!(split(seq, Weight::ZERO), Version::Stable);
            assert_eq!(split(seq, Weight::FULL), Version::Canary);
        }
        assert_eq!(split(u64::MAX, Weight::FULL), Version::Canary);
    }
}
