//! The Kubernetes manifests' daemon answers clients in the cluster: `serin
//! serve` started with the Deployment's own arguments (its address and state
//! directory moved to 127.0.0.1 and a temporary directory; the cluster a
//! kubesim with the CRD, the Downward API's variables set) answers requests
//! that name it by the Service's DNS names or its cluster IP, and still
//! refuses other names.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::kubesim::KubeSim;
use common::nginx::{free_port, local};
use common::serin::{Proc, serin, wait_for_port};
use serde_json::Value;

/// The status of `GET path` sent to `addr` with `Host: host`.
fn status(addr: SocketAddr, path: &str, host: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"))
}

/// The documents of `deploy/kubernetes/deployment.yaml`.
fn manifests() -> Vec<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/deployment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

#[test]
fn the_deployments_daemon_answers_by_the_services_dns_names() {
    let docs = manifests();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let service = of("Service");
    let name = service["metadata"]["name"].as_str().unwrap().to_string();
    let namespace = service["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let deployment = of("Deployment");
    assert_eq!(deployment["metadata"]["namespace"], namespace.as_str());
    let mut args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "serve");

    // The same daemon, on 127.0.0.1 with its state in a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let api = local(free_port());
    for (flag, value) in [
        ("--listen", api.to_string()),
        (
            "--state-dir",
            dir.path().join("state").display().to_string(),
        ),
    ] {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("the Deployment passes {flag}"));
        args[i + 1] = value;
    }
    // The cluster it controls (`serve --kubernetes`), with the CRD installed.
    let sim = KubeSim::start(&[]);
    let crd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/crd.yaml");
    let out = sim.kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = serin();
    cmd.args(&args)
        .env("SERIN_TOKEN", "t0ken")
        .env("KUBECONFIG", sim.kubeconfig())
        .env("POD_NAMESPACE", &namespace)
        .env("POD_NAME", "serin-0");
    let _daemon = Proc::spawn(cmd, false);
    wait_for_port(api);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(api, "/healthz", "localhost") != 200 {
        assert!(Instant::now() < deadline, "daemon not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every DNS name of the Service, as clients in the cluster write it.
    for host in [
        name.clone(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ] {
        assert_eq!(
            status(api, "/api/v1/rollouts", &format!("{host}:{port}")),
            200,
            "Host {host}:{port}"
        );
    }
    // The Service's cluster IP (whatever the cluster assigns) and the pod's
    // address: an address cannot be re-pointed, it is accepted.
    for host in ["10.96.0.10:9900", "10.244.1.7:9900"] {
        assert_eq!(status(api, "/api/v1/rollouts", host), 200, "Host {host}");
    }
    // Other names are still refused (DNS rebinding).
    for host in ["evil.example:9900", "serin.evil.example:9900"] {
        assert_eq!(status(api, "/api/v1/rollouts", host), 403, "Host {host}");
    }
}
