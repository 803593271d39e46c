//! The running configuration: a `ProxyConfig` compiled into lookup tables, swapped in whole.
//!
//! [`compile`] turns a config into [`Compiled`] (host maps, compiled routes, balancers, metric handles)
//! once per update; [`Store`] holds the current one behind an `ArcSwap` so a request takes one atomic
//! load and never a lock. Balancer state (in-flight counts, latency estimates) carries over from the
//! previous config for endpoints that stay, so a config update drops nothing in flight; so do the token
//! buckets of rate limits whose rule stays.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use trellis_api::proxy_config::{
    Cluster, HashKey, INBOUND_CATCH_ALL_PORT, InboundListener, InboundMtls, LoadBalancer, Protocol, ProxyConfig,
    UnknownDestinations, VirtualHost,
};

use crate::access_log::AccessLog;
use crate::authz::AuthzPolicies;
use crate::balance::Balancer;
use crate::breaker::Breaker;
use crate::http::h1pool::H1Pool;
use crate::http::pool::ConnOptions;
use crate::jwt::JwtAuthenticator;
use crate::metrics::{ClusterMetrics, Direction, Metrics};
use crate::outlier::Detector;
use crate::ratelimit::{Limiters, RateLimits};
use crate::retry::RetryLimits;
use crate::route::{CompiledRoute, HeaderEdits, Target, compile_route};
use crate::{Error, drain};

/// A hash map with a fast hasher, for the lookups every request makes (keys come from the config,
/// so a client cannot choose them to collide).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Pseudo-cluster name of traffic to destinations the config does not know.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Pseudo-cluster name of traffic refused because its destination is unknown (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// One upstream cluster, ready to pick endpoints from.
#[derive(Debug)]
pub struct ClusterState {
    pub config: Cluster,
    pub balancer: Balancer,
    pub metrics: Arc<ClusterMetrics>,
    /// Connection-pool limits (circuit breaking), when the cluster has any; kept across updates that
    /// leave them unchanged, so requests in flight stay counted.
    pub breaker: Option<Arc<Breaker>>,
    /// How connections to the endpoints are made and kept (timeouts, requests per connection).
    pub connections: ConnOptions,
    /// The cluster's own HTTP/1.1 pool when its connect or idle timeout differs from the proxy's.
    pub h1: Option<Arc<H1Pool>>,
    /// Outlier detection, when the cluster has it.
    pub outlier: Option<Detector>,
    /// Caps on retries in flight (`maxRetries`, retry budget) and their counters.
    pub retry: RetryLimits,
}

impl ClusterState {
    /// What a consistent-hash balancer hashes, if it is one.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.config.load_balancer {
            LoadBalancer::ConsistentHash(key) => Some(key),
            _ => None,
        }
    }
}

/// A compiled virtual host.
#[derive(Debug)]
pub struct VhostState {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub routes: Vec<CompiledRoute>,
    pub tcp: Vec<Target>,
    pub tcp_total_weight: u64,
}

/// Virtual hosts by the names and addresses clients use for them.
#[derive(Debug, Default)]
pub struct HostTable {
    vhosts: Vec<VhostState>,
    /// Exact names, each with the (port, index) pairs it is known on; looked up by `&str`.
    by_host: FastMap<String, Vec<(u16, usize)>>,
    /// `(suffix, port, index)` for `*.suffix` domains; the suffix of `*` is empty.
    wildcards: Vec<(String, u16, usize)>,
    by_addr: FastMap<SocketAddr, usize>,
    /// Names match whatever port the `Host` header carries: a gateway listener's table, where the
    /// listener already fixed the port (Istio gives gateway virtual hosts `host` and `host:*`).
    any_port: bool,
}

impl HostTable {
    /// The table of a sidecar's outbound virtual hosts: a name matches on its virtual host's port.
    fn build(vhosts: &[VirtualHost], cluster_index: &impl Fn(&str) -> Option<usize>) -> Result<Self, Error> {
        Self::build_with(vhosts, cluster_index, false)
    }

    /// The table of one gateway listener: a name matches whatever port the request names
    /// (`reviews.example.com:8080` reaches `reviews.example.com` through a port mapping).
    fn build_gateway(vhosts: &[VirtualHost], cluster_index: &impl Fn(&str) -> Option<usize>) -> Result<Self, Error> {
        Self::build_with(vhosts, cluster_index, true)
    }

