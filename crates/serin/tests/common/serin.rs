//! Running the real `serin` binary in tests: processes killed on Drop, ports
//! that answer before a test goes on, and bounded waits.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::nginx::free_port;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_serin");

/// A `serin` command with quiet logs.
pub fn serin() -> Command {
    let mut c = Command::new(BIN);
    c.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    c
}

/// A child process killed (SIGKILL) on Drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Spawns `cmd` with output discarded (or piped when `capture`).
    pub fn spawn(mut cmd: Command, capture: bool) -> Proc {
        let (out, err) = if capture {
            (Stdio::piped(), Stdio::piped())
        } else {
            (Stdio::null(), Stdio::null())
        };
        let child = cmd
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn serin");
        Proc { child }
    }

    /// SIGKILL now, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit and returns its output.
    pub fn wait_output(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("process did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `serin demo-app` on a free port; returns it with its address.
pub fn demo_app(version: &str, flags: &[&str]) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = serin();
    cmd.args([
        "demo-app",
        "--listen",
        &addr.to_string(),
        "--version",
        version,
    ])
    .args(flags);
    let p = Proc::spawn(cmd, false);
    wait_for_port(addr);
    (p, addr)
}

/// `serin load URL --rps N --duration D` in the background.
pub fn load(url: &str, rps: u32, duration: &str) -> Proc {
    let mut cmd = serin();
    cmd.args([
        "load",
        url,
        "--rps",
        &rps.to_string(),
        "--duration",
        duration,
    ]);
    Proc::spawn(cmd, false)
}

/// `serin run FILE` with its state under `dir/state`.
pub fn serin_run(file: &Path, dir: &Path) -> Command {
    let mut cmd = serin();
    cmd.args([
        "run",
        &file.display().to_string(),
        "--state-dir",
        &dir.join("state").display().to_string(),
    ]);
    cmd
}

/// `serin serve --listen API --state-dir STATE`; the caller sets the token
/// (or removes it) and any other flags.
pub fn serin_serve(api: SocketAddr, state: &Path) -> Command {
    let mut cmd = serin();
    cmd.args([
        "serve",
        "--listen",
        &api.to_string(),
        "--state-dir",
        &state.display().to_string(),
    ]);
    cmd
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Output as text, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
