//! nginx's JSON access log (the `log_format` serin writes) as a metric source.
//!
//! Every snapshot reads what was appended since the last one and adds it to
//! cumulative per-version totals. It copes with what log files do:
//! - a line still being written (no newline yet) waits for the next read;
//! - rotation by rename (logrotate's default): the old file is read to its
//!   end, then the new file from its start;
//! - truncation in place (`copytruncate`): reading starts over at 0;
//! - a missing file is no data (an error the judge counts towards
//!   `noDataLimit`), never a pass.
//!
//! Lines that do not parse are skipped and counted, with a warning: they are
//! never guessed into a version.
//!
//! Lines of the `baseline` version (a rollout with a baseline upstream) are
//! the snapshot's [`Snapshot::baseline`]: there from the start with
//! [`NginxLogSource::with_baseline`], else from the first such line.
//!
//! Each line says whether a route override sent the request (`"routed"`);
//! the stable's and the canary's such requests are [`Snapshot::routed`], as
//! long as every line counted has said (lines written by an older serin do
//! not: then it is `None`, unknown, never a guess).
//!
//! Errors are 5xx and timeouts. A request whose client went away before the
//! end (nginx's 499, or a status below 500 with `$request_completion` not
//! `OK`: nginx logs the status it had sent when bytes of the body had gone
//! out) is:
//! - a timeout of the version when the version had not answered
//!   (`$upstream_status` `-`): the client gave up waiting on it;
//! - a timeout of the version when it had answered but was still sending its
//!   body when the client left (its connection ended with the request:
//!   `$upstream_response_time` within [`STILL_SENDING`] of `$request_time`)
//!   and the request had lasted at least [`SILENT_UPSTREAM`], the built-in
//!   proxy's bound: a body that stalled (or still trickled) for a second
//!   when its client gave up;
//! - otherwise counted against neither version: the upstream had delivered
//!   its whole body and the client left on its own (or was slow itself).
//!
//! The latency of such a timeout is `$request_time`, the time until the
//! client left. Unlike the built-in proxy, nginx's log cannot tell a stalled
//! body from one still trickling in: a client that leaves a body still
//! coming after a second counts against the version either way.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Deserialize;

use serin_analysis::{Histogram, Totals};

use serin_proxy::SILENT_UPSTREAM;

use super::default_bounds_ms;
use crate::controller::seams::{BoxFuture, MetricSource, Snapshot};
use crate::error::Error;

/// One line of serin's log format (nginx writes every value as a string).
#[derive(Debug, Deserialize)]
struct Line {
    version: String,
    status: String,
    request_time: String,
    /// `$upstream_status`: `-` while no upstream answered; several values,
    /// comma-separated, when nginx tried more than one.
    #[serde(default)]
    upstream_status: Option<String>,
    /// `$upstream_response_time`: seconds from the upstream connection's
    /// start to its end; several values when nginx tried more than one.
    #[serde(default)]
    upstream_response_time: Option<String>,
    /// `$request_completion`: `OK` when the whole response was sent, empty
    /// when the client went away first; missing in lines of a file written
    /// before serin logged it (then only a 499 says the client left).
    #[serde(default)]
    request_completion: Option<String>,
    /// `"1"` when a route override sent the request, `"0"` when the weight
    /// did; missing in lines of a file written before serin logged it.
    #[serde(default)]
    routed: Option<String>,
}

/// The most one snapshot reads of the log (the rest waits for the next).
const READ_LIMIT: u64 = 64 << 20;

/// The longest unfinished line kept while waiting for its newline.
const LINE_LIMIT: usize = 1 << 20;

