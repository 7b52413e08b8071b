//! `serin proxy` end to end: the real binary, real sockets on 127.0.0.1, and
//! upstreams written here with std threads (so the proxy's memory is measured
//! alone, in its own process).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_serin");

/// A running `serin proxy`; killed on Drop.
struct ProxyProcess {
    child: Child,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    /// Starts the binary with `--listen 127.0.0.1:0` (and `--admin ADMIN`
    /// with an `admin` address, port 0) and reads the chosen addresses from
    /// its log. Any SERIN_TOKEN of the environment is not passed on.
    fn start(args: &[&str], admin: Option<&str>) -> ProxyProcess {
        let mut cmd = Command::new(BIN);
        cmd.args(["proxy", "--listen", "127.0.0.1:0"]).args(args);
        if let Some(admin) = admin {
            cmd.args(["--admin", admin]);
        }
        // No NO_COLOR: a pipe alone must be enough for plain log lines.
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("SERIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serin proxy");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut proc = ProxyProcess {
            child,
            listen: "0.0.0.0:0".parse().unwrap(),
            admin: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while proc.listen.port() == 0 || (admin.is_some() && proc.admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("serin proxy logs its addresses");
            assert!(
                !line.contains('\u{1b}'),
                "log lines to a pipe carry no colour codes: {line:?}"
            );
            if let Some(a) = field(&line, "listen=") {
                proc.listen = a;
            }
            if let Some(a) = field(&line, "admin=") {
                proc.admin = Some(a);
            }
        }
        proc
    }

    fn rss_kib(&self, field_name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field_name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|a| a.parse().ok())
}

/// Runs the binary to completion (within 20 s), without any SERIN_TOKEN of
/// the environment, and returns (exit code, stderr).
fn run_to_end(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .arg("proxy")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SERIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serin proxy {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_input_exits_2_and_a_port_in_use_1_naming_the_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let ok = [
        "--stable",
        "http://127.0.0.1:9",
        "--canary",
        "http://127.0.0.1:9",
    ];
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--stable",
                "https://127.0.0.1:9",
                "--canary",
                "http://127.0.0.1:9",
            ],
            "--stable",
            "http://host:port",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--stable",
                "http://127.0.0.1:9",
                "--canary",
                "127.0.0.1:9",
            ],
            "--canary",
            "http://host:port",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--stable",
                "http://127.0.0.1:9",
                "--canary",
                "http://h:1/api",
            ],
            "--canary",
            "path",
        ),
        (
            [&["--listen", "127.0.0.1:0", "--weight", "150"][..], &ok[..]].concat(),
            "--weight",
            "0 to 100",
        ),
        (
            [
                &["--listen", "127.0.0.1:0", "--weight", "lots"][..],
                &ok[..],
            ]
            .concat(),
            "--weight",
            "0 to 100",
        ),
        (
            [&["--listen", "nowhere"][..], &ok[..]].concat(),
            "--listen",
            "HOST:PORT",
        ),
        (
            [
                &["--listen", "127.0.0.1:0", "--route-header", "x-canary"][..],
                &ok[..],
            ]
            .concat(),
            "--route-header",
            "NAME=VALUE",
        ),
        (
            [
                &["--listen", "127.0.0.1:0", "--route-header", "bad name=1"][..],
                &ok[..],
            ]
            .concat(),
            "--route-header",
            "header name",
        ),
        (
            [
                &["--listen", "127.0.0.1:0", "--route-cookie", "beta"][..],
                &ok[..],
            ]
            .concat(),
            "--route-cookie",
            "NAME=VALUE",
        ),
        (
            [
                &["--listen", "127.0.0.1:0", "--sticky-header", "a b"][..],
                &ok[..],
            ]
            .concat(),
            "--sticky-header",
            "header name",
        ),
        (
            [
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--sticky-header",
                    "a",
                    "--sticky-cookie",
                    "b",
                ][..],
                &ok[..],
            ]
            .concat(),
            "--sticky-cookie",
            "cannot be used with",
        ),
        (
            [
                &["--listen", "127.0.0.1:0", "--upstream-timeout", "soon"][..],
                &ok[..],
            ]
            .concat(),
            "--upstream-timeout",
            "30s",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--stable", "http://127.0.0.1:9"],
            "--canary",
            "required",
        ),
    ];
    for (args, flag, expected) in cases {
        let (code, err) = run_to_end(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
        assert!(
            err.contains(expected),
            "{args:?} should say {expected}: {err}"
        );
    }
    // A port in use is the machine's state, not bad input: exit 1, naming it.
    for (args, flag) in [
        ([&["--listen", &taken][..], &ok[..]].concat(), "--listen"),
        (
            [&["--listen", "127.0.0.1:0", "--admin", &taken][..], &ok[..]].concat(),
            "--admin",
        ),
    ] {
        let (code, err) = run_to_end(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("{flag} {taken}")) && err.contains("address already in use"),
            "{args:?}: {err}"
        );
    }
}

