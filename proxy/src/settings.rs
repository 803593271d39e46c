//! Flags, environment variables and defaults of the proxy's serving modes (`sidecar`, `gateway`).
//!
//! Every flag has an environment variable and a named default, so a pod spec can set either; a bad
//! value names the flag. The resolved settings are serializable and shown at `/config_dump`.
//!
//! The config comes from a file (`--config`) or from the control plane (`--discovery-address`). For the
//! latter the proxy says who it is: its node id, namespace, service account, labels and IPs, read from
//! flags or from the environment Kubernetes gives an injected pod (`POD_NAME`, `POD_NAMESPACE`,
//! `SERVICE_ACCOUNT`, `INSTANCE_IP`, as Istio's injector sets them).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// UID and GID the proxy runs as; the iptables owner match exempts its traffic from capture.
pub const PROXY_UID: u32 = 1337;
/// Outbound capture port (iptables redirects the workload's outgoing TCP here).
pub const DEFAULT_OUTBOUND_PORT: u16 = trellis_api::ports::OUTBOUND;
/// Inbound capture port (iptables redirects incoming TCP here).
pub const DEFAULT_INBOUND_PORT: u16 = trellis_api::ports::INBOUND;
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
/// Time without a request after which a client's HTTP connection is closed (Envoy's default
/// `idle_timeout`); the proxy checks once per period, so it closes after one to two. Zero: never.
pub const DEFAULT_IDLE_TIMEOUT: &str = "1h";
/// Log filter at start (`tracing` env-filter syntax); `/logging?level=` changes it at runtime.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Environment variable of `--discovery-ca`.
pub const DISCOVERY_CA_ENV: &str = "TRELLIS_DISCOVERY_CA";
/// Environment variable of `--trust-domain`.
pub const TRUST_DOMAIN_ENV: &str = "TRELLIS_TRUST_DOMAIN";
/// Environment variable of `--discovery-address`.
pub const DISCOVERY_ADDRESS_ENV: &str = "TRELLIS_DISCOVERY_ADDRESS";
/// Environment variable of `--node-id`.
pub const NODE_ID_ENV: &str = "TRELLIS_NODE_ID";
/// The pod's name (Kubernetes downward API); the default node id is `POD_NAME.<namespace>`.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// Environment variable of `--namespace` (the pod's namespace, from the downward API).
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// Environment variable of `--service-account`.
pub const SERVICE_ACCOUNT_ENV: &str = "SERVICE_ACCOUNT";
/// Environment variable of `--instance-ip` (the pod's IPs, comma-separated).
pub const INSTANCE_IP_ENV: &str = "INSTANCE_IP";
/// Environment variable of `--labels`.
pub const LABELS_ENV: &str = "TRELLIS_LABELS";
/// Environment variable read for the host name when no node id is given and there is no `POD_NAME`.
pub const HOSTNAME_ENV: &str = "HOSTNAME";
/// Namespace of a proxy that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Service account of a proxy that names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Host name used in the default node id when the host's name cannot be found.
pub const FALLBACK_HOST_NAME: &str = "localhost";

