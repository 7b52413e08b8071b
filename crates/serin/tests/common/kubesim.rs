//! kubesim: an in-memory Kubernetes API server over TLS with a bearer
//! token (discovery, CRDs with status subresources and printer columns,
//! server-side apply, resourceVersion preconditions, a Deployment
//! controller, ...), run as a subprocess on 127.0.0.1.
//!
//! `tests/kubesim/kubesim.py` is a copy of the project's shared test tool
//! (kubesim.py, with its KUBESIM.md), kept here so the tests need nothing
//! outside the repository; it needs python3 and the openssl CLI. Its
//! command line writes a kubeconfig and, last, `ready.json`. This copy also
//! serves ServiceAccounts, the RBAC kinds and PodDisruptionBudgets as plain
//! stored objects (RBAC is not enforced), so a whole install applies
//! (`k8s_packaging.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running sim; stopped when dropped.
pub struct KubeSim {
    child: Child,
    dir: tempfile::TempDir,
    /// `ready.json`: api, prometheus, kubeconfig, admin, token, ca, namespace, ...
    pub info: Value,
}

/// How long the sim may take to start (it takes about 0.3 s).
const START_LIMIT: Duration = Duration::from_secs(30);

impl KubeSim {
    /// Starts `kubesim.py --dir DIR ARGS... --exit-on-stdin-eof`.
    pub fn start(args: &[&str]) -> KubeSim {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubesim/kubesim.py");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("sim.log")).expect("the sim's log");
        let child = Command::new("python3")
            .arg(&script)
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("the sim's log"))
            .stderr(log)
            .spawn()
            .expect("python3 runs kubesim.py");
        let mut sim = KubeSim {
            child,
            dir,
            info: Value::Null,
        };
        let ready = sim.dir.path().join("ready.json");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read(&ready)
                && let Ok(info) = serde_json::from_slice::<Value>(&text)
            {
                sim.info = info;
                return sim;
            }
            if let Ok(Some(status)) = sim.child.try_wait() {
                panic!("kubesim exited with {status}:\n{}", sim.log());
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "kubesim not ready after {START_LIMIT:?}:\n{}",
                sim.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the sim printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }

    /// The kubeconfig it wrote (server, CA, token, namespace).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A kube client for it.
    pub async fn client(&self) -> kube::Client {
        let config =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("its kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .expect("a client configuration");
        kube::Client::try_from(config).expect("a client")
    }

    /// `kubectl ARGS...` against it, with a cache of its own.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