    fn build_with(
        vhosts: &[VirtualHost],
        cluster_index: &impl Fn(&str) -> Option<usize>,
        any_port: bool,
    ) -> Result<Self, Error> {
        let mut table = HostTable { any_port, ..HostTable::default() };
        for vhost in vhosts {
            let index = table.vhosts.len();
            let routes = vhost.routes.iter().map(|r| compile_route(r, cluster_index)).collect::<Result<Vec<_>, _>>()?;
            let tcp = vhost
                .tcp
                .iter()
                .map(|w| {
                    let cluster = cluster_index(&w.cluster).ok_or_else(|| Error::Config {
                        origin: format!("virtual host {}", vhost.name),
                        message: format!("unknown cluster {:?}", w.cluster),
                    })?;
                    Ok(Target {
                        cluster,
                        weight: w.weight,
                        request_headers: HeaderEdits::default(),
                        response_headers: HeaderEdits::default(),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let tcp_total_weight = tcp.iter().map(|t| u64::from(t.weight)).sum();
            for domain in vhost.domains.iter().chain(std::iter::once(&vhost.name)) {
                let domain = domain.to_ascii_lowercase();
                if let Some(suffix) = domain.strip_prefix('*') {
                    table.wildcards.push((suffix.to_owned(), vhost.port, index));
                } else {
                    let ports = table.by_host.entry(domain).or_default();
                    if !ports.iter().any(|(p, _)| *p == vhost.port) {
                        ports.push((vhost.port, index));
                    }
                }
            }
            for address in &vhost.addresses {
                match address.parse::<std::net::IpAddr>() {
                    Ok(ip) => {
                        table.by_addr.entry(SocketAddr::new(ip, vhost.port)).or_insert(index);
                    }
                    Err(_) => {
                        return Err(Error::Config {
                            origin: format!("virtual host {}", vhost.name),
                            message: format!("address {address:?} is not an IP address"),
                        });
                    }
                }
            }
            table.vhosts.push(VhostState {
                name: vhost.name.clone(),
                port: vhost.port,
                protocol: vhost.protocol,
                routes,
                tcp,
                tcp_total_weight,
            });
        }
        // Longest wildcard suffix first, so `*.b.example.com` beats `*.example.com` and `*`.
        table.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        Ok(table)
    }

    /// The virtual host for a request's host (without port) on `port`. In a gateway listener's
    /// table the port does not take part: the listener already chose the table.
    pub fn by_authority(&self, host: &str, port: u16) -> Option<&VhostState> {
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let on_port = |p: u16| self.any_port || p == port;
        if let Some(&(_, index)) = self.by_host.get(host).and_then(|ports| ports.iter().find(|(p, _)| on_port(*p))) {
            return Some(&self.vhosts[index]);
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>()
            && let Some(vhost) = self.by_address(SocketAddr::new(ip, port))
        {
            return Some(vhost);
        }
        self.wildcards
            .iter()
            .find(|(suffix, p, _)| on_port(*p) && host.ends_with(suffix.as_str()))
            .map(|(_, _, i)| &self.vhosts[*i])
    }

    /// The virtual host whose service address is `addr`.
    pub fn by_address(&self, addr: SocketAddr) -> Option<&VhostState> {
        self.by_addr.get(&addr).map(|&index| &self.vhosts[index])
    }

    /// Every virtual host, in config order.
    pub fn vhosts(&self) -> &[VhostState] {
        &self.vhosts
    }
}

/// A config compiled for serving.
#[derive(Debug)]
pub struct Compiled {
    pub config: Arc<ProxyConfig>,
    pub clusters: Vec<Arc<ClusterState>>,
    pub outbound: HostTable,
    pub gateway: BTreeMap<u16, HostTable>,
    /// Declared protocol of each inbound port.
    pub inbound: FastMap<u16, Protocol>,
    /// Mutual-TLS mode of each inbound port; [`INBOUND_CATCH_ALL_PORT`] stands for the others.
    pub inbound_mtls: FastMap<u16, InboundMtls>,
    /// Authorization policies of each inbound port (the catch-all's for the others).
    pub inbound_authz: FastMap<u16, Arc<AuthzPolicies>>,
    /// JWT providers of each inbound port (the catch-all's for the others).
    pub inbound_jwt: FastMap<u16, Arc<JwtAuthenticator>>,
    /// Local rate limits of each inbound port (the catch-all's for the others).
    pub inbound_rate_limits: FastMap<u16, Arc<RateLimits>>,
    /// Every rate limiter by its rule, so the next config keeps the buckets of unchanged rules.
    pub rate_limiters: Limiters,
    pub unknown_destinations: UnknownDestinations,
    pub passthrough: Arc<ClusterMetrics>,
    pub inbound_metrics: Arc<ClusterMetrics>,
}

impl Compiled {
    /// The cluster at `index` (indices come from this config's routes).
    pub fn cluster(&self, index: usize) -> &Arc<ClusterState> {
        &self.clusters[index]
    }

    /// The mutual-TLS mode of inbound port `port` (the catch-all's for undeclared ports; PERMISSIVE
    /// when the config has neither).
    pub fn inbound_mtls(&self, port: u16) -> InboundMtls {
        self.inbound_mtls
            .get(&port)
            .or_else(|| self.inbound_mtls.get(&INBOUND_CATCH_ALL_PORT))
            .copied()
            .unwrap_or_default()
    }

    /// The authorization policies of inbound port `port` (the catch-all's for undeclared ports), if
    /// any apply.
    pub fn inbound_authz(&self, port: u16) -> Option<&AuthzPolicies> {
        let policies = self.inbound_authz.get(&port).or_else(|| self.inbound_authz.get(&INBOUND_CATCH_ALL_PORT))?;
        (!policies.is_empty()).then_some(&**policies)
    }

    /// The JWT providers of inbound port `port` (the catch-all's for undeclared ports), if any.
    pub fn inbound_jwt(&self, port: u16) -> Option<&JwtAuthenticator> {
        let providers = self.inbound_jwt.get(&port).or_else(|| self.inbound_jwt.get(&INBOUND_CATCH_ALL_PORT))?;
        (!providers.is_empty()).then_some(&**providers)
    }

    /// The local rate limits of inbound port `port` (the catch-all's for undeclared ports), if any.
    pub fn inbound_rate_limits(&self, port: u16) -> Option<&RateLimits> {
        if self.rate_limiters.is_empty() {
            // The usual case costs a length check, not a lookup.
            return None;
        }
        let limits =
            self.inbound_rate_limits.get(&port).or_else(|| self.inbound_rate_limits.get(&INBOUND_CATCH_ALL_PORT))?;
        (!limits.is_empty()).then_some(&**limits)
    }

    /// The labels of this proxy's workload, for `sourceLabels` matches.
    pub fn node_labels(&self) -> &BTreeMap<String, String> {
        &self.config.node.labels
    }
}

/// Compiles `config`, reusing balancer state from `previous` for clusters and endpoints that stay.
pub fn compile(config: ProxyConfig, previous: Option<&Compiled>, metrics: &Metrics) -> Result<Compiled, Error> {
    let issues = config.check();
    if issues.has_errors() {
        let message = issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>().join("; ");
        return Err(Error::Config { origin: format!("version {}", config.version), message });
    }
    let old: HashMap<&str, &Arc<ClusterState>> =
        previous.map(|p| p.clusters.iter().map(|c| (c.config.name.as_str(), c)).collect()).unwrap_or_default();
    let direction = match config.mode {
        trellis_api::proxy_config::ProxyMode::Sidecar => Direction::Outbound,
        trellis_api::proxy_config::ProxyMode::Gateway => Direction::Gateway,
    };
    let clusters: Vec<Arc<ClusterState>> = config
        .clusters
        .iter()
        .map(|cluster| {
            let previous = old.get(cluster.name.as_str());
            let balancer = match previous {
                Some(previous) if previous.config.load_balancer == cluster.load_balancer => {
                    previous.balancer.update(&cluster.endpoints)
                }
                _ => Balancer::new(&cluster.load_balancer, &cluster.endpoints),
            };
            let same_pool = previous.filter(|p| p.config.connection_pool == cluster.connection_pool);
            let pool = cluster.connection_pool.as_ref();
            let connections = ConnOptions::of(pool);
            let state = Arc::new(ClusterState {
                config: cluster.clone(),
                balancer,
                metrics: metrics.cluster(direction, &cluster.name),
                breaker: match same_pool {
                    Some(previous) => previous.breaker.clone(),
                    None => pool.and_then(Breaker::for_limits),
                },
                h1: match same_pool {
                    Some(previous) => previous.h1.clone(),
                    None => connections.needs_own_h1_pool().then(|| crate::http::cluster_h1_pool(&connections)),
                },
                connections,
                outlier: cluster.outlier_detection.as_ref().map(Detector::new),
                retry: RetryLimits::new(cluster),
            });
            if let (Some(detector), Ok(runtime)) = (&state.outlier, tokio::runtime::Handle::try_current()) {
                runtime.spawn(crate::outlier::run_sweeps(Arc::downgrade(&state), detector.interval()));
            }
            state
        })
        .collect();
    let names: HashMap<&str, usize> = config.clusters.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let cluster_index = |name: &str| names.get(name).copied();
    let outbound = HostTable::build(&config.outbound.virtual_hosts, &cluster_index)?;
    let gateway = config
        .gateway_listeners
        .iter()
        .map(|l| Ok((l.port, HostTable::build_gateway(&l.virtual_hosts, &cluster_index)?)))
        .collect::<Result<BTreeMap<_, _>, Error>>()?;
    let inbound = config.inbound.iter().map(|l| (l.port, l.protocol)).collect();
    let inbound_mtls = config.inbound.iter().map(|l| (l.port, l.mtls)).collect();
    let inbound_authz = compile_per_listener(&config, |l| &l.authorization, AuthzPolicies::compile)?;
    let inbound_jwt = compile_per_listener(&config, |l| &l.jwt, JwtAuthenticator::compile)?;
    let rules = config.inbound.iter().flat_map(|l| &l.rate_limits);
    let rate_limiters = crate::ratelimit::limiters(rules, previous.map(|p| &p.rate_limiters), metrics);
    let inbound_rate_limits =
        compile_per_listener(&config, |l| &l.rate_limits, |r| Ok(RateLimits::new(r, &rate_limiters)))?;
    let unknown_destinations = config.outbound.unknown_destinations;
    let passthrough_name = match unknown_destinations {
        UnknownDestinations::Passthrough => PASSTHROUGH_CLUSTER,
        UnknownDestinations::Refuse => BLACKHOLE_CLUSTER,
    };
    Ok(Compiled {
        clusters,
        outbound,
        gateway,
        inbound,
        inbound_mtls,
        inbound_authz,
        inbound_jwt,
        inbound_rate_limits,
        rate_limiters,
        unknown_destinations,
        passthrough: metrics.cluster(direction, passthrough_name),
        inbound_metrics: metrics.cluster(Direction::Inbound, "inbound"),
        config: Arc::new(config),
    })
}

/// Compiles one part of each inbound listener (its authorization policies, its JWT providers) once;
/// listeners with equal parts (the usual case: policies apply per workload) share one compiled value.
fn compile_per_listener<'c, T: PartialEq + 'c, C>(
    config: &'c ProxyConfig,
    part: impl Fn(&'c InboundListener) -> &'c Vec<T>,
    compile: impl Fn(&[T]) -> Result<C, Error>,
) -> Result<FastMap<u16, Arc<C>>, Error> {
    let mut compiled: Vec<(&[T], Arc<C>)> = Vec::new();
    let mut by_port = FastMap::default();
    for listener in &config.inbound {
        let source = part(listener).as_slice();
        let value = match compiled.iter().find(|(seen, _)| *seen == source) {
            Some((_, value)) => value.clone(),
            None => {
                let value = Arc::new(compile(source).map_err(|err| Error::Config {
                    origin: format!("version {}", config.version),
                    message: format!("inbound port {}: {err}", listener.port),
                })?);
                compiled.push((source, value.clone()));
                value
            }
        };
        by_port.insert(listener.port, value);
    }
    Ok(by_port)
}

/// Parses a config file's text: JSON, or YAML for hand-written files.
pub fn parse(text: &str) -> Result<ProxyConfig, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}

/// The current compiled config and what happened to the last update.
#[derive(Debug, Default)]
pub struct Store {
    current: ArcSwapOption<Compiled>,
    last_error: Mutex<Option<String>>,
    /// The access log, switched on, off or to another format by each config applied.
    pub access_log: AccessLog,
}

impl Store {
    /// The config in force, if one was ever loaded.
    pub fn current(&self) -> Option<Arc<Compiled>> {
        self.current.load_full()
    }

    /// Whether a config has been loaded (the proxy is ready only then).
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Why the last update was refused, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Compiles `config` and swaps it in; on error the current config stays and the error is kept.
    pub fn apply(&self, config: ProxyConfig, metrics: &Metrics) -> Result<(), Error> {
        let previous = self.current.load_full();
        let result = compile(config, previous.as_deref(), metrics);
        metrics.reloaded(result.is_ok());
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(compiled) => {
                tracing::info!(version = %compiled.config.version, "config applied");
                self.access_log.configure(&compiled.config.telemetry, metrics);
                self.current.store(Some(Arc::new(compiled)));
                *last_error = None;
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "config refused; keeping the last good config");
                *last_error = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Reads, parses and applies a config file.
    pub fn load_file(&self, path: &Path, metrics: &Metrics) -> Result<(), Error> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config { origin: origin.clone(), message: e.to_string() });
        let config = text.and_then(|t| parse(&t).map_err(|message| Error::Config { origin: origin.clone(), message }));
        match config {
            Ok(config) => self.apply(config, metrics),
            Err(err) => {
                metrics.reloaded(false);
                tracing::warn!(error = %err, "config refused; keeping the last good config");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
                Err(err)
            }
        }
    }
}

/// Reloads `path` whenever its modification time or size changes, until `drain` starts.
pub async fn watch_file(path: PathBuf, poll: Duration, store: Arc<Store>, metrics: Arc<Metrics>, drain: drain::Watch) {
    let stamp = |path: &Path| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut seen = stamp(&path);
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = drain.signaled() => return,
        }
        let now = stamp(&path);
        if now.is_some() && now != seen {
            seen = now;
            // Errors are logged and kept for /config_dump; the last good config keeps serving.
            let _ = store.load_file(&path, &metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use trellis_api::proxy_config::{GatewayListener, Node, ProxyMode};

    use super::*;

    fn vhost(name: &str, port: u16, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            port,
            protocol: Protocol::Http,
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            addresses: Vec::new(),
            routes: Vec::new(),
            tcp: Vec::new(),
        }
    }

    fn compiled(mode: ProxyMode, vhosts: Vec<VirtualHost>) -> Compiled {
        let mut config = ProxyConfig::new("1", Node::default(), mode);
        match mode {
            ProxyMode::Gateway => {
                config.gateway_listeners =
                    vec![GatewayListener { port: 80, protocol: Protocol::Http, virtual_hosts: vhosts }]
            }
            ProxyMode::Sidecar => config.outbound.virtual_hosts = vhosts,
        }
        compile(config, None, &Metrics::new()).expect("compiles")
    }

    fn found<'t>(table: &'t HostTable, host: &str, port: u16) -> Option<&'t str> {
        table.by_authority(host, port).map(|v| v.name.as_str())
    }

    #[test]
    fn a_gateway_host_matches_whatever_port_the_host_header_names() {
        let gateway = compiled(
            ProxyMode::Gateway,
            vec![
                vhost("reviews", 80, &["reviews.example.com"]),
                vhost("shop", 80, &["*.shop.example.com"]),
                vhost("catch-all", 80, &["*"]),
            ],
        );
        let table = &gateway.gateway[&80];
        for port in [80, 8080, 443] {
            assert_eq!(found(table, "reviews.example.com", port), Some("reviews"), "port {port}");
            assert_eq!(found(table, "Reviews.Example.com", port), Some("reviews"), "port {port}");
            assert_eq!(found(table, "cart.shop.example.com", port), Some("shop"), "port {port}");
            assert_eq!(found(table, "anything.else", port), Some("catch-all"), "port {port}");
        }
    }

    #[test]
    fn a_gateway_without_a_catch_all_still_refuses_unknown_hosts_on_any_port() {
        let gateway = compiled(ProxyMode::Gateway, vec![vhost("shop", 80, &["*.example.com"])]);
        let table = &gateway.gateway[&80];
        assert_eq!(found(table, "cart.example.com", 8080), Some("shop"));
        assert_eq!(found(table, "example.com", 8080), None, "`*.example.com` needs a label before the suffix");
        assert_eq!(found(table, "cart.example.org", 80), None);
    }

    #[test]
    fn a_sidecar_host_still_matches_only_on_its_own_port() {
        let sidecar = compiled(
            ProxyMode::Sidecar,
            vec![vhost("reviews-9080", 9080, &["reviews"]), vhost("reviews-9090", 9090, &["reviews"])],
        );
        assert_eq!(found(&sidecar.outbound, "reviews", 9080), Some("reviews-9080"));
        assert_eq!(found(&sidecar.outbound, "reviews", 9090), Some("reviews-9090"));
        assert_eq!(found(&sidecar.outbound, "reviews", 8080), None);
    }
}
