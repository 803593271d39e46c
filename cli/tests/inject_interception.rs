//! `trellis inject` on the tutorial's order-service, then `trellis-proxy init` run with exactly the
//! injected init container's arguments, user and capabilities inside a pod-like network namespace
//! (the harness of `proxy/tests/init_netns.rs`: a namespace with a veth `eth0` in 10.244.0.0/16,
//! here with its peer in a second "client" namespace). A stand-in proxy listens as uid 1337 on the
//! capture ports and the readiness port and answers with the port it was reached on and the
//! connection's original destination. Checked: the app's outbound call lands on 15001 with its
//! original destination, a call from outside lands on 15006, the readiness port 15021 is reached
//! directly, and the proxy's own outbound traffic (uid 1337) is not captured.
//!
//! Needs root (network namespaces) and `ip`, `iptables`, `setpriv`, `curl`, `/usr/bin/python3`. When
//! not root it fails with that explanation, unless `TRELLIS_SKIP_ROOT_TESTS=1`, which makes it say it
//! skipped and pass.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use trellis_test_support::root_or_skip;

use serde_json::Value;

/// Set to `1` to skip when not root instead of failing.
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// Debian's Python: readable by any uid, unlike a per-user install.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// The app's uid (anything but the proxy's).
const APP_UID: &str = "4242";
const POD_IP: &str = "10.244.0.10";
const CLIENT_IP: &str = "10.244.0.11";
/// A destination outside the pod that nothing answers on: only capture can make a call to it work.
const REMOTE: &str = "10.244.0.77:8080";

/// The stand-in proxy: on each port given, answers one line `port=<local port> original=<ip:port>`
/// (the original destination from SO_ORIGINAL_DST, which is what the real proxy reads).
const STAND_IN: &str = r#"
import socket, struct, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept()
        try:
            raw = c.getsockopt(socket.SOL_IP, 80, 16)
            original = "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0])
        except OSError:
            original = "none"
        body = ("port=%d original=%s\n" % (port, original)).encode()
        c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
"#;

fn ok(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The pod namespace and the client namespace joined by a veth, deleted (with the processes
/// started in them) on drop.
struct Pod {
    pod: String,
    client: String,
    children: Vec<Child>,
}

impl Pod {
    fn new() -> Pod {
        let pod = format!("trellis-inject-{}-pod", std::process::id());
        let client = format!("trellis-inject-{}-client", std::process::id());
        for name in [&pod, &client] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            ok(Command::new("ip").args(["netns", "add", name]));
            ok(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        }
        let harness = Pod { pod, client, children: Vec::new() };
        ok(Command::new("ip").args([
            "-n",
            &harness.pod,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
        ]));
        ok(Command::new("ip").args(["-n", &harness.pod, "link", "set", "eth1", "netns", &harness.client]));
        for (ns, dev, ip) in [(&harness.pod, "eth0", POD_IP), (&harness.client, "eth1", CLIENT_IP)] {
            ok(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]));
            ok(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]));
        }
        harness
    }

    /// `args` inside `ns` as `uid` (root when `None`), with no TRELLIS_* variables of ours.
    fn command(&self, ns: &str, uid: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            command.args(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "--"]);
        }
        command.args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRELLIS_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// `curl` from `ns` as `uid`: the body, or `None` when the call failed.
    fn curl(&self, ns: &str, uid: &str, address: &str) -> Option<String> {
        let url = format!("http://{address}/");
        let out = self.command(ns, Some(uid), &["curl", "-s", "--max-time", "3", &url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in [&self.pod, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The init container of the Deployment `trellis inject` writes for the tutorial's order-service.
fn injected_init_container() -> Value {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tutorial/01-order-service.yaml");
    let output = ok(Command::new(TRELLIS).args(["inject", "-f", file]));
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&output.stdout)).expect("trellis inject writes YAML");
    let deployment = documents.iter().find(|d| d["kind"] == "Deployment").expect("the Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    let names: Vec<&str> =
        spec["initContainers"].as_array().expect("init containers").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["trellis-init", "trellis-proxy"], "the injected pod template");
    spec["initContainers"][0].clone()
}

#[test]
fn the_injected_init_container_gives_working_interception_in_a_network_namespace() {
    let test = "the_injected_init_container_gives_working_interception_in_a_network_namespace";
    if !root_or_skip(test) {
        return;
    }
    let init = injected_init_container();
    let args: Vec<&str> = init["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args.first(), Some(&"init"));
    let security = &init["securityContext"];
    let uid = security["runAsUser"].as_i64().expect("runAsUser").to_string();
    let gid = security["runAsGroup"].as_i64().expect("runAsGroup").to_string();
    assert_ne!(uid, "0", "the init container runs as a non-root user");
    let caps: Vec<String> = security["capabilities"]["add"]
        .as_array()
        .expect("added capabilities")
        .iter()
        .filter_map(Value::as_str)
        .map(|cap| format!("+{}", cap.to_lowercase()))
        .collect();
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let caps = format!("-all,{}", caps.join(","));

    let mut pod = Pod::new();
    let proxy = trellis_test_support::workspace_binary("trellis-proxy");
    let proxy = proxy.to_str().expect("a UTF-8 path");
    // As the kubelet runs it: the injected user, only the injected capabilities (ambient, since no
    // file capabilities here), exactly the injected arguments.
    let mut setpriv = vec!["setpriv", "--reuid", &uid, "--regid", &gid, "--clear-groups"];
    for flag in ["--inh-caps", "--ambient-caps", "--bounding-set"] {
        setpriv.extend([flag, &caps]);
    }
    let command = [&setpriv[..], &[proxy], &args[..]].concat();
    ok(&mut pod.command(&pod.pod, None, &command));

    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("stand_in.py");
    std::fs::write(&script, STAND_IN).expect("write the stand-in");
    ok(Command::new("chmod").args(["-R", "a+rX", dir.path().to_str().expect("path")]));
    let script = script.to_str().expect("path").to_owned();
    let child = pod
        .command(&pod.pod, Some("1337"), &[SYSTEM_PYTHON, &script, "15001", "15006", "15021"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the stand-in proxy");
    pod.children.push(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pod.curl(&pod.pod, "0", "127.0.0.1:15021").is_none() {
        assert!(Instant::now() < deadline, "the stand-in proxy never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    let outbound = pod.curl(&pod.pod, APP_UID, REMOTE).expect("the app's outbound call is captured");
    assert_eq!(outbound, format!("port=15001 original={REMOTE}"));
    let inbound = pod.curl(&pod.client, APP_UID, &format!("{POD_IP}:8080")).expect("an inbound call is captured");
    assert_eq!(inbound, format!("port=15006 original={POD_IP}:8080"));
    let readiness = pod.curl(&pod.client, APP_UID, &format!("{POD_IP}:15021")).expect("readiness answers");
    assert!(readiness.starts_with("port=15021 "), "the readiness port was captured: {readiness}");
    assert_eq!(pod.curl(&pod.pod, "1337", REMOTE), None, "the proxy's own traffic was captured");
}