/// A std-thread upstream speaking just enough HTTP/1.1 for the tests:
/// Content-Length request bodies, keep-alive, and two kinds of answers.
/// `GET /version`: `name`. `POST /sink`: reads the body, answers with its size
/// and checksum. `GET /source?N`: answers N generated bytes.
fn start_upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || {
                let _ = serve_upstream_connection(stream, name);
            });
        }
    });
    addr
}

fn serve_upstream_connection(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0u64;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        if target == "/sink" {
            let mut sum = Checksum::default();
            let mut left = length;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = reader.read(&mut buf[..left.min(64 * 1024) as usize])?;
                assert!(n > 0, "body cut short");
                sum.add(&buf[..n]);
                left -= n as u64;
            }
            let text = format!("{} {:x}", sum.len, sum.hash);
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )?;
        } else if let Some(n) = target.strip_prefix("/source?") {
            let n: u64 = n.parse().unwrap();
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")?;
            let mut sent = 0u64;
            while sent < n {
                let chunk = pattern(sent, (n - sent).min(64 * 1024) as usize);
                out.write_all(&chunk)?;
                sent += chunk.len() as u64;
            }
        } else {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Version: {name}\r\n\r\n{name}",
                name.len()
            )?;
        }
    }
}

/// Bytes `offset..offset+len` of the test pattern.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

#[derive(Default)]
struct Checksum {
    len: u64,
    hash: u64,
}

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.len += bytes.len() as u64;
    }
}