/// Whether `path` is a regular file (not a FIFO, device or directory).
fn is_regular(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// nginx's status for a request whose client closed the connection first.
const CLIENT_CLOSED: u16 = 499;

/// Whether the version had answered a request whose client went away
/// (nginx's 499): `$upstream_status` ends with a status of its own. While it
/// had not (`-` or missing) the client gave up waiting on it, a timeout
/// counted against it, as the built-in proxy counts one; once it had, the
/// client left on its own and the request counts against neither.
fn answered_before_client_closed(upstream_status: Option<&str>) -> bool {
    last_value(upstream_status)
        .and_then(|last| last.parse::<u16>().ok())
        .is_some_and(|code| (100..600).contains(&code) && code != CLIENT_CLOSED)
}

/// How close `$upstream_response_time` must be to `$request_time` for the
/// upstream to have been still sending when the client left. When nginx
/// ends a request because its client left, it ends the upstream's exchange
/// at the same millisecond: the two differ only by the time before nginx
/// connected to the upstream (reading the request, a few milliseconds for a
/// GET). An upstream that had finished first differs by the time the client
/// took to read what nginx had buffered.
const STILL_SENDING: f64 = 0.1;

/// The last of nginx's comma- (or colon-) separated values of an upstream
/// variable: the upstream that served the request.
fn last_value(value: Option<&str>) -> Option<&str> {
    value
        .and_then(|s| s.rsplit([',', ':']).next())
        .map(str::trim)
}

/// Whether a request whose client left after the version answered counts
/// against the version: its upstream was still sending when the client left
/// (see [`STILL_SENDING`]) after at least [`SILENT_UPSTREAM`].
fn left_while_still_sending(request_time: f64, upstream_response_time: Option<&str>) -> bool {
    let Some(upstream) = last_value(upstream_response_time).and_then(|t| t.parse::<f64>().ok())
    else {
        return false;
    };
    request_time >= SILENT_UPSTREAM.as_secs_f64() && request_time - upstream <= STILL_SENDING
}

/// Tails a JSON access log.
pub struct NginxLogSource {
    path: PathBuf,
    file: Option<(File, u64)>, // open file and its inode
    offset: u64,
    partial: Vec<u8>,
    /// The last bytes read: if they are no longer where we read them, the
    /// file was truncated and rewritten past our offset.
    fingerprint: Vec<u8>,
    /// Every version since the start (4xx answers as client errors).
    totals: Snapshot,
    /// A version's totals before its first line.
    empty: Totals,
    /// Every counted line said whether a route sent it.
    routed_known: bool,
    /// Lines that could not be parsed, since the start.
    pub skipped: u64,
}

impl NginxLogSource {
    /// A source for the log at `path`. Counting starts at the log's current
    /// end: requests logged before serin started are not this rollout's.
    pub fn new(path: PathBuf) -> NginxLogSource {
        let bounds = default_bounds_ms();
        let empty = Totals {
            client_errors: Some(0),
            latency: Some(Histogram {
                counts: vec![0; bounds.len()],
                le_ms: bounds,
            }),
            ..Totals::default()
        };
        let mut source = NginxLogSource {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
            fingerprint: Vec::new(),
            totals: Snapshot {
                stable: empty.clone(),
                canary: empty.clone(),
                routed: Some((0, 0)),
                ..Snapshot::default()
            },
            empty,
            routed_known: true,
            skipped: 0,
        };
        if is_regular(&source.path)
            && let Ok(f) = File::open(&source.path)
            && let Ok(meta) = f.metadata()
        {
            source.offset = meta.len();
            source.file = Some((f, meta.ino()));
        }
        source
    }

    /// The same source, for a rollout with a baseline: its totals are in
    /// every snapshot, zero until its first line.
    pub fn with_baseline(mut self) -> NginxLogSource {
        let empty = self.empty.clone();
        self.totals.baseline.get_or_insert(empty);
        self
    }

    /// Reads everything appended since the last call.
    pub fn poll(&mut self) -> Result<(), String> {
        let on_disk = std::fs::metadata(&self.path).ok();
        // Rotated away: finish the old file first, then switch.
        if let (Some((_, ino)), Some(meta)) = (&self.file, &on_disk)
            && *ino != meta.ino()
        {
            self.read_open_file()?;
            self.file = None;
            self.offset = 0;
            self.partial.clear();
            self.fingerprint.clear();
        }
        if self.file.is_none() {
            // A FIFO would block the open, a device never end: only a file.
            if on_disk.as_ref().is_some_and(|m| !m.is_file()) {
                return Err(format!(
                    "access log {}: not a regular file",
                    self.path.display()
                ));
            }
            match File::open(&self.path) {
                Ok(f) => {
                    let ino = f.metadata().map_err(|e| e.to_string())?.ino();
                    self.file = Some((f, ino));
                    self.offset = 0;
                }
                Err(e) => return Err(format!("access log {}: {e}", self.path.display())),
            }
        }
        self.read_open_file()
    }

    fn read_open_file(&mut self) -> Result<(), String> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(());
        };
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let rewritten = len >= self.offset
            && !self.fingerprint.is_empty()
            && self.offset >= self.fingerprint.len() as u64
            && {
                let mut seen = vec![0; self.fingerprint.len()];
                file.seek(SeekFrom::Start(self.offset - seen.len() as u64))
                    .and_then(|_| file.read_exact(&mut seen))
                    .map_or(true, |()| seen != self.fingerprint)
            };
        if len < self.offset || rewritten {
            // Truncated in place (copytruncate): start over.
            self.offset = 0;
            self.partial.clear();
            self.fingerprint.clear();
        }
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| e.to_string())?;
        // At most READ_LIMIT a call: the rest waits for the next.
        let mut buf = Vec::new();
        let n = file
            .take(READ_LIMIT)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        self.offset += n as u64;
        if n > 0 {
            let keep = n.min(64);
            self.fingerprint = buf[n - keep..].to_vec();
        }
        self.partial.extend_from_slice(&buf);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > LINE_LIMIT {
                // No line of serin's format is this long: drop it.
                self.partial.clear();
                self.skipped += 1;
            }
            return Ok(());
        };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.count(line);
        }
        Ok(())
    }

    fn count(&mut self, raw: &[u8]) {
        let parsed = serde_json::from_slice::<Line>(raw).ok().and_then(|l| {
            let status: u16 = l.status.parse().ok()?;
            let seconds: f64 = l.request_time.parse().ok()?;
            // The client went away before the end: a 499, or (when nginx
            // had sent bytes of the body) the status sent, not completed. A
            // 5xx sent is the version's error whether the client stayed or not.
            let left = status == CLIENT_CLOSED
                || (status < 500 && l.request_completion.as_deref().is_some_and(|c| c != "OK"));
            // Whose fault: see the module docs.
            let timed_out = left
                && (!answered_before_client_closed(l.upstream_status.as_deref())
                    || left_while_still_sending(seconds, l.upstream_response_time.as_deref()));
            Some((l.version, status, seconds, left, timed_out, l.routed))
        });
        let Some((version, status, seconds, left, timed_out, routed)) = parsed else {
            self.skipped += 1;
            if self.skipped.is_power_of_two() {
                tracing::warn!(log = %self.path.display(), skipped = self.skipped, "access log line not in serin's format, skipped");
            }
            return;
        };
        let totals = match version.as_str() {
            "stable" => &mut self.totals.stable,
            "canary" => &mut self.totals.canary,
            "baseline" => self
                .totals
                .baseline
                .get_or_insert_with(|| self.empty.clone()),
            _ => {
                self.skipped += 1;
                return;
            }
        };
        if left && !timed_out {
            return; // answered, then the client left on its own: neither
        }
        totals.requests += 1;
        let by_route = match routed.as_deref() {
            Some("1") => Some(true),
            Some("0") => Some(false),
            _ => None,
        };
        if (400..500).contains(&status) && !timed_out {
            *totals.client_errors.get_or_insert(0) += 1;
        }
        if status >= 500 || timed_out {
            totals.errors += 1;
        }
        let ms = seconds * 1000.0;
        if let Some(h) = &mut totals.latency {
            for (le, count) in h.le_ms.iter().zip(h.counts.iter_mut()) {
                if ms <= *le {
                    *count += 1;
                }
            }
        }
        match (by_route, self.totals.routed.as_mut()) {
            (None, _) => {
                self.routed_known = false;
                self.totals.routed = None;
            }
            (Some(true), Some(routed)) if self.routed_known => match version.as_str() {
                "stable" => routed.0 += 1,
                "canary" => routed.1 += 1,
                // Routes never send to the baseline; counted nowhere.
                _ => {}
            },
            _ => {}
        }
    }
}

