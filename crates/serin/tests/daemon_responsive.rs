//! `serin serve` stays responsive while a rollout talks to the outside: its
//! `/metrics` and `GET /api/v1/rollouts` answer while another rollout's
//! proxy drains a request the test holds open. Which comes first is
//! decided by conditions (the drain cannot end before the test lets the
//! held request finish), never by a clock.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::http::{get, http, wait_until_closed};
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, serin_serve, wait_for_port};

/// The longest any one step of these tests may wait (a safety bound: each
/// step ends on a condition well before it).
const BOUND: Duration = Duration::from_secs(90);

/// An upstream that holds every request it gets until [`Held::release`],
/// then answers 200. Each request's arrival is reported on `arrived`.
struct Held {
    addr: SocketAddr,
    arrived: mpsc::Receiver<()>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Held {
    fn start() -> Held {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, arrived) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let open = gate.clone();
        std::thread::spawn(move || {
            // A few connections per test; bounded.
            for conn in listener.incoming().take(32) {
                let Ok(mut conn) = conn else { continue };
                let (tx, open) = (tx.clone(), open.clone());
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(BOUND)).unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = tx.send(());
                    let (lock, cvar) = &*open;
                    let released = cvar
                        .wait_timeout_while(lock.lock().unwrap(), BOUND, |r| !*r)
                        .unwrap();
                    drop(released);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nheld",
                    );
                });
            }
        });
        Held {
            addr,
            arrived,
            gate,
        }
    }

    /// Waits until a request has reached the upstream.
    fn wait_arrival(&self) {
        self.arrived
            .recv_timeout(BOUND)
            .expect("a request through the proxy reaches the upstream");
    }

    /// Lets every held request (and every later one) be answered.
    fn release(&self) {
        let (lock, cvar) = &*self.gate;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }
}

/// A request as written, its status (0 when the connection ends without
/// an answer), waiting up to [`BOUND`] for it: slower than the daemon's
/// 30 s drain, so that a request that waited for a drain still answers.
fn slow_request(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `serin serve` without a token on `api`, answering `/healthz`.
fn serve(api: SocketAddr, state: &Path) -> Proc {
    let mut cmd = serin_serve(api, state);
    cmd.env_remove("SERIN_TOKEN");
    let p = Proc::spawn(cmd, false);
    wait_for_port(api);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(api, "/healthz").status != 200 {
        assert!(Instant::now() < deadline, "daemon not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// Registers a builtin-proxy rollout on `listen` whose stable upstream is
/// `up` (all its traffic: no canary is deployed).
fn register(api: SocketAddr, name: &str, listen: SocketAddr, up: SocketAddr) {
    let yaml = Rollout::new(name, listen, up, local(free_port()))
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .yaml();
    let a = http(
        api,
        "POST",
        "/api/v1/rollouts",
        &[("Content-Type", "application/yaml")],
        &yaml,
    );
    assert_eq!(a.status, 201, "register {name}: {}", a.body);
    wait_for_port(listen);
}

/// A request through `proxy` held open by the upstream, on its own thread;
/// its status arrives on the returned channel when it ends.
fn hold_request(proxy: SocketAddr, up: &Held) -> mpsc::Receiver<u16> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(slow_request(proxy, "GET", "/"));
    });
    up.wait_arrival();
    rx
}

/// What the test waits for, in the order it happens.
enum Event {
    /// `DELETE` answered (the drain is over).
    CleanedUp(u16),
    /// `/metrics` and the rollout list answered, with their statuses and bodies.
    Answered(u16, String, u16, String),
}

/// While rollout `draining` is cleaned up and its proxy drains a request
/// the test holds open, `/metrics` and `GET /api/v1/rollouts` answer, with
/// the other rollout in them; only then does the test let the request
/// finish, and the cleanup ends after it. (A daemon that keeps its registry
/// locked across the drain answers only once the drain gives up, after the
/// cleanup.)
#[test]
fn metrics_and_the_rollout_list_answer_while_a_rollout_drains() {
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    let _daemon = serve(api, &dir.path().join("state"));
    let up = Held::start();
    let (draining, steady) = (local(free_port()), local(free_port()));
    register(api, "draining", draining, up.addr);
    register(api, "steady", steady, local(free_port()));
    let held = hold_request(draining, &up);

    let (tx, events) = mpsc::channel();
    let cleaned = tx.clone();
    std::thread::spawn(move || {
        let status = slow_request(api, "DELETE", "/api/v1/rollouts/draining");
        let _ = cleaned.send(Event::CleanedUp(status));
    });
    // The cleanup has reached the drain: the proxy no longer accepts.
    wait_until_closed(draining);
    std::thread::spawn(move || {
        let m = get(api, "/metrics");
        let l = get(api, "/api/v1/rollouts");
        let _ = tx.send(Event::Answered(m.status, m.body, l.status, l.body));
    });

    match events.recv_timeout(BOUND).expect("an event") {
        Event::Answered(m_status, metrics, l_status, list) => {
            assert_eq!(m_status, 200, "/metrics: {metrics}");
            assert!(
                metrics.contains("serin_rollout_phase{rollout=\"steady\""),
                "{metrics}"
            );
            assert_eq!(l_status, 200, "/api/v1/rollouts: {list}");
            assert!(list.contains("\"name\":\"steady\""), "{list}");
        }
        Event::CleanedUp(status) => panic!(
            "the cleanup ({status}) ended before /metrics and the rollout list answered: \
             they waited for the drain"
        ),
    }
    assert!(
        held.try_recv().is_err(),
        "the held request is still open: the drain was in progress"
    );

    up.release();
    assert_eq!(
        held.recv_timeout(BOUND).expect("the held request ends"),
        200,
        "the drain lets the held request finish"
    );
    match events.recv_timeout(BOUND).expect("the cleanup ends") {
        Event::CleanedUp(status) => assert_eq!(status, 204),
        Event::Answered(..) => unreachable!("answered once"),
    }
    assert_eq!(get(api, "/api/v1/rollouts/draining").status, 404);
    assert_eq!(get(api, "/api/v1/rollouts/steady").status, 200);
}

/// Whether nothing accepts connections on `addr` any more.
fn closed(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

/// On SIGTERM the daemon stops its rollouts at once: both proxies stop
/// accepting (their drains begin) while both requests the test holds are
/// still open, so the two drains overlap and shutting down takes about one
/// drain. Then the requests finish and the daemon exits 0. (A daemon that
/// stops rollouts one after another keeps the second proxy accepting until
/// the first drain gives up on its held request, which ends it first.)
#[test]
fn on_sigterm_rollouts_drain_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    let daemon = serve(api, &dir.path().join("state"));
    let up = Held::start();
    let (a, b) = (local(free_port()), local(free_port()));
    register(api, "a", a, up.addr);
    register(api, "b", b, up.addr);
    let held_a = hold_request(a, &up);
    let held_b = hold_request(b, &up);

    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + BOUND;
    loop {
        for (name, held) in [("a", &held_a), ("b", &held_b)] {
            if let Ok(status) = held.try_recv() {
                panic!(
                    "{name}'s held request ended ({status}) before both proxies stopped \
                     accepting: the rollouts were stopped one after another"
                );
            }
        }
        if closed(a) && closed(b) {
            break;
        }
        assert!(Instant::now() < deadline, "the proxies still accept");
        std::thread::sleep(Duration::from_millis(25));
    }

    up.release();
    for held in [held_a, held_b] {
        assert_eq!(
            held.recv_timeout(BOUND).expect("the held request ends"),
            200
        );
    }
    let out = daemon.wait_output(BOUND);
    assert!(
        out.status.success(),
        "serin serve exits 0: {:?}",
        out.status
    );
}

/// A closed terminal (SIGHUP) stops the daemon as SIGTERM does, said in
/// its log, with `api.json` removed: it used to die at once, silently,
/// leaving the file that names it behind.
#[test]
fn on_sighup_the_daemon_stops_as_on_sigterm_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = local(free_port());
    let mut cmd = serin_serve(api, &state);
    cmd.env_remove("SERIN_TOKEN");
    let daemon = Proc::spawn(cmd, true);
    wait_for_port(api);
    let published = state.join("api.json");
    let deadline = Instant::now() + BOUND;
    while !published.exists() {
        assert!(Instant::now() < deadline, "no api.json");
        std::thread::sleep(Duration::from_millis(25));
    }
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let out = daemon.wait_output(BOUND);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "serin serve exits 0: {:?}\n{log}",
        out.status
    );
    assert!(
        log.contains("SIGHUP (the terminal closed?): serin serve stops"),
        "{log}"
    );
    assert!(!published.exists(), "api.json is left behind");
}