/// Flags shared by `sidecar` and `gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// ProxyConfig file (JSON or YAML); reloaded when it changes, keeping the last good one on error.
    /// Required unless the config comes from the control plane (--discovery-address).
    #[arg(
        long,
        env = "TRELLIS_CONFIG",
        value_name = "FILE",
        required_unless_present = "discovery_address",
        conflicts_with = "discovery_address"
    )]
    pub config: Option<PathBuf>,
    /// Get the config from the control plane (`host:port` or `http://host:port`; port 15012 when absent).
    #[arg(long, env = DISCOVERY_ADDRESS_ENV, value_name = "ADDR")]
    pub discovery_address: Option<String>,
    /// The proxy's id at the control plane (`trellis proxy-status`); default `$POD_NAME.<namespace>`,
    /// else the host name and the namespace.
    #[arg(long, env = NODE_ID_ENV, value_name = "ID")]
    pub node_id: Option<String>,
    /// Namespace of the workload.
    #[arg(long, env = POD_NAMESPACE_ENV, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Service account of the workload (its identity).
    #[arg(long, env = SERVICE_ACCOUNT_ENV, default_value = DEFAULT_SERVICE_ACCOUNT)]
    pub service_account: String,
    /// Labels of the workload, `key=value,key=value` (they select the policies and, for a gateway, the
    /// Gateways that apply).
    #[arg(long, env = LABELS_ENV, value_name = "K=V,...")]
    pub labels: Option<String>,
    /// IP of the workload (repeatable, or comma-separated); default the --listen-ip unless it is
    /// unspecified (0.0.0.0 or ::).
    #[arg(long = "instance-ip", env = INSTANCE_IP_ENV, value_name = "IP", value_delimiter = ',')]
    pub instance_ips: Vec<IpAddr>,
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
    /// Time without a request after which a client's HTTP connection is closed (0: never).
    #[arg(long, env = "TRELLIS_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub idle_timeout: Duration,
    #[arg(long, env = "TRELLIS_LOG", default_value = DEFAULT_LOG_LEVEL)]
    pub log: String,
    /// Bearer token for the mesh CA (re-read on each request): in Kubernetes the projected
    /// ServiceAccount token, locally the bootstrap token `trellis run` writes.
    #[arg(long, env = crate::identity::CA_TOKEN_FILE_ENV, default_value = crate::identity::DEFAULT_CA_TOKEN_FILE, value_name = "FILE")]
    pub ca_token_file: PathBuf,
    /// Lifetime to ask the mesh CA for (it grants at most its own maximum, 24h by default).
    #[arg(long, env = "TRELLIS_CERT_TTL", value_parser = parse_duration)]
    pub cert_ttl: Option<Duration>,
    /// Workload certificate chain (PEM, leaf first) instead of the mesh CA's; reloaded when it changes.
    #[arg(long, env = "TRELLIS_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_roots"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, env = "TRELLIS_TLS_KEY", value_name = "FILE", requires_all = ["tls_cert", "tls_roots"])]
    pub tls_key: Option<PathBuf>,
    /// Trust bundle for --tls-cert (PEM roots).
    #[arg(long, env = "TRELLIS_TLS_ROOTS", value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_roots: Option<PathBuf>,
    /// PEM roots that verify the control plane over TLS (the mesh's trust bundle; in Kubernetes the
    /// ConfigMap `trellis-ca-root-cert` mounted). With it the connection uses TLS unless the address
    /// says `http://`.
    #[arg(long, env = DISCOVERY_CA_ENV, value_name = "FILE")]
    pub discovery_ca: Option<PathBuf>,
    /// Trust domain the mesh CA's certificate for this proxy must be in.
    #[arg(long, env = TRUST_DOMAIN_ENV, value_name = "DOMAIN")]
    pub trust_domain: Option<String>,
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
    pub config: Option<PathBuf>,
    pub discovery_address: Option<String>,
    pub node_id: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub instance_ips: Vec<IpAddr>,
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
    #[serde(serialize_with = "go_duration")]
    pub idle_timeout: Duration,
    pub ca_token_file: PathBuf,
    #[serde(serialize_with = "optional_go_duration")]
    pub cert_ttl: Option<Duration>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_roots: Option<PathBuf>,
    pub discovery_ca: Option<PathBuf>,
    pub trust_domain: Option<String>,
}

impl Settings {
    /// The control plane to follow and ask for certificates (`--discovery-address` with
    /// `--discovery-ca`), if any.
    pub fn control_plane(&self) -> Result<Option<crate::discovery::Target>, crate::Error> {
        let Some(address) = &self.discovery_address else { return Ok(None) };
        Ok(Some(crate::discovery::Target::parse(address)?.with_ca(self.discovery_ca.clone())?))
    }
}

fn go_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&trellis_api::duration::format(*d))
}

