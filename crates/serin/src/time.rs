//! Time, the ground floor every layer shares: [`Millis`] (the state
//! machine's clock unit), [`now`], RFC 3339 timestamps, and durations as
//! people write them (`500ms`, `1m30s`) and read them (`1h15m`, `0.5s`).
//!
//! Only [`now`] reads a clock; the state machine never calls it (time is
//! its input).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// This time plus a duration (saturating).
    pub fn after(self, d: Duration) -> Millis {
        Millis(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The wall clock, in [`Millis`].
pub fn now() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// `2026-11-25T02:04:05.123Z` from milliseconds since the epoch (UTC, no
/// time-zone database needed).
pub fn rfc3339(t: Millis) -> String {
    let ms = t.0 % 1000;
    let secs = t.0 / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// `12:03:04 UTC`: the time of day of `t`, as the CLI's times are (UTC).
pub fn clock(t: Millis) -> String {
    let r = rfc3339(t);
    format!("{} UTC", &r[11..19])
}

/// `t` as seen at `now`: the time of day ([`clock`]) on `now`'s day (UTC),
/// with its date otherwise (`2026-12-07 19:33:02 UTC`): a pause of 720 h
/// said "until 19:33:02 UTC", which read as already past.
pub fn clock_seen_at(now: Millis, t: Millis) -> String {
    let (n, r) = (rfc3339(now), rfc3339(t));
    if n[..10] == r[..10] {
        clock(t)
    } else {
        format!("{} {} UTC", &r[..10], &r[11..19])
    }
}

/// Parses a duration as the command line and rollout files write them:
/// `500ms`, `30s`, `2m`, `1h`, `1m30s`; a bare number is seconds. Or says
/// what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let expected = || format!("expected a duration like 500ms, 30s, 2m or 1m30s, got `{text}`");
    if t.is_empty() {
        return Err(expected());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(expected)?;
        if digits == 0 {
            return Err(expected());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(expected()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration as the rollout file would write it: `250ms`, `45s`, `1m30s`,
/// `2h`, `1h15m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m}m"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// A measured span, as precise as it is worth reading: `0.5s`, `7s`, `2m`,
/// `1m30s`, `2h`, `1h15m` (tenths under 10 s, whole seconds to an hour, then
/// minutes).
pub fn human_span(ms: u64) -> String {
    if ms < 10_000 && !ms.is_multiple_of(1000) {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let mut s = (ms + 500) / 1000;
    if s >= 3600 {
        s -= s % 60;
    }
    human(Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(Millis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(clock(Millis(1_795_573_445_123)), "02:24:05 UTC");
        assert_eq!(rfc3339(Millis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339(Millis(1_795_573_445_123)),
            "2026-11-25T02:24:05.123Z"
        );
    }

    #[test]
    fn a_time_on_another_day_carries_its_date() {
        let now = Millis(1_795_573_445_123); // 2026-11-25T02:24:05Z
        assert_eq!(
            clock_seen_at(now, Millis(now.0 + 3_600_000)),
            "03:24:05 UTC"
        );
        assert_eq!(
            clock_seen_at(now, Millis(now.0 + 720 * 3_600_000)),
            "2026-12-25 02:24:05 UTC"
        );
    }

    #[test]
    fn durations_people_write() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "soon", "10x", "m", "-5s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_people_read() {
        assert_eq!(human(Duration::from_secs(60)), "1m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
        assert_eq!(human(Duration::from_secs(4500)), "1h15m");
        assert_eq!(human_span(500), "0.5s");
        assert_eq!(human_span(7_200), "7.2s");
        assert_eq!(human_span(41_500), "42s");
        assert_eq!(human_span(4_530_000), "1h15m");
    }
}
