//! Harness of the local-mesh tests: real `trellisd` and `trellis-proxy` processes on loopback addresses
//! of their own, HTTP upstreams in the test, and a client that keeps sending requests through a
//! sidecar's explicit proxy and records every answer.
//!
//! `trellisd` is this crate's binary (`CARGO_BIN_EXE_trellisd`); `trellis-proxy` belongs to another
//! crate and comes from `trellis-test-support`, which builds it with the tests' own cargo command.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_api::proxy_config::ProxyConfig;
use trellis_api::push::ProxyStatusList;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// An answer slower than this counts as failed: a request through two proxies on loopback takes a few
/// milliseconds, so seconds mean something waited for a timeout.
pub const SLOW: Duration = Duration::from_secs(3);

/// Loopback address `127.78.<pid>.<host>`: each test binary run has its own third octet, so parallel
/// runs and other tests never collide on a port.
pub fn loopback(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 78, (std::process::id() % 256) as u8, host))
}

/// The `trellis-proxy` binary, built (once) into the target folder of this test's binaries.
pub fn trellis_proxy() -> PathBuf {
    trellis_test_support::workspace_binary("trellis-proxy")
}

/// A child process, killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn spawn(name: &str, command: &mut Command) -> Process {
        let log = std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "error".to_owned());
        let child = command.env("TRELLIS_LOG", log).stdin(Stdio::null()).spawn().expect("spawn a process");
        Process { name: name.to_owned(), child }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the process") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop after SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails the test if the process exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait for the process") {
            panic!("{} exited: {status}", self.name);
        }
    }
}

/// Starts `trellisd --folder <folder> --listen <listen>` and waits until it says it listens.
pub fn start_trellisd(folder: &Path, listen: SocketAddr) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trellisd"));
    command.arg("--folder").arg(folder).args(["--listen", &listen.to_string(), "--folder-poll", "50ms"]);
    command.stdout(Stdio::piped());
    let mut process = Process::spawn("trellisd", &mut command);
    let stdout = process.child.stdout.take().expect("piped stdout");
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let line = said.recv_timeout(PATIENCE).expect("trellisd says where it listens");
    assert_eq!(line, format!("trellisd listening on {listen}"));
    process
}

/// A sidecar of the workload `name` (namespace `shop`) with `labels`, every listener on `ip`, following
/// the control plane at `control_plane`; `inbound` is `(port, application)` for a workload that serves.
pub fn start_sidecar(
    name: &str,
    labels: &str,
    ip: IpAddr,
    control_plane: SocketAddr,
    inbound: Option<(u16, SocketAddr)>,
) -> Process {
    start_sidecar_with(name, labels, ip, control_plane, inbound, &[])
}

/// [`start_sidecar`] with more flags (a CA token file, a certificate lifetime).
pub fn start_sidecar_with(
    name: &str,
    labels: &str,
    ip: IpAddr,
    control_plane: SocketAddr,
    inbound: Option<(u16, SocketAddr)>,
    extra: &[&str],
) -> Process {
    let mut command = Command::new(trellis_proxy());
    command
        .arg("sidecar")
        .args(["--discovery-address", &control_plane.to_string()])
        .args(["--node-id", &format!("{name}.shop"), "--namespace", "shop", "--service-account", name])
        .args(["--labels", labels, "--listen-ip", &ip.to_string()])
        .args(["--admin-addr", &format!("{ip}:15000"), "--readiness-addr", &format!("{ip}:15021")])
        .args(["--prometheus-addr", &format!("{ip}:15090"), "--explicit-proxy-addr", &format!("{ip}:15080")])
        .args(["--drain-deadline", "1s"]);
    if let Some((port, application)) = inbound {
        command.args(["--inbound-port", &port.to_string(), "--inbound-target", &application.to_string()]);
    }
    command.args(extra);
    Process::spawn(&format!("sidecar {name}"), &mut command)
}

/// `GET path` over HTTP/1.1: the status code and the body, or `None` when nothing answers.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Waits until `check` gives a value, failing with `what` and the last thing seen after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() > deadline => panic!("never happened: {what}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// The connected proxies as `trellis proxy-status` reads them.
pub async fn proxy_status(control_plane: SocketAddr) -> Result<ProxyStatusList, String> {
    let (status, body) = get(control_plane, "/v1/proxies").await.ok_or("trellisd does not answer")?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// The config a proxy serves, from its admin endpoint.
pub async fn served_config(admin: SocketAddr) -> Result<ProxyConfig, String> {
    let (status, body) = get(admin, "/config_dump").await.ok_or("the proxy's admin does not answer")?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let mut dump: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    serde_json::from_value(dump["config"].take()).map_err(|e| format!("{e}: {body}"))
}

/// Serves HTTP/1.1 and HTTP/2 on `addr`, answering every request `200` with `body`.
pub async fn start_upstream(addr: SocketAddr, body: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("bind the upstream");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body.as_bytes()))))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