fn optional_go_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => go_duration(d, s),
        None => s.serialize_none(),
    }
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
        self.settings_with(mode, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`ServeArgs::settings`] reading the environment variables that are not flags (`POD_NAME`,
    /// `HOSTNAME`) through `env`.
    pub fn settings_with(
        &self,
        mode: &'static str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, crate::Error> {
        if self.concurrency == 0 || self.concurrency > 64 {
            let message = format!("{} is not between 1 and 64", self.concurrency);
            return Err(crate::Error::Flag { flag: "--concurrency", message });
        }
        if self.outbound_port == self.inbound_port {
            let message = format!("port {} is also the inbound port", self.outbound_port);
            return Err(crate::Error::Flag { flag: "--outbound-port", message });
        }
        if let Some(address) = &self.discovery_address {
            crate::discovery::Target::parse(address)?.with_ca(self.discovery_ca.clone())?;
        }
        if let Some(domain) = &self.trust_domain
            && (domain.is_empty() || domain.contains(['/', ' ', ':']))
        {
            return Err(crate::Error::Flag {
                flag: "--trust-domain",
                message: format!("{domain:?} is not a trust domain"),
            });
        }
        let flag = |flag: &'static str, message: String| crate::Error::Flag { flag, message };
        if self.namespace.trim().is_empty() {
            return Err(flag("--namespace", "the namespace is empty".to_owned()));
        }
        let node_id = match &self.node_id {
            Some(id) if id.trim().is_empty() => return Err(flag("--node-id", "the node id is empty".to_owned())),
            Some(id) => id.clone(),
            None => {
                let pod = env(POD_NAME_ENV).or_else(|| env(HOSTNAME_ENV)).or_else(host_name);
                format!("{}.{}", pod.as_deref().unwrap_or(FALLBACK_HOST_NAME), self.namespace)
            }
        };
        let labels = parse_labels(self.labels.as_deref().unwrap_or_default()).map_err(|m| flag("--labels", m))?;
        let instance_ips = if self.instance_ips.is_empty() && !self.listen_ip.is_unspecified() {
            vec![self.listen_ip]
        } else {
            self.instance_ips.clone()
        };
        Ok(Settings {
            mode,
            config: self.config.clone(),
            discovery_address: self.discovery_address.clone(),
            node_id,
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            labels,
            instance_ips,
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
            idle_timeout: self.idle_timeout,
            ca_token_file: self.ca_token_file.clone(),
            cert_ttl: self.cert_ttl,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_roots: self.tls_roots.clone(),
            discovery_ca: self.discovery_ca.clone(),
            trust_domain: self.trust_domain.clone(),
        })
    }
}

/// Labels written `key=value,key=value` (spaces around entries are ignored; an empty text is no labels).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        let name_like = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
        if key.is_empty() || !key.chars().all(name_like) {
            return Err(format!("{key:?} is not a label key"));
        }
        if !value.chars().all(name_like) || value.contains('/') {
            return Err(format!("{value:?} (label {key}) is not a label value"));
        }
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("label {key} is given twice"));
        }
    }
    Ok(labels)
}