/// The stored phase of `name` as the API reports it.
fn phase(api: SocketAddr, name: &str) -> String {
    let r = get(api, &format!("/api/v1/rollouts/{name}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["phase"].as_str().unwrap_or_default().to_string()
}

/// A cleanup goes to its end when its client leaves halfway (a timeout, a
/// Ctrl-C), and writes 0 % before it drains: a `kill -9` in the drain
/// restarts the rollout rolled back, never at the weight it had. (Found by
/// an outside breaker: the dropped handler left a stored rollout nobody
/// controlled, and a crash in the drain brought 50 % back.)
#[test]
fn a_cleanup_ends_when_its_client_leaves_and_a_crash_in_its_drain_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = local(free_port());
    let mut daemon = serve(api, &state);
    let up = Held::start();
    let leaving = local(free_port());
    register(api, "leaving", leaving, up.addr);

    // The client asks for the cleanup, and goes away once it has begun.
    let held = hold_request(leaving, &up);
    let mut client = TcpStream::connect_timeout(&api, Duration::from_secs(5)).unwrap();
    let req = format!(
        "DELETE /api/v1/rollouts/leaving HTTP/1.1\r\nHost: {api}\r\nContent-Length: 0\r\n\r\n"
    );
    client.write_all(req.as_bytes()).unwrap();
    wait_until_closed(leaving);
    assert_eq!(
        phase(api, "leaving"),
        "RolledBack",
        "0 % is written before the drain"
    );
    drop(client);
    up.release();
    assert_eq!(
        held.recv_timeout(BOUND).expect("the held request ends"),
        200
    );
    let deadline = Instant::now() + BOUND;
    while get(api, "/api/v1/rollouts/leaving").status != 404 {
        assert!(
            Instant::now() < deadline,
            "the cleanup whose client left never ended: {}",
            get(api, "/api/v1/rollouts/leaving").body
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // kill -9 while a cleanup drains; the restart finds it rolled back.
    let up = Held::start();
    let crashing = local(free_port());
    register(api, "crashing", crashing, up.addr);
    let _held = hold_request(crashing, &up);
    std::thread::spawn(move || slow_request(api, "DELETE", "/api/v1/rollouts/crashing"));
    wait_until_closed(crashing);
    daemon.child.kill().unwrap();
    let _ = daemon.child.wait();
    let _daemon = serve(api, &state);
    assert_eq!(
        phase(api, "crashing"),
        "RolledBack",
        "a cleanup cut short by a crash restarts at 0 %"
    );
}
