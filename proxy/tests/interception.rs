//! Interception for real: two network namespaces joined by a bridge, `trellis-proxy init` in each,
//! the proxies running as uid 1337 and the applications as another uid. An application's request to a
//! service address goes app -> outbound proxy -> inbound proxy -> app; excluded ports bypass both.
//!
//! Needs root (CI runs as root). Without root the test fails, unless `TRELLIS_SKIP_ROOT_TESTS=1` says
//! to skip it, and then it says so.

mod support;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use trellis_api::proxy_config::{InboundListener, InboundMtls, Protocol};

use support::*;

const APP_UID: &str = "4242";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 7, 2);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 7, 3);
const APP_PORT: u16 = 8080;
const EXCLUDED_PORT: u16 = 9090;
/// Debian's Python: readable by any uid, unlike a per-user install.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A tiny HTTP app: answers with the headers it received, so the test sees what the proxies added.
const APP: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("app-port=%s\n" % sys.argv[1] + "".join("%s: %s\n" % (k.lower(), v) for k, v in self.headers.items())).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn root_or_skip() -> bool {
    if is_root() {
        for (cmd, pkg) in [
            ("ip", "iproute2"),
            ("iptables", "iptables"),
            ("setpriv", "util-linux"),
            ("curl", "curl"),
            ("/usr/bin/python3", "python3"),
        ] {
            require(cmd, pkg);
        }
        return true;
    }
    assert!(
        std::env::var("TRELLIS_SKIP_ROOT_TESTS").as_deref() == Ok("1"),
        "this test needs root (network namespaces and iptables); run as root, or set TRELLIS_SKIP_ROOT_TESTS=1 to skip"
    );
    eprintln!("SKIPPED: interception test needs root (TRELLIS_SKIP_ROOT_TESTS=1)");
    false
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Three namespaces (bridge, client, server), deleted on drop even when the test fails.
struct Net {
    prefix: String,
    children: Vec<Child>,
}

impl Net {
    fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.prefix)
    }

    fn create() -> Net {
        let prefix = format!("trl{}", std::process::id());
        let net = Net { prefix, children: Vec::new() };
        let (br, client, server) = (net.ns("br"), net.ns("c"), net.ns("s"));
        for ns in [&br, &client, &server] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for (ns, ip, short) in [(&client, CLIENT_IP, "c"), (&server, SERVER_IP, "s")] {
            let (inside, outside) = (format!("{}{short}0", net.prefix), format!("{}{short}1", net.prefix));
            run(&["ip", "link", "add", &inside, "netns", ns, "type", "veth", "peer", "name", &outside, "netns", &br]);
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", &inside]);
            run(&["ip", "-n", ns, "link", "set", &inside, "up"]);
            run(&["ip", "-n", &br, "link", "set", &outside, "master", "br0"]);
            run(&["ip", "-n", &br, "link", "set", &outside, "up"]);
        }
        net
    }

    /// Runs `args` inside namespace `ns` as `uid` (root when `None`).
    fn command(&self, ns: &str, uid: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            cmd.args(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "--"]);
        }
        cmd.args(args);
        cmd
    }

    fn spawn(&mut self, ns: &str, uid: Option<&str>, args: &[&str]) {
        let child =
            self.command(ns, uid, args).stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawn in namespace");
        self.children.push(child);
    }

    fn curl(&self, ns: &str, uid: &str, url: &str) -> Option<String> {
        let out = self.command(ns, Some(uid), &["curl", "-s", "--max-time", "5", url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_for(&self, ns: &str, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.curl(ns, "0", url).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} in {ns} never answered");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for which in ["c", "s", "br"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(which)]).status();
        }
    }
}

