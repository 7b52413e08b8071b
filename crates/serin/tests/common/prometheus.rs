//! A real Prometheus for tests: Debian's `prometheus` binary on a free port
//! of 127.0.0.1, its config and TSDB in a temp dir, scraping the given
//! targets every second. Killed on Drop (its data is thrown away anyway).
//! scripts/install-test-deps.sh installs the binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::{free_port, local};

/// A running Prometheus.
pub struct Prometheus {
    child: Option<Child>,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn prometheus_bin() -> &'static str {
    if Path::new("/usr/bin/prometheus").exists() {
        "/usr/bin/prometheus"
    } else {
        "prometheus"
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`)
    /// every second, and waits (bounded) until it is ready. The free port is
    /// only free a moment ago, so another test may take it first: then
    /// Prometheus exits ("address already in use") and it starts again on
    /// another port (at most five tries).
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: serin-test\n    static_configs:\n      - targets: [{list}]\n"
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let mut p = Prometheus {
            child: None,
            addr: local(free_port()),
            dir,
        };
        for _ in 0..5 {
            p.addr = local(free_port());
            let mut child = Command::new(prometheus_bin())
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    p.dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={}", p.addr))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(p.dir.path().join("prometheus.log")).unwrap(),
                ))
                .stdin(Stdio::null())
                .spawn()
                .expect("start prometheus (is it installed? scripts/install-test-deps.sh)");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = p.log();
                    assert!(
                        log.contains("address already in use"),
                        "Prometheus exited ({status}): {log}"
                    );
                    break;
                }
                // Only Prometheus says this; another test's server on the
                // same port would not.
                if let Some((200, body)) = get(p.addr, "/-/ready")
                    && body.contains("Prometheus Server is Ready")
                {
                    p.child = Some(child);
                    return p;
                }
                assert!(
                    Instant::now() < deadline,
                    "Prometheus not ready on {}: {}",
                    p.addr,
                    p.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("Prometheus found no free port in five tries: {}", p.log())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query returning one series, if it does.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let q: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (status, body) = get(self.addr, &format!("/api/v1/query?query={q}"))?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits (bounded by `limit`) until `promql` returns a value of at
    /// least `min`; panics with the log if it does not.
    pub fn wait_for(&self, promql: &str, min: f64, limit: Duration) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = self.value(promql)
                && v >= min
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "`{promql}` did not reach {min} within {limit:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops Prometheus now (SIGKILL, as a crash or a lost host would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP/1.0 GET on `addr`: status and body, or None if it cannot
/// connect or the answer is not HTTP. Bounded by short timeouts.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
