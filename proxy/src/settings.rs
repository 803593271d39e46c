//! Flags, environment variables and defaults of the proxy's serving modes (`sidecar`, `gateway`).
//!
//! Every flag has an environment variable and a named default, so a pod spec can set either; a bad
//! value names the flag. The resolved settings are serializable and shown at `/config_dump`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// UID and GID the proxy runs as; the iptables owner match exempts its traffic from capture.
pub const PROXY_UID: u32 = 1337;
/// Outbound capture port (iptables redirects the workload's outgoing TCP here).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// Inbound capture port (iptables redirects incoming TCP here).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// Admin endpoint; loopback only because `/quitquitquit` and `/logging` change the proxy.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15000";
/// Readiness endpoint (`/healthz/ready`) for the kubelet.
pub const DEFAULT_READINESS_ADDR: &str = "0.0.0.0:15021";
/// Prometheus endpoint (`/stats/prometheus`).
pub const DEFAULT_PROMETHEUS_ADDR: &str = "0.0.0.0:15090";
/// Address the capture listeners bind to.
pub const DEFAULT_LISTEN_IP: &str = "0.0.0.0";
/// Worker threads of the data path; a sidecar shares its pod's CPU, so it stays small.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// How long protocol detection waits for the client's first bytes before treating it as opaque TCP.
pub const DEFAULT_DETECT_TIMEOUT: &str = "100ms";
/// How long in-flight requests may take to finish after SIGTERM or `/quitquitquit`.
pub const DEFAULT_DRAIN_DEADLINE: &str = "5s";
/// How often the config file is checked for changes.
pub const DEFAULT_CONFIG_POLL: &str = "200ms";
/// Idle time after which a pooled upstream connection is closed.
pub const DEFAULT_POOL_IDLE_TIMEOUT: &str = "90s";
/// Log filter at start (`tracing` env-filter syntax); `/logging?level=` changes it at runtime.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Flags shared by `sidecar` and `gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// ProxyConfig file (JSON or YAML); reloaded when it changes, keeping the last good one on error.
    #[arg(long, env = "TRELLIS_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// IP the capture and gateway listeners bind to (local mode gives each sidecar its own, e.g. 127.0.1.N).
    #[arg(long, env = "TRELLIS_LISTEN_IP", default_value = DEFAULT_LISTEN_IP)]
    pub listen_ip: std::net::IpAddr,
    #[arg(long, env = "TRELLIS_OUTBOUND_PORT", default_value_t = DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    #[arg(long, env = "TRELLIS_INBOUND_PORT", default_value_t = DEFAULT_INBOUND_PORT)]
    pub inbound_port: u16,
    /// Also accept explicit-proxy traffic (`HTTP_PROXY`: absolute-form requests and CONNECT) here.
    #[arg(long, env = "TRELLIS_EXPLICIT_PROXY_ADDR", value_name = "ADDR")]
    pub explicit_proxy_addr: Option<SocketAddr>,
    /// Send inbound traffic to this address instead of the connection's original destination
    /// (local mode, where the inbound listener stands in front of one process without iptables).
    #[arg(long, env = "TRELLIS_INBOUND_TARGET", value_name = "ADDR")]
    pub inbound_target: Option<SocketAddr>,
    #[arg(long, env = "TRELLIS_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
    #[arg(long, env = "TRELLIS_READINESS_ADDR", default_value = DEFAULT_READINESS_ADDR)]
    pub readiness_addr: SocketAddr,
    #[arg(long, env = "TRELLIS_PROMETHEUS_ADDR", default_value = DEFAULT_PROMETHEUS_ADDR)]
    pub prometheus_addr: SocketAddr,
    /// Data-path worker threads.
    #[arg(long, env = "TRELLIS_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    #[arg(long, env = "TRELLIS_DETECT_TIMEOUT", default_value = DEFAULT_DETECT_TIMEOUT, value_parser = parse_duration)]
    pub detect_timeout: Duration,
    #[arg(long, env = "TRELLIS_DRAIN_DEADLINE", default_value = DEFAULT_DRAIN_DEADLINE, value_parser = parse_duration)]
    pub drain_deadline: Duration,
    #[arg(long, env = "TRELLIS_CONFIG_POLL", default_value = DEFAULT_CONFIG_POLL, value_parser = parse_duration)]
    pub config_poll: Duration,
    #[arg(long, env = "TRELLIS_POOL_IDLE_TIMEOUT", default_value = DEFAULT_POOL_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub pool_idle_timeout: Duration,
    #[arg(long, env = "TRELLIS_LOG", default_value = DEFAULT_LOG_LEVEL)]
    pub log: String,
}

/// Parses a Go-style duration flag (`100ms`, `5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    trellis_api::duration::parse(text).map_err(|e| e.to_string())
}

/// The settings in force, as `/config_dump` shows them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub mode: &'static str,
    pub config: PathBuf,
    pub listen_ip: std::net::IpAddr,
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub explicit_proxy_addr: Option<SocketAddr>,
    pub inbound_target: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    pub prometheus_addr: SocketAddr,
    pub concurrency: usize,
    #[serde(serialize_with = "go_duration")]
    pub detect_timeout: Duration,
    #[serde(serialize_with = "go_duration")]
    pub drain_deadline: Duration,
    #[serde(serialize_with = "go_duration")]
    pub config_poll: Duration,
    #[serde(serialize_with = "go_duration")]
    pub pool_idle_timeout: Duration,
}

fn go_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&trellis_api::duration::format(*d))
}

impl Settings {
    /// Whether `addr` is one of this proxy's capture listeners: forwarding there would loop.
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        let port_is_ours = addr.port() == self.outbound_port || addr.port() == self.inbound_port;
        let ip_is_ours = addr.ip() == self.listen_ip || (self.listen_ip.is_unspecified() && addr.ip().is_loopback());
        port_is_ours && ip_is_ours
    }
}

impl ServeArgs {
    /// The settings these flags describe for `mode` (`sidecar` or `gateway`), or the flag that is wrong.
    pub fn settings(&self, mode: &'static str) -> Result<Settings, crate::Error> {
        if self.concurrency == 0 || self.concurrency > 64 {
            let message = format!("{} is not between 1 and 64", self.concurrency);
            return Err(crate::Error::Flag { flag: "--concurrency", message });
        }
        if self.outbound_port == self.inbound_port {
            let message = format!("port {} is also the inbound port", self.outbound_port);
            return Err(crate::Error::Flag { flag: "--outbound-port", message });
        }
        Ok(Settings {
            mode,
            config: self.config.clone(),
            listen_ip: self.listen_ip,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            explicit_proxy_addr: self.explicit_proxy_addr,
            inbound_target: self.inbound_target,
            admin_addr: self.admin_addr,
            readiness_addr: self.readiness_addr,
            prometheus_addr: self.prometheus_addr,
            concurrency: self.concurrency,
            detect_timeout: self.detect_timeout,
            drain_deadline: self.drain_deadline,
            config_poll: self.config_poll,
            pool_idle_timeout: self.pool_idle_timeout,
        })
    }
}