impl MetricSource for NginxLogSource {
    fn snapshot(&mut self) -> BoxFuture<'_, Result<Snapshot, Error>> {
        // A log that cannot be read now (rotated away, not yet written).
        let result = self
            .poll()
            .map(|()| self.totals.clone())
            .map_err(Error::unavailable);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(version: &str, status: u16, secs: f64) -> String {
        routed_line(version, status, secs, "0")
    }

    fn routed_line(version: &str, status: u16, secs: f64, routed: &str) -> String {
        format!(
            "{{\"time\":\"2026-11-25T00:00:00+00:00\",\"version\":\"{version}\",\"status\":\"{status}\",\
             \"request_time\":\"{secs:.3}\",\"upstream_response_time\":\"{secs:.3}\",\"upstream_status\":\"{status}\",\
             \"routed\":\"{routed}\"}}\n"
        )
    }

    #[test]
    fn requests_a_route_sent_are_counted_while_every_line_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        append(&path, "");
        let mut src = NginxLogSource::new(path.clone());
        append(
            &path,
            &(routed_line("canary", 200, 0.001, "1")
                + &routed_line("canary", 200, 0.001, "0")
                + &routed_line("stable", 200, 0.001, "1")
                + &routed_line("stable", 499, 0.001, "1")
                + &routed_line("stable", 200, 0.001, "0")),
        );
        src.poll().unwrap();
        // The 499 before any answer (upstream_status 499) is a timeout of
        // the stable: a request, and one a route sent.
        assert_eq!(src.totals.routed, Some((2, 1)));
        assert_eq!(
            (src.totals.stable.requests, src.totals.canary.requests),
            (3, 2)
        );
        // A line of an older format: from then on, unknown.
        append(
            &path,
            "{\"time\":\"t\",\"version\":\"canary\",\"status\":\"200\",\"request_time\":\"0.001\"}\n",
        );
        append(&path, &routed_line("canary", 200, 0.001, "1"));
        src.poll().unwrap();
        assert_eq!(src.totals.canary.requests, 4);
        assert_eq!(src.totals.routed, None);
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn baseline_lines_are_the_baselines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        append(&path, "");
        let mut plain = NginxLogSource::new(path.clone());
        let mut with = NginxLogSource::new(path.clone()).with_baseline();
        plain.poll().unwrap();
        with.poll().unwrap();
        assert_eq!(plain.totals.baseline, None, "no baseline line yet");
        assert_eq!(with.totals.baseline.as_ref().map(|b| b.requests), Some(0));
        append(
            &path,
            &(line("baseline", 200, 0.004)
                + &line("baseline", 503, 0.010)
                + &line("baseline", 404, 0.001)
                + &line("canary", 200, 0.002)),
        );
        for src in [&mut plain, &mut with] {
            src.poll().unwrap();
            let b = src.totals.baseline.as_ref().expect("baseline lines");
            assert_eq!((b.requests, b.errors, b.client_errors), (3, 1, Some(1)));
            assert_eq!(b.latency.as_ref().unwrap().counts.last(), Some(&3));
            assert_eq!(
                (src.totals.canary.requests, src.totals.stable.requests),
                (1, 0)
            );
            assert_eq!(src.skipped, 0);
        }
    }

    #[test]
    fn counts_versions_errors_and_latency_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        append(&path, &line("stable", 200, 0.5)); // before serin started: not counted
        let mut src = NginxLogSource::new(path.clone());
        append(
            &path,
            &(line("stable", 200, 0.004)
                + &line("canary", 502, 0.120)
                + &line("canary", 200, 0.002)),
        );
        src.poll().unwrap();
        let t = &src.totals;
        assert_eq!((t.stable.requests, t.stable.errors), (1, 0));
        assert_eq!((t.canary.requests, t.canary.errors), (2, 1));
        let at = |tot: &Totals, le: f64| {
            let h = tot.latency.as_ref().unwrap();
            h.counts[h.le_ms.iter().position(|&b| b == le).unwrap()]
        };
        assert_eq!(at(&t.canary, 2.0), 1);
        assert_eq!(at(&t.canary, 100.0), 1);
        assert_eq!(at(&t.canary, 150.0), 2);
        let client_errors = |src: &NginxLogSource| {
            (
                src.totals.stable.client_errors,
                src.totals.canary.client_errors,
            )
        };
        assert_eq!(client_errors(&src), (Some(0), Some(0)));
        append(
            &path,
            &(line("canary", 404, 0.001) + &line("canary", 403, 0.001)),
        );
        src.poll().unwrap();
        assert_eq!(
            client_errors(&src),
            (Some(0), Some(2)),
            "4xx counted per version"
        );
        assert_eq!(src.totals.canary.errors, 1, "and not as errors");
    }

    /// Found by an outside test: an access log at /dev/zero grew the
    /// daemon's memory by gigabytes in seconds (and a FIFO would block).
    #[test]
    fn a_log_that_is_not_a_regular_file_is_an_error_not_a_read() {
        let mut src = NginxLogSource::new(std::path::PathBuf::from("/dev/zero"));
        let e = src.poll().unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert_eq!(src.totals.canary.requests, 0);
    }

    /// nginx logs 499 with `upstream_status` `-` for a client that gave up
    /// waiting for the version (seen with nginx 1.22 and a 3 s upstream, curl
    /// -m 1), and with the upstream's status for one that left after it
    /// answered. Before this, both were 4xx and neither was an error.
    #[test]
    fn a_client_that_gave_up_waiting_is_a_timeout_of_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        std::fs::write(&path, "").unwrap();
        let mut src = NginxLogSource::new(path.clone());
        let closed = |upstream: &str| {
            format!(
                "{{\"version\":\"canary\",\"status\":\"499\",\"request_time\":\"2.500\",\"upstream_status\":\"{upstream}\"}}\n"
            )
        };
        append(
            &path,
            &(closed("-") + &closed("502, -") + &closed("200") + &line("canary", 200, 0.01)),
        );
        src.poll().unwrap();
        let c = &src.totals.canary;
        assert_eq!(
            (c.requests, c.errors),
            (3, 2),
            "two waits timed out, one answered"
        );
        assert_eq!(c.client_errors, Some(0), "none of them a 4xx");
        let h = c.latency.as_ref().unwrap();
        let at_1s = h.le_ms.iter().position(|&le| le == 1000.0).unwrap();
        assert_eq!(h.counts[at_1s], 1, "the waits count with the time waited");
    }

    /// What nginx 1.22 logged (one request each, `curl -m 2`, or `-m 0.5
    /// --limit-rate 100k` for the last) for an upstream that sent its head
    /// and 3 bytes then stalled (499: nothing had gone out), one that sent
    /// 20 000 bytes then stalled (200 as sent, not completed), one that
    /// trickled 3 bytes every 100 ms, and a fast 50 MB one whose slow client
    /// left (the upstream done at 0.244 s).
    #[test]
    fn a_client_that_left_a_stalled_body_is_a_timeout_of_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        std::fs::write(&path, "").unwrap();
        let mut src = NginxLogSource::new(path.clone());
        let left = |version: &str, status: u16, rt: &str, urt: &str| {
            format!(
                "{{\"version\":\"{version}\",\"status\":\"{status}\",\"request_time\":\"{rt}\",\
                 \"upstream_response_time\":\"{urt}\",\"upstream_status\":\"200\",\
                 \"request_completion\":\"\",\"routed\":\"0\"}}\n"
            )
        };
        let complete = |status: u16| {
            format!(
                "{{\"version\":\"stable\",\"status\":\"{status}\",\"request_time\":\"0.010\",\
                 \"upstream_response_time\":\"0.010\",\"upstream_status\":\"{status}\",\
                 \"request_completion\":\"OK\",\"routed\":\"0\"}}\n"
            )
        };
        append(
            &path,
            &(left("canary", 499, "2.002", "2.002")
                + &left("canary", 200, "2.001", "2.000")
                + &left("canary", 499, "1.999", "1.998")
                // Two tries, the last still sending.
                + &left("canary", 499, "2.500", "0.001, 2.499")
                // Still sending, but the client left before the bound.
                + &left("stable", 499, "0.300", "0.300")
                // The upstream had finished; the client was slow.
                + &left("stable", 200, "0.499", "0.244")
                + &left("stable", 200, "3.000", "0.500")
                // A 5xx sent is an error, the client there or not.
                + &left("stable", 503, "0.020", "0.010")
                + &complete(200)
                + &complete(500)),
        );
        src.poll().unwrap();
        let c = &src.totals.canary;
        assert_eq!((c.requests, c.errors), (4, 4), "every stalled body");
        assert_eq!(c.client_errors, Some(0));
        let h = c.latency.as_ref().unwrap();
        let at_1s = h.le_ms.iter().position(|&le| le == 1000.0).unwrap();
        assert_eq!(
            h.counts[at_1s], 0,
            "each with the time until the client left"
        );
        let st = &src.totals.stable;
        assert_eq!(
            (st.requests, st.errors),
            (3, 2),
            "the 503 and the complete 200 and 500; the client's leavings in none"
        );
        assert_eq!(src.skipped, 0);
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        std::fs::write(&path, "").unwrap();
        let mut src = NginxLogSource::new(path.clone());
        let full = line("canary", 200, 0.01);
        let (head, tail) = full.split_at(30);
        append(&path, head);
        src.poll().unwrap();
        assert_eq!(src.totals.canary.requests, 0);
        append(&path, tail);
        src.poll().unwrap();
        assert_eq!(src.totals.canary.requests, 1);
        assert_eq!(src.skipped, 0);
    }

    #[test]
    fn rotation_by_rename_and_truncation_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        std::fs::write(&path, "").unwrap();
        let mut src = NginxLogSource::new(path.clone());
        append(&path, &line("stable", 200, 0.01));
        src.poll().unwrap();
        // Written to the old file after our read, then rotated away.
        append(&path, &line("stable", 500, 0.01));
        std::fs::rename(&path, dir.path().join("access.json.1")).unwrap();
        append(&path, &line("canary", 200, 0.01));
        src.poll().unwrap();
        assert_eq!(src.totals.stable.requests, 2);
        assert_eq!(src.totals.stable.errors, 1);
        assert_eq!(src.totals.canary.requests, 1);
        // copytruncate: same inode, rewritten from the start.
        std::fs::write(&path, line("stable", 503, 0.01)).unwrap();
        src.poll().unwrap();
        assert_eq!(
            src.totals.stable.errors, 2,
            "same length, new content: noticed"
        );
        std::fs::write(&path, "").unwrap();
        append(&path, &line("canary", 200, 0.001));
        src.poll().unwrap();
        assert_eq!(src.totals.canary.requests, 2, "shorter file: noticed");
    }

    #[test]
    fn missing_log_is_an_error_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        let mut src = NginxLogSource::new(path.clone());
        assert!(src.poll().unwrap_err().contains("nope.json"));
        append(
            &path,
            "not json\n{\"version\":\"blue\",\"status\":\"200\",\"request_time\":\"0.1\"}\n",
        );
        src.poll().unwrap();
        assert_eq!(src.skipped, 2);
        assert_eq!(src.totals.stable.requests + src.totals.canary.requests, 0);
    }
}
