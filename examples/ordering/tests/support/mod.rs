//! Test harness: runs the real `trellis-ordering` binary on 127.0.0.1 with a port the kernel picks
//! (the app prints the address it bound), speaks plain HTTP/1.1 to it, and provides a tiny explicit
//! proxy that records the absolute-form requests it forwards. Processes are killed when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Variables of the test's own environment that must not leak into the app.
const SCRUBBED: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "TRELLIS_ORDERING_ROLE",
    "TRELLIS_ORDERING_VERSION",
    "TRELLIS_ORDERING_LISTEN",
    "TRELLIS_ORDERING_INVENTORY_URL",
    "TRELLIS_ORDERING_SHIPPING_URL",
    "TRELLIS_ORDERING_UPSTREAM_TIMEOUT_MS",
    "TRELLIS_ORDERING_LOG",
];

/// A running `trellis-ordering` process.
pub struct App {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of a `trellis-ordering` process on 127.0.0.1 with a free port.
pub fn command(role: &str, version: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trellis-ordering"));
    command.args(["--role", role, "--version", version, "--listen", "127.0.0.1:0"]).args(args);
    for name in SCRUBBED {
        command.env_remove(name);
    }
    command.env("TRELLIS_ORDERING_LOG", std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "warn".into()));
    command.envs(env.iter().copied());
    command
}

impl App {
    /// Starts a role and waits until it says where it listens.
    pub fn start(role: &str, version: &str, args: &[&str], env: &[(&str, &str)]) -> App {
        let mut child = command(role, version, args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn trellis-ordering");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("the app announces its address in time");
        let addr = line
            .trim()
            .rsplit_once(" listening on ")
            .and_then(|(_, addr)| addr.parse().ok())
            .unwrap_or_else(|| panic!("{role} {version} did not announce an address: {line:?}"));
        App { child, addr }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the app");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("set timeout");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    parse_reply(&raw)
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[])
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "the harness reads only content-length bodies"
    );
    Reply { status, headers, body: body.to_owned() }
}

/// A request the test proxy forwarded: its request line and `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub line: String,
    pub host: String,
}

/// A tiny explicit HTTP proxy: takes absolute-form requests, maps their `host:port` to a real address
/// (names only it knows, like `inventory-service:80`), forwards them in origin form with
/// `Connection: close`, and relays the answer.
pub struct TestProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestProxy {
    pub fn start(names: HashMap<String, SocketAddr>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let names = Arc::new(names);
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (names, recorded) = (names.clone(), recorded.clone());
                std::thread::spawn(move || relay(stream, &names, &recorded));
            }
        });
        TestProxy { addr, seen }
    }

    /// What the proxy forwarded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("proxy record").clone()
    }
}

fn relay(client: TcpStream, names: &HashMap<String, SocketAddr>, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(client.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        headers.push(header.trim_end().to_owned());
    }
    let line = line.trim_end().to_owned();
    let host = headers
        .iter()
        .find_map(|h| h.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("host")).map(|(_, v)| v.trim()))
        .unwrap_or("")
        .to_owned();
    seen.lock().expect("proxy record").push(Seen { line: line.clone(), host });
    let mut client = client;
    let mut parts = line.splitn(3, ' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(rest) = target.strip_prefix("http://") else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    let Some(upstream) = names.get(&authority) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let mut upstream = TcpStream::connect(upstream).expect("connect upstream");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for header in headers.iter().filter(|h| !h.to_ascii_lowercase().starts_with("connection:")) {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes()).expect("forward request");
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).expect("read upstream answer");
    let _ = client.write_all(&answer);
}