/// The host's name, from the kernel.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Args::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|a| a.serve)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_config_comes_from_a_file_or_the_control_plane_and_not_both() {
        let err = parse(&[]).expect_err("neither");
        assert!(err.to_string().contains("--config"), "{err}");
        let err = parse(&["--config", "c.json", "--discovery-address", "trellisd:15012"]).expect_err("both");
        assert!(err.to_string().contains("cannot be used with"), "{err}");
        let settings = parse(&["--discovery-address", "trellisd"]).expect("valid").settings_with("sidecar", no_env);
        let settings = settings.expect("valid settings");
        assert_eq!((settings.config, settings.discovery_address.as_deref()), (None, Some("trellisd")));
        let err = parse(&["--discovery-address", "ftp://trellisd"]).expect("parsed").settings_with("sidecar", no_env);
        let err = err.expect_err("not http").to_string();
        assert!(err.starts_with("invalid value for --discovery-address"), "{err}");
    }

    #[test]
    fn the_node_id_defaults_to_the_pod_name_and_namespace_as_kubernetes_gives_them() {
        let args = parse(&["--discovery-address", "trellisd", "--namespace", "shop"]).expect("valid");
        let pod = |name: &str| if name == POD_NAME_ENV { Some("web-7d9f".to_owned()) } else { None };
        assert_eq!(args.settings_with("sidecar", pod).expect("valid").node_id, "web-7d9f.shop");
        let host = |name: &str| if name == HOSTNAME_ENV { Some("laptop".to_owned()) } else { None };
        assert_eq!(args.settings_with("sidecar", host).expect("valid").node_id, "laptop.shop");
        let args = parse(&["--discovery-address", "trellisd", "--node-id", "booking-v1.default"]).expect("valid");
        let settings = args.settings_with("sidecar", pod).expect("valid");
        assert_eq!(settings.node_id, "booking-v1.default", "the flag wins");
        assert_eq!((settings.namespace.as_str(), settings.service_account.as_str()), ("default", "default"));
        let err = parse(&["--discovery-address", "x", "--node-id", " "]).expect("parsed").settings_with("sidecar", pod);
        assert!(err.expect_err("empty").to_string().starts_with("invalid value for --node-id"));
    }

    #[test]
    fn labels_and_instance_ips_are_read_and_the_ips_default_to_a_specific_listen_ip() {
        let args = parse(&[
            "--discovery-address",
            "trellisd",
            "--labels",
            "app=booking, version=v1,istio.io/rev=",
            "--listen-ip",
            "127.0.1.4",
        ])
        .expect("valid");
        let settings = args.settings_with("sidecar", no_env).expect("valid");
        let labels: Vec<(&str, &str)> = settings.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels, [("app", "booking"), ("istio.io/rev", ""), ("version", "v1")]);
        assert_eq!(settings.instance_ips, ["127.0.1.4".parse::<IpAddr>().expect("an IP")]);
        let args = parse(&["--config", "c.json", "--instance-ip", "10.0.0.7,fd00::7", "--instance-ip", "10.0.0.8"]);
        let settings = args.expect("valid").settings_with("sidecar", no_env).expect("valid");
        assert_eq!(settings.instance_ips.len(), 3);
        let settings = parse(&["--config", "c.json"]).expect("valid").settings_with("sidecar", no_env).expect("valid");
        assert!(settings.instance_ips.is_empty(), "no IP is guessed from 0.0.0.0");
    }

    #[test]
    fn certificate_files_come_as_a_set_and_the_ca_token_defaults_to_the_projected_one() {
        let err = parse(&["--config", "c.json", "--tls-cert", "cert.pem"]).expect_err("no key or roots");
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let args = parse(&["--config", "c.json", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-roots", "r.pem"]);
        let settings = args.expect("a set").settings_with("sidecar", no_env).expect("valid");
        assert_eq!(settings.tls_roots, Some(PathBuf::from("r.pem")));
        assert_eq!(settings.ca_token_file, PathBuf::from("/var/run/secrets/tokens/trellis-ca"));
        let settings = parse(&["--discovery-address", "trellisd", "--cert-ttl", "4s"]).expect("valid");
        assert_eq!(settings.settings_with("sidecar", no_env).expect("valid").cert_ttl, Some(Duration::from_secs(4)));
    }

    #[test]
    fn a_malformed_label_is_an_error_naming_the_flag() {
        for bad in ["app", "=v1", "app=a b", "app=x/y", "app=1,app=2"] {
            let args = parse(&["--config", "c.json", "--labels", bad]).expect("parsed");
            let err = args.settings_with("sidecar", no_env).expect_err(bad).to_string();
            assert!(err.starts_with("invalid value for --labels: "), "{bad}: {err}");
        }
        assert_eq!(parse_labels(""), Ok(BTreeMap::new()));
    }
}
