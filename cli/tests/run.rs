//! `trellis run` and `trellis proxy-status` as a user runs them: real `trellis` and `trellisd`
//! processes, a folder of YAML, and a real proxy discovery client connecting to the control plane.
//!
//! `trellisd` belongs to another crate: `trellis-test-support` builds it into this target folder, next
//! to `trellis`, where `trellis run` looks first.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use trellis_api::proxy_config::{Node, ProxyMode};
use trellis_api::push::ProxyStatusList;
use trellis_proxy::discovery;
use trellis_proxy::drain::Drain;
use trellis_proxy::metrics::Metrics;
use trellis_proxy::state::Store;

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(30);

const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: inventory, namespace: shop}
spec:
  hosts: [inventory.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: inventory}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: inventory-v1, namespace: shop}
spec: {address: 127.0.1.2, serviceAccount: inventory, labels: {app: inventory, version: v1}}
";

/// A loopback address of this test binary run: `127.79.<pid>.<host>`.
fn loopback(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 79, (std::process::id() % 256) as u8, host))
}

/// Builds `trellisd` next to `trellis` (once per test binary).
fn build_trellisd() {
    let trellisd = trellis_test_support::workspace_binary("trellisd");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_trellis")).parent().expect("the binaries' folder");
    assert_eq!(trellisd.parent(), Some(bin_dir), "trellisd is built next to trellis");
}

fn trellis(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trellis"));
    command.args(args).env("TRELLIS_LOG", "warn").stdin(Stdio::null());
    command
}

