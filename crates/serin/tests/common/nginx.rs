//! A real nginx for tests: its own prefix in a temp dir, a free port, killed
//! on Drop. Needs the `nginx` binary (scripts/install-test-deps.sh installs it).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::rollout::Rollout;

/// A running nginx master with a main config that includes `conf.d/*.conf`.
pub struct Nginx {
    child: Child,
    /// The prefix directory (config, logs, pid, temp paths).
    pub dir: PathBuf,
    _temp: tempfile::TempDir,
}

/// A port that was free a moment ago. Picked below the kernel's ephemeral
/// range (32768 and up by default), so servers that bind `:0` and client
/// sockets never take it between this check and the real bind; each call
/// in a process tries the next port, so two picks never meet either.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Test binaries run one after another; the pid spreads their starts.
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

pub fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

impl Nginx {
    /// Starts nginx in the foreground with an empty `conf.d/`.
    pub fn start() -> Nginx {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let user = if unsafe_is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             include {d}/conf.d/*.conf;\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_bin())
            .args([
                "-p",
                &dir.display().to_string(),
                "-c",
                &dir.join("nginx.conf").display().to_string(),
            ])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (is it installed? scripts/install-test-deps.sh)");
        let nginx = Nginx {
            child,
            dir,
            _temp: temp,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nginx.dir.join("nginx.pid").exists() {
            assert!(
                Instant::now() < deadline,
                "nginx did not write its pid file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// `nginx -p DIR -c DIR/nginx.conf` plus `extra`, as an argv.
    pub fn command(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            nginx_bin().to_string(),
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            self.dir.join("nginx.conf").display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// The configuration test most rollouts use: `nginx -t -q`.
    pub fn test_command(&self) -> String {
        self.command(&["-t", "-q"]).join(" ")
    }

    /// The reload: `nginx -s reload`.
    pub fn reload_command(&self) -> String {
        self.command(&["-s", "reload"]).join(" ")
    }

    /// The nginx-provider rollout `name` proxied on `port`: include
    /// `conf.d/serin-NAME.conf`, access log `logs/serin-NAME.json`, `test` as
    /// the configuration test, [`Nginx::reload_command`] as the reload.
    pub fn rollout(
        &self,
        name: &str,
        port: u16,
        stable: SocketAddr,
        canary: SocketAddr,
        test: &str,
    ) -> Rollout {
        Rollout::new(name, local(port), stable, canary).traffic(&format!(
            "  provider: nginx
  nginx:
    include: {include}
    test: {test}
    reload: {reload}
    accessLog: {log}
",
            include = self.include(&format!("serin-{name}")).display(),
            reload = self.reload_command(),
            log = self.dir.join(format!("logs/serin-{name}.json")).display(),
        ))
    }

    /// Where serin's include file goes.
    pub fn include(&self, name: &str) -> PathBuf {
        self.dir.join("conf.d").join(format!("{name}.conf"))
    }

    /// The error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGKILL of the master would orphan its workers: ask it to stop with
    /// SIGTERM (they go with it), and kill only if it does not. Not `nginx
    /// -s stop`, which parses the configuration first and so fails when a
    /// test left it broken, orphaning the workers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process runs as root (nginx then needs `user root;` to let its
/// workers write into a root-owned temp dir).
fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// An address on loopback with the given port.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
