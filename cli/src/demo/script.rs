//! The demo's script: start `trellisd` on a fresh folder, the ordering apps with their sidecars and
//! the ingress gateway; then copy the tutorial's steps into the folder one by one, wait after each until
//! every proxy acknowledged what changed, and run that step's check. All waiting is bounded and notices
//! a process that died.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use trellis_api::push::{ProxyStatus, ProxyStatusList};
use trellis_controlplane::translate::cluster_name;

use super::Args;
use super::checks::{self, Check, Reply, Split};
use super::client::Http;
use super::issuer::{self, Issuer, JwksServer};
use super::plan::{
    self, ADMIN_PORT, BOOKING, INBOUND_PORT, NAMESPACE, Plan, READINESS_PORT, SHIPPING_V1, TUTORIAL_GATEWAY_PORT,
    UNPRIVILEGED_GATEWAY_PORT, WORKLOADS,
};
use super::procs::{Binaries, Supervisor};
use super::report;
use super::steps::{self, GATEWAY_STEP, JWT_STEP, STEPS, Step, StepCheck, Sync};

/// Name of the file describing the workloads in the mesh's folder.
pub const WORKLOADS_FILE: &str = "00-local-workloads.yaml";
/// How often a wait polls.
pub const POLL: Duration = Duration::from_millis(50);
/// How long processes may take to start and the proxies to get their first config.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one step may take to reach every proxy.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// After this long without any proxy's config changing, a step is taken as one that changes none.
pub const NO_CHANGE_GRACE: Duration = Duration::from_secs(2);
/// How long the proxies may take to get their first certificate from trellisd's CA.
pub const CERT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a valid JWT may take to be accepted after step 06 reached the proxies (trellisd fetches
/// the key set and pushes it in a further config).
pub const JWT_TIMEOUT: Duration = Duration::from_secs(20);
/// Name of the file, beside the mesh's folder, holding the JWT the demo uses (for `curl`).
pub const TOKEN_FILE: &str = "booking.jwt";
/// How long the gateway may take to route the booking API once its config arrived.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bookings of the route check (they also show the split before the rule).
pub const ROUTE_REQUESTS: usize = 50;
/// Concurrent requests while measuring.
pub const LOAD_CONCURRENCY: usize = 8;
/// Concurrent bookings of the circuit-breaking check.
pub const BREAKER_REQUESTS: usize = 10;
/// How slow inventory is made during the circuit-breaking check.
pub const BREAKER_INVENTORY_DELAY_MS: u64 = 500;
/// How long booking's sidecar may take to show the failing inventory endpoint ejected.
pub const EJECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The host of the cluster whose ejection the circuit-breaking check looks for.
pub const INVENTORY_HOST: &str = "inventory-service";
/// The path the booking API is served under.
pub const BOOKING_PATH: &str = "/api/v1/booking";
/// A path no route of the tutorial matches.
pub const UNROUTED_PATH: &str = "/api/v1/unknown";
/// A bearer token no issuer signed.
pub const MALFORMED_TOKEN: &str = "Bearer not-a-jwt";

/// The running demo: its plan, processes, folder and what it found.
#[derive(Debug)]
pub struct Demo {
    pub plan: Plan,
    pub http: Http,
    pub procs: Supervisor,
    /// The temporary folder (`mesh/` for trellisd, `logs/`); `None` once kept.
    work: Option<tempfile::TempDir>,
    pub folder: PathBuf,
    started: Instant,
    /// The text of each step, read before anything starts.
    texts: Vec<String>,
    requests: usize,
    /// The JWT of step 06 and live traffic: `--jwt`, or one the demo's [`Issuer`] signed.
    pub jwt: String,
    /// The demo's own issuer, unless the user gave a token (which the tutorial's real key set verifies).
    issuer: Option<Issuer>,
    /// Serves the issuer's key set while the demo runs.
    jwks: Option<JwksServer>,
    /// Where [`Demo::jwt`] is written, for the user's `curl`.
    pub token_file: PathBuf,
    pub checks: Vec<Check>,
    /// Bookings the split check saw succeed (booking's sidecar must have counted at least these).
    split_booked: u64,
}

impl Demo {
    /// Finds the binaries, makes the folders and decides the gateway's port; starts nothing.
    pub fn prepare(args: &Args) -> Result<Demo> {
        let binaries = Binaries::find(args.bin_dir.as_deref())?;
        let texts = STEPS.iter().map(|s| s.text(args.tutorial.as_deref())).collect::<Result<Vec<_>, _>>();
        let texts = texts.map_err(anyhow::Error::msg)?;
        let work = tempfile::Builder::new().prefix("trellis-demo-").tempdir().context("creating a temporary folder")?;
        let folder = work.path().join("mesh");
        std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
        let procs = Supervisor::new(binaries.clone(), work.path().join("logs"))?;
        let mut plan = Plan { subnet: args.subnet, gateway_port: TUTORIAL_GATEWAY_PORT };
        let demo_started = Instant::now();
        let unprivileged = !can_bind(SocketAddr::from((plan.gateway_ip(), TUTORIAL_GATEWAY_PORT)))?;
        if unprivileged {
            plan.gateway_port = UNPRIVILEGED_GATEWAY_PORT;
        }
        for (who, addr) in plan.listen_addrs() {
            if !can_bind(addr).with_context(|| format!("{who} needs {addr}"))? {
                bail!("{who} needs {addr}, which only root may bind");
            }
        }
        let (jwt, issuer) = match &args.jwt {
            Some(token) => (token.clone(), None),
            None => {
                let issuer = Issuer::generate().map_err(anyhow::Error::msg)?;
                (issuer.token(SystemTime::now()).map_err(anyhow::Error::msg)?, Some(issuer))
            }
        };
        let token_file = work.path().join(TOKEN_FILE);
        write_atomically(&token_file, &jwt)?;
        let demo = Demo {
            plan,
            http: Http::default(),
            procs,
            work: Some(work),
            folder,
            started: demo_started,
            texts,
            requests: args.requests,
            jwt,
            issuer,
            jwks: None,
            token_file,
            checks: Vec::new(),
            split_booked: 0,
        };
        demo.say(&format!(
            "trellis demo: the Istio tutorial's ordering app on this machine (local mode, {})",
            plan.subnet
        ));
        demo.say(&format!("binaries from {}", binaries.folders().join(", ")));
        demo.say(&format!("mesh folder {} (trellisd watches it)", demo.folder.display()));
        if unprivileged {
            demo.say(&format!(
                "port {TUTORIAL_GATEWAY_PORT} needs root here: the Gateway's port {TUTORIAL_GATEWAY_PORT} is served on \
                 {UNPRIVILEGED_GATEWAY_PORT}, as a Kubernetes Service would map it to the gateway pod"
            ));
        }
        Ok(demo)
    }

    /// Prints a progress line.
    pub fn say(&self, message: &str) {
        println!("{}", report::progress(self.started.elapsed(), message));
    }

    /// Runs the script: every step and its check. Checks are collected in `self.checks`; an error
    /// means the demo itself could not run (a process died, the proxies never synced).
    pub async fn script(&mut self) -> Result<()> {
        self.start_mesh().await?;
        for (i, step) in STEPS.iter().enumerate() {
            let text = self.texts[i].clone();
            self.apply(i, step, text).await?;
            match step.check {
                StepCheck::Discovery => self.check_discovery().await,
                StepCheck::Route => self.check_route().await,
                StepCheck::Split => self.check_split().await,
                StepCheck::CircuitBreaking => self.check_circuit_breaking().await,
                StepCheck::Mtls => self.check_mtls().await,
                StepCheck::Jwt => self.check_jwt().await,
            }
            self.procs.check_alive()?;
        }
        self.check_metrics().await;
        Ok(())
    }

    /// Stops every process; when `failed`, shows the end of each log and keeps the folder.
    pub async fn finish(&mut self, failed: bool) {
        if failed && self.procs.count() > 0 {
            eprintln!("The end of each process's log:\n{}", self.procs.tails());
        }
        self.procs.stop_all().await;
        if failed && let Some(work) = self.work.take() {
            eprintln!("trellis demo: logs and the mesh folder are kept in {}", work.keep().display());
        }
    }

    async fn start_mesh(&mut self) -> Result<()> {
        write_atomically(&self.folder.join(WORKLOADS_FILE), &self.plan.local_workloads_yaml())?;
        self.procs.start(&self.plan.trellisd(&self.folder))?;
        let status = self.plan.status_url();
        self.wait_for("trellisd to answer", STARTUP_TIMEOUT, move |http| {
            let url = status.clone();
            async move { http.get_json(&url).await.map(drop) }
        })
        .await?;
        self.say(&format!("trellisd serves {} from the mesh folder on {}", WORKLOADS_FILE, self.plan.trellisd_addr()));
        let ca_dir = Plan::ca_dir(&self.folder);
        for identity in Plan::identities() {
            trellis_controlplane::ca::mint_token(&ca_dir, &identity)
                .with_context(|| format!("minting the CA bootstrap token of {identity}"))?;
        }
        self.say(&format!(
            "minted a CA bootstrap token for each of {} identities in {}",
            Plan::identities().len(),
            ca_dir.join(trellis_controlplane::ca::auth::TOKENS_DIR).display()
        ));
        if let Some(issuer) = &self.issuer {
            let jwks = issuer.jwks().map_err(anyhow::Error::msg)?;
            let server = issuer::serve_jwks(self.plan.jwks_addr(), jwks).await.map_err(anyhow::Error::msg)?;
            self.say(&format!(
                "serving the JWKS of a key made for this run at {} (issuer {})",
                server.url,
                issuer::TUTORIAL_ISSUER
            ));
            self.jwks = Some(server);
        }
        for workload in WORKLOADS {
            self.procs.start(&self.plan.app(&workload))?;
        }
        for workload in WORKLOADS {
            let url = format!("http://{}:{}/healthz", self.plan.ip(&workload), plan::APP_PORT);
            self.wait_for(&format!("{} to answer", workload.name), STARTUP_TIMEOUT, move |http| {
                let url = url.clone();
                async move { ok_status(http.get(&url, &[]).await) }
            })
            .await?;
        }
        let apps: Vec<String> =
            WORKLOADS.iter().map(|w| format!("{} {} ({})", w.role, w.version, self.plan.ip(w))).collect();
        self.say(&format!("started the apps: {}", apps.join(", ")));
        for workload in WORKLOADS {
            self.procs.start(&self.plan.sidecar(&workload, &ca_dir))?;
        }
        self.procs.start(&self.plan.gateway(&ca_dir))?;
        for (name, ip) in self.proxies() {
            let url = format!("http://{ip}:{READINESS_PORT}{}", trellis_proxy::wait::READINESS_PATH);
            self.wait_for(&format!("{name} to be ready"), STARTUP_TIMEOUT, move |http| {
                let url = url.clone();
                async move { ok_status(http.get(&url, &[]).await) }
            })
            .await?;
        }
        self.say(&format!(
            "started a sidecar beside each app and the ingress gateway ({}); {} proxies ready",
            self.plan.gateway_ip(),
            WORKLOADS.len() + 1
        ));
        let started = Instant::now();
        let changed = self.wait_synced(&Default::default(), STARTUP_TIMEOUT).await?;
        self.say(&format!(
            "all {} proxies hold their first config from trellisd ({:.1} s)",
            changed.len(),
            started.elapsed().as_secs_f64()
        ));
        let started = Instant::now();
        for (name, ip) in self.proxies() {
            let url = format!("http://{ip}:{ADMIN_PORT}/certs");
            self.wait_for(&format!("{name} to hold a certificate"), CERT_TIMEOUT, move |http| {
                let url = url.clone();
                async move {
                    let certs = http.get_json(&url).await?;
                    checks::certificate(&certs).map(drop).ok_or_else(|| format!("{url}: {certs}"))
                }
            })
            .await?;
        }
        self.say(&format!(
            "all {} proxies hold a certificate from trellisd's CA for their identity ({:.1} s)",
            self.proxies().len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Each proxy's name and address, sidecars first.
    fn proxies(&self) -> Vec<(String, std::net::Ipv4Addr)> {
        let mut proxies: Vec<(String, std::net::Ipv4Addr)> =
            WORKLOADS.iter().map(|w| (format!("{} sidecar", w.name), self.plan.ip(w))).collect();
        proxies.push(("the ingress gateway".to_owned(), self.plan.gateway_ip()));
        proxies
    }

    /// Writes step `i` (its `text`) into the mesh's folder and waits until every proxy acknowledged what it changed.
    async fn apply(&mut self, i: usize, step: &Step, mut text: String) -> Result<()> {
        if i == GATEWAY_STEP
            && self.plan.gateway_port != TUTORIAL_GATEWAY_PORT
            && let Some(adapted) = steps::with_gateway_port(&text, TUTORIAL_GATEWAY_PORT, self.plan.gateway_port)
        {
            text = adapted;
        }
        if i == JWT_STEP
            && let Some(server) = &self.jwks
            && let Some(adapted) = steps::with_jwks_uri(&text, &server.url)
        {
            text = adapted;
            self.say(&format!(
                "{}: jwksUri points at the demo's own key set {} instead of GitHub's, so it runs offline",
                step.file, server.url
            ));
        }
        let before = steps::versions(&self.statuses().await.map_err(anyhow::Error::msg)?);
        write_atomically(&self.folder.join(step.file), &text)?;
        let started = Instant::now();
        let changed =
            self.wait_synced(&before, STEP_TIMEOUT).await.with_context(|| format!("applying {}", step.file))?;
        let reached = match changed.len() {
            0 => "no proxy's config changed".to_owned(),
            1 => format!("1 proxy updated ({}), in sync after {:.1} s", changed[0], started.elapsed().as_secs_f64()),
            n => format!("{n} proxies updated, all in sync after {:.1} s", started.elapsed().as_secs_f64()),
        };
        self.say(&format!("step {}/{} {}: {}; {reached}", i + 1, STEPS.len(), step.file, step.title));
        Ok(())
    }

    /// Waits until every proxy is connected and in sync; once a config changed since `before`, until
    /// two polls in a row agree. Returns the proxies whose config changed.
    async fn wait_synced(
        &mut self,
        before: &std::collections::BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let expected = self.plan.proxy_ids();
        let started = Instant::now();
        let mut settled: Option<std::collections::BTreeMap<String, String>> = None;
        let mut waiting;
        loop {
            self.procs.check_alive()?;
            match self.statuses().await {
                Err(error) => waiting = error,
                Ok(statuses) => match steps::sync_state(&expected, &statuses, before) {
                    Sync::Refused(error) => bail!("{error}"),
                    Sync::Waiting(why) => {
                        waiting = why;
                        settled = None;
                    }
                    Sync::Synced { changed } => {
                        let now = steps::versions(&statuses);
                        let quiet = changed.is_empty() && started.elapsed() >= NO_CHANGE_GRACE;
                        if quiet || (!changed.is_empty() && settled.as_ref() == Some(&now)) {
                            return Ok(changed);
                        }
                        settled = (!changed.is_empty()).then_some(now);
                        waiting = "the proxies to settle".to_owned();
                    }
                },
            }
            if started.elapsed() >= timeout {
                bail!("the proxies did not sync within {} s: {waiting}", timeout.as_secs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn statuses(&self) -> Result<Vec<ProxyStatus>, String> {
        let value = self.http.get_json(&self.plan.status_url()).await?;
        let list: ProxyStatusList =
            serde_json::from_value(value).map_err(|e| format!("trellisd's status list: {e}"))?;
        Ok(list.proxies)
    }

    /// Polls `probe` until it succeeds, failing after `timeout` with its last error.
    async fn wait_for<F, Fut>(&mut self, what: &str, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut(Http) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let started = Instant::now();
        loop {
            self.procs.check_alive()?;
            let error = match probe(self.http.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if started.elapsed() >= timeout {
                bail!("timed out after {} s waiting for {what}: {error}", timeout.as_secs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Prints a check's first line (the report at the end has its details) and keeps it.
    fn record(&mut self, check: Check) {
        if let Some(line) = report::check_lines(&check).first() {
            println!("{line}");
        }
        self.checks.push(check);
    }

    async fn config_dump(&self, ip: std::net::Ipv4Addr) -> Result<serde_json::Value, String> {
        self.http.get_json(&format!("http://{ip}:{}/config_dump", plan::ADMIN_PORT)).await
    }

    async fn check_discovery(&mut self) {
        let host = format!("order-service.{NAMESPACE}.svc.cluster.local");
        let mut known = Vec::new();
        for workload in WORKLOADS {
            let dump = self.config_dump(self.plan.ip(&workload)).await.unwrap_or_default();
            known.push((workload.name.to_owned(), checks::knows_host(&dump, &host)));
        }
        self.record(checks::discovery(&host, &known));
    }

    async fn check_route(&mut self) {
        let url = self.plan.gateway_url(BOOKING_PATH);
        let started = Instant::now();
        let mut first = self.booking(&[]).await;
        while !first.booked() && started.elapsed() < ROUTE_TIMEOUT {
            tokio::time::sleep(POLL * 2).await;
            first = self.booking(&[]).await;
        }
        let mut routed = vec![first];
        if routed[0].booked() {
            routed.extend(self.http.replies(&url, &[], ROUTE_REQUESTS - 1, LOAD_CONCURRENCY).await);
        }
        let unrouted_url = self.plan.gateway_url(UNROUTED_PATH);
        let unrouted = Reply::from_result(self.http.get(&unrouted_url, &[]).await);
        let check = checks::route(&url, &routed, &unrouted_url, &unrouted, Split::of(&routed));
        self.record(check);
    }

    async fn check_split(&mut self) {
        let url = self.plan.gateway_url(BOOKING_PATH);
        let replies = self.http.replies(&url, &[], self.requests, LOAD_CONCURRENCY).await;
        self.split_booked = replies.iter().filter(|r| r.booked()).count() as u64;
        self.record(checks::split(&replies));
    }

    async fn check_circuit_breaking(&mut self) {
        let url = self.plan.gateway_url(&format!("{BOOKING_PATH}?inventory_delay_ms={BREAKER_INVENTORY_DELAY_MS}"));
        let replies = self.http.replies(&url, &[], BREAKER_REQUESTS, BREAKER_REQUESTS).await;
        // One 5xx from inventory: booking's sidecar ejects the endpoint (consecutive5xxErrors: 1).
        let failing_url = self.plan.gateway_url(&format!("{BOOKING_PATH}?inventory_fail=1"));
        let failing = Reply::from_result(self.http.get(&failing_url, &[]).await);
        let booking = self.plan.ip(&BOOKING);
        let started = Instant::now();
        let mut ejection = None;
        while ejection.is_none() && started.elapsed() < EJECTION_TIMEOUT {
            let dump = self.config_dump(booking).await.unwrap_or_default();
            ejection = checks::ejection(&dump, INVENTORY_HOST);
            if ejection.is_none() {
                tokio::time::sleep(POLL).await;
            }
        }
        self.record(checks::circuit_breaking(&replies, &failing, ejection.as_ref()));
    }

    async fn check_mtls(&mut self) {
        let target = SocketAddr::from((self.plan.ip(&SHIPPING_V1), INBOUND_PORT));
        let plain_url = format!("http://{target}/api/v1/shipping");
        let plain = Reply::from_result(self.http.get(&plain_url, &[("host", "shipping-service")]).await);
        let mesh = self.booking(&[]).await;
        let mut identities = Vec::new();
        for (name, ip) in self.proxies() {
            let certs = self.http.get_json(&format!("http://{ip}:{ADMIN_PORT}/certs")).await.unwrap_or_default();
            identities.push((name, checks::certificate(&certs)));
        }
        let check = checks::mtls(&format!("{} sidecar ({target})", SHIPPING_V1.name), &plain, &mesh, &identities);
        self.record(check);
    }

    /// Waits (bounded) until the valid token books, as trellisd pushes the key set after fetching it;
    /// then the same booking without a token and with a malformed one.
    async fn check_jwt(&mut self) {
        let bearer = format!("Bearer {}", self.jwt);
        let started = Instant::now();
        let mut valid = self.booking(&[("authorization", &bearer)]).await;
        while !valid.booked() && started.elapsed() < JWT_TIMEOUT {
            tokio::time::sleep(POLL * 4).await;
            valid = self.booking(&[("authorization", &bearer)]).await;
        }
        let waited = if valid.booked() {
            format!("booked {:.1} s after the step reached the proxies", started.elapsed().as_secs_f64())
        } else {
            format!("not accepted within {} s", JWT_TIMEOUT.as_secs())
        };
        let without = self.booking(&[]).await;
        let malformed = self.booking(&[("authorization", MALFORMED_TOKEN)]).await;
        let source = match &self.jwks {
            Some(server) => format!(
                "the valid token: ES256, iss = sub = {}, signed by a key made for this run, whose key set {} \
                 serves ({waited})",
                issuer::TUTORIAL_ISSUER,
                server.url,
            ),
            None => format!("the valid token: the one given with --jwt, for the tutorial's jwksUri ({waited})"),
        };
        self.record(checks::jwt(&without, &malformed, &valid, vec![source]));
    }

    async fn check_metrics(&mut self) {
        let url = self.plan.metrics_url(&BOOKING);
        let answer = self.http.get(&url, &[]).await;
        let host = format!("shipping-service.{NAMESPACE}.svc.cluster.local");
        let clusters = [("shipping v1", cluster_name(80, "v1", &host)), ("shipping v2", cluster_name(80, "v2", &host))];
        self.record(checks::metrics(&url, &answer, &clusters, self.split_booked));
    }

    /// One booking through the gateway.
    async fn booking(&self, headers: &[(&str, &str)]) -> Reply {
        Reply::from_result(self.http.get(&self.plan.gateway_url(BOOKING_PATH), headers).await)
    }

    /// The mesh's folder as text, for the "try it" list.
    pub fn folder_text(&self) -> String {
        self.folder.display().to_string()
    }
}

/// Whether this user may bind `addr` now: `Ok(false)` when it needs privileges, an error when another
/// process holds it (another demo still running?).
fn can_bind(addr: SocketAddr) -> Result<bool> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Ok(false),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("{addr} is in use (is another demo running? `--subnet` picks other addresses)")
        }
        Err(err) => Err(err).with_context(|| format!("binding {addr}")),
    }
}

/// 200 or why not.
fn ok_status(answer: Result<checks::Answer, String>) -> Result<(), String> {
    match answer {
        Ok(answer) if answer.status == 200 => Ok(()),
        Ok(answer) => Err(format!("answered {}", answer.status)),
        Err(error) => Err(error),
    }
}

/// Writes `path` through a hidden temporary file and a rename, so trellisd never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}