/// A running `trellis run`, killed if the test ends early.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    /// Kills `trellis run`; the `trellisd` it started stops when its input (held by `trellis`) closes.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(folder: &Path, listen: SocketAddr) -> Running {
        let mut child = trellis(&["run", "-f"])
            .arg(folder)
            .args(["--listen", &listen.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start trellis run");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Everything printed up to the first line containing `needle`.
    fn output_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("trellis run never printed {needle:?}; it printed:\n{}", self.seen.join("\n")),
            }
        }
        self.seen.join("\n")
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the exit code.
    fn interrupt(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for trellis run") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "trellis run did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn text(output: &Output) -> (i32, String, String) {
    let code = output.status.code().expect("exited normally");
    (code, String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn trellis_run_serves_the_folder_prints_each_sidecar_and_proxy_status_lists_a_connected_proxy() {
    build_trellisd();
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("mesh.yaml"), MESH).expect("write the mesh");
    let listen = SocketAddr::new(loopback(1), 15012);
    let mut running = Running::start(folder.path(), listen);
    let printed = running.output_until("HTTP_PROXY=");
    assert!(printed.contains(&format!("trellisd serves the mesh in {} on {listen}", folder.path().display())));
    assert!(printed.contains(&format!("Proxy status: trellis proxy-status --control-plane {listen}")), "{printed}");
    assert!(printed.contains("shop/inventory-v1 (127.0.1.2, service account inventory)"), "{printed}");
    assert!(printed.contains("trellis-proxy sidecar --discovery-address"), "{printed}");
    assert!(printed.contains(&format!("--discovery-address {listen}")), "{printed}");
    assert!(printed.contains("--inbound-target 127.0.1.2:18080"), "{printed}");
    assert!(printed.contains("process: listen on 127.0.1.2:18080"), "{printed}");
    assert!(printed.contains("HTTP_PROXY=http://127.0.1.2:15080"), "{printed}");

    let control_plane = listen.to_string();
    let (code, stdout, stderr) =
        text(&trellis(&["proxy-status", "--control-plane", &control_plane]).output().expect("run"));
    assert_eq!((code, stdout.as_str()), (0, "No proxy is connected.\n"), "{stderr}");

    // A real proxy's discovery client, as the printed sidecar command runs it.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (store, drain) = (Arc::new(Store::default()), Drain::new());
    let node = Node {
        id: "inventory-v1.shop".to_owned(),
        namespace: "shop".to_owned(),
        service_account: "inventory".to_owned(),
        identity: String::new(),
        labels: [("app", "inventory"), ("version", "v1")].map(|(k, v)| (k.to_owned(), v.to_owned())).into(),
    };
    let hello = discovery::hello(node, ProxyMode::Sidecar, vec!["127.0.1.2".parse().expect("an IP")]);
    // Over TLS, verified with the root the printed command names (--discovery-ca).
    let roots = folder.path().join(".trellis-ca").join("root-cert.pem");
    let target = discovery::Target::parse(&control_plane).expect("an address").with_ca(Some(roots)).expect("roots");
    assert!(target.uses_tls());
    let following =
        runtime.spawn(discovery::run(target, hello, store.clone(), Arc::new(Metrics::new()), drain.watch()));
    let deadline = Instant::now() + PATIENCE;
    let table = loop {
        let (code, stdout, stderr) =
            text(&trellis(&["proxy-status", "--control-plane", &control_plane]).output().expect("run"));
        assert_eq!(code, 0, "{stderr}");
        if stdout.contains("SYNCED") {
            break stdout;
        }
        assert!(Instant::now() < deadline, "the proxy never showed as SYNCED:\n{stdout}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PROXY", "NAMESPACE", "MODE", "CONNECTED", "SENT", "ACKED", "STATUS"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((row[0], row[1], row[2], row[6]), ("inventory-v1.shop", "shop", "sidecar", "SYNCED"), "{table}");
    assert_eq!(row[4], row[5], "the version sent is the version acknowledged: {table}");
    let inbound: Vec<u16> =
        store.current().expect("a config").config.inbound.iter().map(|listener| listener.port).collect();
    assert_eq!(inbound, [8080], "translated for the workload it says it is");

    let output = trellis(&["proxy-status", "--control-plane", &format!("http://{control_plane}"), "-o", "json"])
        .output()
        .expect("run");
    let listed: ProxyStatusList = serde_json::from_slice(&output.stdout).expect("the status list as JSON");
    assert_eq!(listed.proxies.len(), 1);
    assert!(listed.proxies[0].in_sync);

    assert_eq!(running.interrupt(), Some(0), "Ctrl-C stops trellis run cleanly");
    let (code, _, stderr) = text(&trellis(&["proxy-status", "--control-plane", &control_plane]).output().expect("run"));
    assert_eq!(code, 1, "trellisd stopped with trellis run");
    assert!(stderr.contains("cannot reach trellisd"), "{stderr}");
    assert!(store.is_loaded(), "the proxy keeps its config without the control plane");
    drain.start();
    runtime.block_on(following).expect("the discovery task").expect("a valid address");
}

#[test]
fn trellis_run_without_a_folder_is_an_error_naming_it() {
    let missing = tempfile::tempdir().expect("tempdir").path().join("nowhere");
    let output = trellis(&["run", "-f"]).arg(&missing).output().expect("run");
    let (code, _, stderr) = text(&output);
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("{} is not a folder", missing.display())), "{stderr}");
}

#[test]
fn trellis_run_says_how_to_build_trellisd_when_it_cannot_find_it() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_trellis")).parent().expect("the binaries' folder");
    let alone = tempfile::tempdir_in(bin_dir).expect("tempdir beside the binaries");
    let copy = alone.path().join("trellis");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_trellis"), &copy).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_trellis"), &copy).expect("copy trellis");
    }
    let folder = tempfile::tempdir().expect("tempdir");
    let output = Command::new(&copy).args(["run", "-f"]).arg(folder.path()).env("PATH", "").output().expect("run");
    let (code, _, stderr) = text(&output);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot find trellisd next to"), "{stderr}");
    assert!(stderr.contains("cargo build -p trellis-controlplane --bin trellisd"), "{stderr}");
}

#[test]
fn proxy_status_names_the_control_plane_it_cannot_reach() {
    let nobody = SocketAddr::new(loopback(9), 15012).to_string();
    let (code, stdout, stderr) = text(&trellis(&["proxy-status", "--control-plane", &nobody]).output().expect("run"));
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.starts_with(&format!("trellis proxy-status: cannot reach trellisd at http://{nobody}/v1/proxies")));
}

#[test]
fn trellisd_does_not_outlive_a_killed_trellis_run() {
    build_trellisd();
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("mesh.yaml"), MESH).expect("write the mesh");
    let listen = SocketAddr::new(loopback(2), 15012);
    let mut running = Running::start(folder.path(), listen);
    running.output_until("Start each workload");
    assert!(std::net::TcpStream::connect(listen).is_ok(), "trellisd listens");
    running.child.kill().expect("SIGKILL trellis run");
    let _ = running.child.wait();
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(listen).is_ok() {
        assert!(Instant::now() < deadline, "trellisd still listens after trellis run was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
