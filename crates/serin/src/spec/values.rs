//! Checked scalars: refused by the parser itself, so errors carry a
//! location; and the small checks on values (same server, readable label,
//! rollout name).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serin_proxy::{Upstream, Weight};

use crate::time::parse_duration;

/// A canary weight: `5`, `5.25`, `"25%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WeightValue(pub(super) Weight);

/// A percentage written with `%`: `5%`, `0.5%`. Stored as a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Percent(pub(super) f64);

/// A duration: `10s`, `1000ms`, `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Dur(pub(super) Duration);

/// A strictly positive ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ratio(pub(super) f64);

/// A whole number (counts, limits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Count(pub(super) u64);

/// A scalar as written (numbers and words alike), for values checked where
/// their field's name is known.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(ScalarText("a number or a word"))
            .map(Text)
    }
}

/// Accepts a YAML scalar as text (numbers too), for the checked scalars.
/// Read with `deserialize_string`, so a plain number arrives as written:
/// `99.999999999999999999` stays that text instead of becoming the float 100.
pub(super) struct ScalarText(&'static str);

impl<'de> Visitor<'de> for ScalarText {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

pub(super) const WEIGHT_EXPECTED: &str =
    "a weight from 0 to 100 with at most two decimals, like 5, 12.5 or 25%";
pub(super) const PERCENT_EXPECTED: &str =
    "a percentage like 5% or 0.5% (from 0% to 100%, at most four decimals)";
pub(super) const DURATION_EXPECTED: &str = "a duration like 500ms, 10s, 2m or 1m30s";
/// Most decimals a percentage may have: finer than any error rate serin can
/// tell apart, and short enough to be kept exactly.
pub(super) const PERCENT_DECIMALS: usize = 4;

/// A plain decimal number as written (`12`, `12.5`), in units of
/// `10^-decimals`; `None` if it is anything else or has more decimals.
/// Integer arithmetic only, so nothing is rounded on the way.
pub(super) fn exact_decimal(text: &str, decimals: usize) -> Option<u64> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > decimals {
        return None;
    }
    if text.contains('.') && frac.is_empty() {
        return None;
    }
    let scale = 10u64.checked_pow(u32::try_from(decimals).ok()?)?;
    let frac_scale = 10u64.checked_pow(u32::try_from(decimals - frac.len()).ok()?)?;
    let frac_value = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()?
    };
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(scale)?
        .checked_add(frac_value.checked_mul(frac_scale)?)
}
pub(super) const RATIO_EXPECTED: &str = "a ratio greater than 0, like 1.5";
pub(super) const COUNT_EXPECTED: &str = "a whole number like 100";

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(COUNT_EXPECTED))?;
        text.trim()
            .parse::<u64>()
            .map(Count)
            .map_err(|_| de::Error::custom(format!("expected {COUNT_EXPECTED}, got `{text}`")))
    }
}

impl<'de> Deserialize<'de> for WeightValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(WEIGHT_EXPECTED))?;
        let t = text.trim();
        let number = t.strip_suffix('%').unwrap_or(t).trim();
        exact_decimal(number, 2)
            .and_then(|h| u16::try_from(h).ok())
            .and_then(|h| Weight::from_hundredths(h).ok())
            .map(WeightValue)
            .ok_or_else(|| de::Error::custom(format!("expected {WEIGHT_EXPECTED}, got `{text}`")))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(PERCENT_EXPECTED))?;
        let bad = || de::Error::custom(format!("expected {PERCENT_EXPECTED}, got `{text}`"));
        let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
        // In units of 10^-4 %; exact, then one division.
        let units = exact_decimal(number.trim(), PERCENT_DECIMALS).ok_or_else(bad)?;
        let hundred = 100 * 10u64.pow(PERCENT_DECIMALS as u32);
        if units > hundred {
            return Err(bad());
        }
        Ok(Percent(units as f64 / hundred as f64))
    }
}

/// Whether two upstream URLs name one server: the same host and port, or
/// the same port on two names of this machine (`localhost`, `127.0.0.1`,
/// `[::1]`, `[::ffff:127.0.0.1]`, and the unspecified `0.0.0.0`, `0`,
/// `[::]`, which a connection takes for this machine).
pub fn same_server(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (Upstream::parse(a), Upstream::parse(b)) else {
        return false;
    };
    let (a, b) = (a.authority(), b.authority());
    let port = |x: &http::uri::Authority| x.port_u16().unwrap_or(80);
    let loopback = |host: &str| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_unspecified(),
                Ok(std::net::IpAddr::V6(ip)) => {
                    ip.is_loopback()
                        || ip.is_unspecified()
                        || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
                // `127.1`, `0x7f.0.0.1`, `0`: shorthand the resolver reads
                // as an address (inet_aton), read here without asking it.
                Err(_) => {
                    shorthand_ipv4(host).is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
                }
            }
    };
    port(a) == port(b)
        && (a.host().eq_ignore_ascii_case(b.host()) || (loopback(a.host()) && loopback(b.host())))
}

/// An IPv4 address in the resolver's shorthand (`127.1`, `0x7f.0.0.1`,
/// `2130706433`): one to four numbers, decimal, `0x` hex or `0` octal, the
/// last filling the bytes left.
pub(super) fn shorthand_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<u32> = host
        .split('.')
        .map(
            |p| match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None if p.len() > 1 && p.starts_with('0') => u32::from_str_radix(&p[1..], 8).ok(),
                None => p.parse().ok(),
            },
        )
        .collect::<Option<_>>()?;
    let (last, leading) = parts.split_last()?;
    if leading.len() > 3 || leading.iter().any(|&b| b > 255) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if room < 32 && *last >> room != 0 {
        return None;
    }
    let head = leading.iter().fold(0u32, |acc, &b| (acc << 8) | b);
    Some(std::net::Ipv4Addr::from(
        head.checked_shl(room).unwrap_or(0) | last,
    ))
}

/// A version label reads as what it is: visible ASCII only (no space, no
/// control, invisible, direction-changing or look-alike characters), at
/// most 128 of them, as a container image tag allows.
pub(super) fn readable_label(label: &str) -> bool {
    label.len() <= 128 && label.chars().all(|c| c.is_ascii_graphic())
}

/// The longest duration a rollout file may give: 30 days (a longer wait is
/// `pause: {}`, which waits for a person).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(DURATION_EXPECTED))?;
        // A bare number has no unit: `1` could mean 1 s or 1 ms, so it is
        // refused here (the command line's flags read it as seconds).
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(de::Error::custom(format!(
                "expected {DURATION_EXPECTED}, got `{text}` (a number without its unit)"
            )));
        }
        match parse_duration(&text) {
            Ok(d) if d > MAX_DURATION => Err(de::Error::custom(format!(
                "expected {DURATION_EXPECTED} of at most 720h (30 days), got `{text}`"
            ))),
            Ok(d) => Ok(Dur(d)),
            Err(_) => Err(de::Error::custom(format!(
                "expected {DURATION_EXPECTED}, got `{text}`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(RATIO_EXPECTED))?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Ratio(v)),
            _ => Err(de::Error::custom(format!(
                "expected {RATIO_EXPECTED}, got `{text}`"
            ))),
        }
    }
}

/// `[a-z0-9-]`, 1 to 63 characters, not starting with `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Splits a command line on white space (no quoting: paths with spaces are
/// not supported in `test`/`reload`; say so in the docs).
pub fn argv(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_string).collect()
}