#[test]
fn an_apps_request_crosses_both_proxies_and_excluded_ports_bypass_them() {
    if !root_or_skip() {
        return;
    }
    let mut net = Net::create();
    let (client, server) = (net.ns("c"), net.ns("s"));
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app.py");
    std::fs::write(&app, APP).expect("write app");
    let app = app.to_string_lossy().into_owned();
    // The app runs as an ordinary uid on two ports; only APP_PORT is captured.
    for port in [APP_PORT, EXCLUDED_PORT] {
        net.spawn(&server, Some(APP_UID), &[SYSTEM_PYTHON, &app, &port.to_string()]);
    }
    // The apps answer before any rule exists, so a slow interpreter start is not a proxy failure.
    for port in [APP_PORT, EXCLUDED_PORT] {
        net.wait_for(&server, &format!("http://127.0.0.1:{port}/"));
    }

    let service = cluster_with("orders", &[std::net::SocketAddr::from((SERVER_IP, APP_PORT))], true, Protocol::Http);
    let mut orders = vhost("orders", APP_PORT, &["orders"], vec![route("all", vec![], forward(vec![to("orders", 1)]))]);
    orders.addresses = vec![SERVER_IP.to_string()];
    let client_config = sidecar_config("booking", vec![orders], vec![service]);
    let mut server_config = sidecar_config("orders", Vec::new(), Vec::new());
    server_config.inbound = vec![InboundListener {
        port: APP_PORT,
        protocol: Protocol::Detect,
        mtls: InboundMtls::Disable,
        authorization: Vec::new(),
        jwt: Vec::new(),
        rate_limits: Vec::new(),
    }];
    let proxy = env!("CARGO_BIN_EXE_trellis-proxy");
    for (ns, config) in [(&client, &client_config), (&server, &server_config)] {
        let path = dir.path().join(format!("{ns}.json"));
        write_config(&path, config);
        // The proxy runs as uid 1337 and must read its config.
        run(&["chmod", "-R", "a+rX", dir.path().to_str().expect("path")]);
        let excluded = EXCLUDED_PORT.to_string();
        let init = net
            .command(
                ns,
                None,
                &[proxy, "init", "--exclude-inbound-ports", &excluded, "--exclude-outbound-ports", &excluded],
            )
            .output()
            .expect("run init");
        assert!(init.status.success(), "init in {ns}: {}", String::from_utf8_lossy(&init.stderr));
        net.spawn(ns, Some("1337"), &[proxy, "sidecar", "--config", path.to_str().expect("utf-8 path")]);
    }
    for ns in [&client, &server] {
        net.wait_for(ns, "http://127.0.0.1:15021/healthz/ready");
    }

    let reply = net
        .curl(&client, APP_UID, &format!("http://{SERVER_IP}:{APP_PORT}/orders"))
        .expect("captured request succeeds");
    assert!(reply.contains(&format!("app-port={APP_PORT}")), "{reply}");
    assert!(reply.contains("x-request-id: "), "the outbound proxy added a request id: {reply}");
    let client_metrics = net.curl(&client, "0", "http://127.0.0.1:15090/stats/prometheus").unwrap_or_default();
    assert!(
        client_metrics.contains(r#"trellis_requests_total{direction="Outbound",cluster="orders",code_class="2xx"} 1"#),
        "{client_metrics}"
    );
    let server_metrics = net.curl(&server, "0", "http://127.0.0.1:15090/stats/prometheus").unwrap_or_default();
    assert!(
        server_metrics.contains(r#"trellis_requests_total{direction="Inbound",cluster="inbound",code_class="2xx"} 1"#),
        "{server_metrics}"
    );
    assert!(server_metrics.contains(r#"protocol="http2""#), "proxy to proxy is HTTP/2: {server_metrics}");

    let bypass =
        net.curl(&client, APP_UID, &format!("http://{SERVER_IP}:{EXCLUDED_PORT}/direct")).expect("excluded port works");
    assert!(bypass.contains(&format!("app-port={EXCLUDED_PORT}")) && !bypass.contains("x-request-id"), "{bypass}");
    let after = net.curl(&client, "0", "http://127.0.0.1:15090/stats/prometheus").unwrap_or_default();
    assert!(
        after.contains(r#"cluster="orders",code_class="2xx"} 1"#),
        "the excluded request did not pass the client proxy: {after}"
    );
}