/// One answer the client got: its body (`v1`, `v2`), or what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok(String),
    Failed(String),
}

/// Every answer of the load, in the order they arrived.
#[derive(Debug, Default, Clone)]
pub struct Answers(Arc<Mutex<Vec<Answer>>>);

impl Answers {
    fn push(&self, answer: Answer) {
        self.0.lock().expect("answers lock").push(answer);
    }

    /// How many answers arrived so far.
    pub fn len(&self) -> usize {
        self.0.lock().expect("answers lock").len()
    }

    /// The answers from number `from` on.
    pub fn since(&self, from: usize) -> Vec<Answer> {
        self.0.lock().expect("answers lock")[from..].to_vec()
    }

    /// Every failure so far.
    pub fn failures(&self) -> Vec<String> {
        let answers = self.0.lock().expect("answers lock");
        answers
            .iter()
            .filter_map(|a| match a {
                Answer::Failed(why) => Some(why.clone()),
                Answer::Ok(_) => None,
            })
            .collect()
    }
}

/// Steady load: `workers` clients, each on a kept-alive connection to the explicit proxy at `proxy`,
/// sending `GET http://<host>/` every `pause` until `stop` turns true.
pub fn start_load(
    proxy: SocketAddr,
    host: &'static str,
    workers: usize,
    pause: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Answers, Vec<tokio::task::JoinHandle<()>>) {
    let answers = Answers::default();
    let tasks = (0..workers)
        .map(|_| {
            let (answers, stop) = (answers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sender = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if sender.is_none() {
                        match connect(proxy).await {
                            Ok(connected) => sender = Some(connected),
                            Err(why) => answers.push(Answer::Failed(why)),
                        }
                    }
                    if let Some(connection) = sender.as_mut() {
                        let answer = request(connection, host).await;
                        if matches!(answer, Answer::Failed(_)) {
                            sender = None;
                        }
                        answers.push(answer);
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();
    (answers, tasks)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(proxy: SocketAddr) -> Result<Sender, String> {
    let tcp = TcpStream::connect(proxy).await.map_err(|e| format!("connecting to the sidecar: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One absolute-form request through the explicit proxy, as an `HTTP_PROXY`-aware client sends it.
async fn request(sender: &mut Sender, host: &str) -> Answer {
    let request = Request::get(format!("http://{host}/")).header("host", host).body(Empty::new());
    let Ok(request) = request else { return Answer::Failed("building the request".to_owned()) };
    let started = Instant::now();
    let response = match tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Answer::Failed(format!("request: {err}")),
        Err(_) => return Answer::Failed("no answer within 10s".to_owned()),
    };
    let status = response.status();
    let error = response.headers().get("x-trellis-error").map(|v| v.to_str().unwrap_or("?").to_owned());
    let body = match response.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(err) => return Answer::Failed(format!("reading the body: {err}")),
    };
    if status != 200 {
        return Answer::Failed(format!("{status} {error:?}: {body}"));
    }
    let took = started.elapsed();
    if took > SLOW {
        return Answer::Failed(format!("{body} after {took:?}"));
    }
    Answer::Ok(body)
}

/// [`start_sidecar_with`] for a workload of `namespace` instead of `shop`.
pub fn start_sidecar_in(
    namespace: &str,
    name: &str,
    labels: &str,
    ip: IpAddr,
    control_plane: SocketAddr,
    inbound: Option<(u16, SocketAddr)>,
) -> Process {
    let mut command = Command::new(trellis_proxy());
    command
        .arg("sidecar")
        .args(["--discovery-address", &control_plane.to_string()])
        .args(["--node-id", &format!("{name}.{namespace}"), "--namespace", namespace, "--service-account", name])
        .args(["--labels", labels, "--listen-ip", &ip.to_string()])
        .args(["--admin-addr", &format!("{ip}:15000"), "--readiness-addr", &format!("{ip}:15021")])
        .args(["--prometheus-addr", &format!("{ip}:15090"), "--explicit-proxy-addr", &format!("{ip}:15080")])
        .args(["--drain-deadline", "1s"]);
    if let Some((port, application)) = inbound {
        command.args(["--inbound-port", &port.to_string(), "--inbound-target", &application.to_string()]);
    }
    Process::spawn(&format!("sidecar {name}"), &mut command)
}
