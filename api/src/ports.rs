//! The mesh's well-known ports and paths (Istio's numbers, so its probes, dashboards and habits
//! carry over): one definition for the proxy that serves them, the injector that writes probes for
//! them, the local-mode planners that give each sidecar its own address, and the benchmarks.

/// The proxy's outbound capture listener (iptables redirects the workload's outgoing TCP here).
pub const OUTBOUND: u16 = 15001;
/// The proxy's inbound capture listener (iptables redirects incoming TCP here).
pub const INBOUND: u16 = 15006;
/// The proxy's admin endpoint (`/config_dump`, `/logging`, `/quitquitquit`), loopback only.
pub const ADMIN: u16 = 15000;
/// The proxy's readiness endpoint, [`READINESS_PATH`].
pub const READINESS: u16 = 15021;
/// The path that answers 200 once the proxy holds a config.
pub const READINESS_PATH: &str = "/healthz/ready";
/// The proxy's Prometheus endpoint, [`PROMETHEUS_PATH`].
pub const PROMETHEUS: u16 = 15090;
/// The path of the proxy's metrics in Prometheus text format.
pub const PROMETHEUS_PATH: &str = "/stats/prometheus";
/// `trellisd`'s config stream and CA (TLS).
pub const DISCOVERY: u16 = 15012;
/// The injection webhook (HTTPS).
pub const WEBHOOK: u16 = 15017;
