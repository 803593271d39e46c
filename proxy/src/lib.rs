//! `trellis-proxy`: the data plane. It serves one `ProxyConfig` (from `trellis_api::proxy_config`),
//! compiled once per update into lookup tables and swapped in atomically, on the sidecar's capture
//! listeners (outbound 15001, inbound 15006) or a gateway's ports, with admin (15000), readiness
//! (15021) and Prometheus (15090) endpoints beside them. `init` mode writes the iptables rules that
//! send a pod's traffic through those listeners.
//!
//! Layout, by concern: `detect` (protocol sniffing), `tcp` (opaque streams), `balance` (load
//! balancing), `breaker` (circuit breaking), `outlier` (outlier detection), `route` (pure request
//! routing), `retry` (retries and timeouts), `state` (config compilation and hot reload), `http`
//! (the HTTP proxying path), `listener` (accepting and dispatching connections), `access_log`
//! (one line per request or TCP connection, with Envoy's response flags), `admin`, `metrics`,
//! `drain`, `settings` (flags, env vars, defaults), `tls` (the workload's mesh identity), `identity`
//! (where that identity comes from: the mesh CA or files) and `init` (iptables).

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod balance;
pub mod breaker;
pub mod detect;
pub mod discovery;
pub mod drain;
mod error;
pub mod http;
pub mod identity;
pub mod init;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod outlier;
pub mod probes;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod settings;
pub mod state;
pub mod tcp;
pub mod tls;
pub mod wait;
pub mod workers;

pub use error::Error;