/// Reads one response with a Content-Length body; returns (head, body checksum).
fn read_response(reader: &mut BufReader<TcpStream>) -> (String, Checksum, Vec<u8>) {
    let mut head = String::new();
    let mut length = 0u64;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
        head.push_str(&line);
    }
    let mut sum = Checksum::default();
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = length;
    while left > 0 {
        let n = reader
            .read(&mut buf[..left.min(64 * 1024) as usize])
            .unwrap();
        assert!(n > 0, "response cut short");
        sum.add(&buf[..n]);
        if kept.len() < 1 << 20 {
            kept.extend_from_slice(&buf[..n]);
        }
        left -= n as u64;
    }
    (head, sum, kept)
}

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn a_100_mb_body_streams_both_ways_without_growing_the_proxy() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let up = start_upstream("stable");
    let url = format!("http://{up}");
    let proxy = ProxyProcess::start(&["--stable", &url, "--canary", &url], None);
    let (mut w, mut r) = connect(proxy.listen);

    // Warm up the connection pool and buffers, then take the baseline.
    write!(w, "GET /version HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, _, body) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"stable");
    let before = proxy.rss_kib("VmRSS:");

    // Upload: generated on the fly, checked by size and checksum upstream.
    write!(
        w,
        "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\n\r\n"
    )
    .unwrap();
    let mut want = Checksum::default();
    let mut sent = 0u64;
    while sent < SIZE {
        let chunk = pattern(sent, (SIZE - sent).min(256 * 1024) as usize);
        want.add(&chunk);
        w.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    let (head, _, body) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{SIZE} {:x}", want.hash)
    );

    // Download: generated by the upstream, checked here.
    write!(w, "GET /source?{SIZE} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, got, _) = read_response(&mut r);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!((got.len, got.hash), (want.len, want.hash));

    // The peak resident size over both transfers, against the baseline: a
    // proxy that buffered a body would have grown by 100 MB.
    let peak = proxy.rss_kib("VmHWM:");
    let growth_kib = peak.saturating_sub(before);
    eprintln!("proxy VmRSS before {before} KiB, peak {peak} KiB, growth {growth_kib} KiB");
    assert!(
        growth_kib < 8 * 1024,
        "proxy grew by {growth_kib} KiB while streaming 2 x 100 MB"
    );
}

fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let (mut w, mut r) = connect(addr);
    w.write_all(request.as_bytes()).unwrap();
    let (head, _, body) = read_response(&mut r);
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn serves_split_routes_weight_and_metrics() {
    let stable = format!("http://{}", start_upstream("stable"));
    let canary = format!("http://{}", start_upstream("canary"));
    let proxy = ProxyProcess::start(
        &[
            "--stable",
            &stable,
            "--canary",
            &canary,
            "--weight",
            "50",
            "--route-header",
            "x-canary=always",
            "--route-cookie",
            "beta=no=stable",
            "--name",
            "checkout",
        ],
        Some("127.0.0.1:0"),
    );
    let admin = proxy.admin.unwrap();
    let (mut w, mut r) = connect(proxy.listen);
    let mut canaries = 0;
    for _ in 0..100 {
        write!(w, "GET /version HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let (_, _, body) = read_response(&mut r);
        canaries += usize::from(body == b"canary");
    }
    assert_eq!(canaries, 50);
    let (_, body) = http(
        proxy.listen,
        "GET /version HTTP/1.1\r\nHost: t\r\nX-Canary: always\r\n\r\n",
    );
    assert_eq!(body, "canary");
    let (_, body) = http(
        proxy.listen,
        "GET /version HTTP/1.1\r\nHost: t\r\nX-Canary: always\r\nCookie: beta=no\r\n\r\n",
    );
    assert_eq!(body, "canary", "--route-header routes come first");

    let (head, body) = http(admin, "GET /weight HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.trim(), r#"{"weight":50}"#);
    let put = r#"{"weight":0}"#;
    let (head, body) = http(
        admin,
        &format!(
            "PUT /weight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{put}",
            put.len()
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.trim(), put);
    let (_, body) = http(proxy.listen, "GET /version HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(body, "stable");
    let (_, body) = http(
        proxy.listen,
        "GET /version HTTP/1.1\r\nHost: t\r\nCookie: beta=no\r\n\r\n",
    );
    assert_eq!(body, "stable");

    let (head, metrics) = http(admin, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // 100 split + 2 routed canary; 50 split + 2 stable.
    for (series, want) in [
        (
            r#"serin_requests_total{rollout="checkout",version="canary",code="2xx"}"#,
            "52",
        ),
        (
            r#"serin_requests_total{rollout="checkout",version="stable",code="2xx"}"#,
            "52",
        ),
        (
            r#"serin_request_duration_seconds_count{rollout="checkout",version="canary"}"#,
            "52",
        ),
        (r#"serin_canary_weight{rollout="checkout"}"#, "0"),
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"));
        assert_eq!(line.rsplit(' ').next().unwrap(), want, "{line}");
    }
}

/// `PUT /weight` on `admin` with `{"weight":N}` and an optional bearer token:
/// the response head.
fn put_weight(admin: SocketAddr, weight: u32, token: Option<&str>) -> String {
    put_weight_as(admin, &admin.to_string(), weight, token)
}

/// [`put_weight`] with `host` as the Host header.
fn put_weight_as(admin: SocketAddr, host: &str, weight: u32, token: Option<&str>) -> String {
    let body = format!("{{\"weight\":{weight}}}");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let (head, _) = http(
        admin,
        &format!(
            "PUT /weight HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    head
}

#[test]
fn a_non_loopback_admin_address_needs_a_token() {
    let ok = [
        "--listen",
        "127.0.0.1:0",
        "--stable",
        "http://127.0.0.1:9",
        "--canary",
        "http://127.0.0.1:9",
    ];
    for admin in ["0.0.0.0:0", "[::]:0"] {
        let (code, err) = run_to_end(&[&ok[..], &["--admin", admin]].concat());
        assert_eq!(code, 2, "--admin {admin}: {err}");
        assert!(
            err.contains("--admin") && err.contains("--token") && err.contains("non-loopback"),
            "--admin {admin}: {err}"
        );
    }
    for blank in ["", "   ", "\t", "two words"] {
        let (code, err) =
            run_to_end(&[&ok[..], &["--admin", "0.0.0.0:0", "--token", blank]].concat());
        assert_eq!(code, 2, "--token {blank:?}: {err}");
        assert!(
            err.contains("--token: expected"),
            "--token {blank:?}: {err}"
        );
    }

    // With a token it starts, and the weight changes only with the token.
    let proxy = ProxyProcess::start(
        &[&ok[2..], &["--token", "s3cret"]].concat(),
        Some("0.0.0.0:0"),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], proxy.admin.unwrap().port()));
    assert!(put_weight(admin, 30, None).starts_with("HTTP/1.1 401"));
    assert!(put_weight(admin, 30, Some("wrong!")).starts_with("HTTP/1.1 401"));
    let (_, weight) = http(admin, "GET /weight HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(weight.trim(), r#"{"weight":0}"#);
    // A page that rebinds its DNS name to this machine sends that name as
    // Host: refused, token or not (found by an outside breaker).
    for token in [None, Some("s3cret")] {
        let head = put_weight_as(admin, "evil.example:9901", 30, token);
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    }
    let (_, weight) = http(admin, "GET /weight HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(weight.trim(), r#"{"weight":0}"#);
    assert!(put_weight(admin, 30, Some("s3cret")).starts_with("HTTP/1.1 200"));
    let (_, weight) = http(admin, "GET /weight HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(weight.trim(), r#"{"weight":30}"#);
    drop(proxy);
}
