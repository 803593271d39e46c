//! The demo's layout on this machine, as pure data: which processes run, on which loopback address and
//! ports, with which flags, and how local mode describes them to `trellisd` (a `ServiceEntry` per
//! tutorial service, a `WorkloadEntry` per running instance).
//!
//! Every process binds its own address of one `/24` in 127/8 (Linux serves all of 127/8 on `lo` without
//! setup or root), so the sidecars' fixed ports (15000, 15001, 15006, 15021, 15090) never collide. An
//! application listens on `IP:8080`; its sidecar's inbound listener on `IP:15006` stands in front of it
//! (`--inbound-target`), and the WorkloadEntry's `ports` map sends the mesh there, so every request to a
//! service crosses the caller's sidecar and the callee's. Booking reaches inventory and shipping through
//! its sidecar's explicit proxy (`HTTP_PROXY=http://IP:15080`).
//!
//! Each proxy proves its identity (namespace and service account) to `trellisd`'s CA with the bootstrap
//! token of that identity, a file under the CA folder (`<folder>/.trellis-ca/tokens/`) the script mints
//! before the proxies start; the plan only names it.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use trellis_controlplane::ca::root::ROOT_CERT_FILE;
use trellis_controlplane::ca::{DEFAULT_CA_DIR_NAME, Identity, token_path};

/// The loopback `/24` the demo uses unless `--subnet` says otherwise.
pub const DEFAULT_SUBNET: &str = "127.0.1.0/24";
/// Port every application of the demo listens on (booking's Service port; inventory's and shipping's
/// target port in the tutorial's shape).
pub const APP_PORT: u16 = 8080;
/// Port of a sidecar's outbound capture listener (bound in local mode too, unused without iptables).
pub const OUTBOUND_PORT: u16 = trellis_api::ports::OUTBOUND;
/// Port of a sidecar's inbound listener, where the mesh reaches the application behind it.
pub const INBOUND_PORT: u16 = trellis_api::ports::INBOUND;
/// Port of a sidecar's explicit proxy (`HTTP_PROXY`), which the application's outgoing calls use.
pub const EXPLICIT_PROXY_PORT: u16 = 15080;
/// Proxy admin port (`/config_dump`).
pub const ADMIN_PORT: u16 = trellis_api::ports::ADMIN;
/// Proxy readiness port (`/healthz/ready`).
pub const READINESS_PORT: u16 = trellis_api::ports::READINESS;
/// Proxy Prometheus port (`/stats/prometheus`).
pub const PROMETHEUS_PORT: u16 = trellis_api::ports::PROMETHEUS;
/// Port of `trellisd`'s config stream and status list.
pub const TRELLISD_PORT: u16 = trellis_api::ports::DISCOVERY;
/// Last octet of `trellisd`'s address.
pub const TRELLISD_HOST: u8 = 100;
/// Last octet of the address where the demo serves its JWT issuer's key set (step 06).
pub const JWKS_HOST: u8 = 101;
/// Port of the demo's key set.
pub const JWKS_PORT: u16 = 8080;
/// Last octet of the ingress gateway's address.
pub const GATEWAY_HOST: u8 = 10;
/// The port the tutorial's Gateway declares (`02-booking-gateway.yaml`).
pub const TUTORIAL_GATEWAY_PORT: u16 = 80;
/// The port the Gateway is served on where port 80 needs privileges this user lacks (a Kubernetes
/// Service does the same: the ingress gateway's Service port 80 targets the gateway pod's 8080).
pub const UNPRIVILEGED_GATEWAY_PORT: u16 = 8080;
/// Data-path workers per proxy: the demo runs nine processes on what may be a two-core laptop.
pub const PROXY_CONCURRENCY: usize = 1;
/// Namespace of the tutorial's workloads.
pub const NAMESPACE: &str = "default";
/// Namespace of the ingress gateway (the tutorial's root namespace).
pub const GATEWAY_NAMESPACE: &str = "istio-system";
/// Service account of the ingress gateway.
pub const GATEWAY_SERVICE_ACCOUNT: &str = "trellis-ingressgateway";
/// Node id of the ingress gateway.
pub const GATEWAY_ID: &str = "ingressgateway.istio-system";
/// Variables a child must not inherit from the user's shell: a proxy setting would send the apps'
/// calls around their sidecars.
pub const PROXY_VARIABLES: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"];

/// One tutorial service: its short name, the port clients call and the last octet of its virtual
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: &'static str,
    pub port: u16,
    /// The service's address in the demo's subnet, as a Kubernetes Service has a ClusterIP: a proxy
    /// that knows a name by its address never asks DNS for it. Nothing listens there.
    pub virtual_host: u8,
}

/// The tutorial's services the demo runs.
pub const SERVICES: [ServiceSpec; 3] = [
    ServiceSpec { name: "booking-service", port: 8080, virtual_host: 201 },
    ServiceSpec { name: "inventory-service", port: 80, virtual_host: 202 },
    ServiceSpec { name: "shipping-service", port: 80, virtual_host: 203 },
];

/// One running instance of the ordering app, with its sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The WorkloadEntry's name and the first part of the proxy's node id (`booking-v1.default`).
    pub name: &'static str,
    /// `trellis-ordering --role`.
    pub role: &'static str,
    pub version: &'static str,
    /// The tutorial Service it serves (its `app` label).
    pub service: &'static str,
    pub service_account: &'static str,
    /// Last octet of its address.
    pub host: u8,
}

/// The booking instance (the one the gateway routes to and whose sidecar the checks read).
pub const BOOKING: Workload = Workload {
    name: "booking-v1",
    role: "booking",
    version: "v1",
    service: "booking-service",
    service_account: "booking",
    host: 1,
};
/// Shipping v1, where the STRICT mTLS check knocks without TLS.
pub const SHIPPING_V1: Workload = Workload {
    name: "shipping-v1",
    role: "shipping",
    version: "v1",
    service: "shipping-service",
    service_account: "shipping",
    host: 3,
};

/// Every instance the demo runs, dependencies first.
pub const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "inventory-v1",
        role: "inventory",
        version: "v1",
        service: "inventory-service",
        service_account: "inventory",
        host: 2,
    },
    SHIPPING_V1,
    Workload {
        name: "shipping-v2",
        role: "shipping",
        version: "v2",
        service: "shipping-service",
        service_account: "shipping",
        host: 4,
    },
    BOOKING,
];

/// A loopback `/24` (`127.A.B.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet([u8; 3]);

impl FromStr for Subnet {
    type Err = String;

    /// Accepts `127.A.B.0/24`, `127.A.B.0` or `127.A.B`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("{text:?}: {why} (expected a loopback /24 such as {DEFAULT_SUBNET})");
        let address = text.strip_suffix("/24").unwrap_or(text);
        let parts: Vec<&str> = address.split('.').collect();
        let octets: Vec<u8> = match parts.len() {
            3 | 4 => {
                parts.iter().map(|p| p.parse::<u8>()).collect::<Result<_, _>>().map_err(|_| bad("not an address"))?
            }
            _ => return Err(bad("not an address")),
        };
        if octets.len() == 4 && octets[3] != 0 {
            return Err(bad("the last octet must be 0"));
        }
        if octets[0] != 127 {
            return Err(bad("not in 127.0.0.0/8"));
        }
        if octets[1] == 0 && octets[2] == 0 {
            return Err(bad("127.0.0.0/24 holds the loopback address itself and the proxies' passthrough source"));
        }
        Ok(Subnet([octets[0], octets[1], octets[2]]))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a}.{b}.{c}.0/24")
    }
}

impl Subnet {
    /// The address `host` of this subnet.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.0;
        Ipv4Addr::new(a, b, c, host)
    }
}

/// Which binary a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Trellisd,
    Proxy,
    Ordering,
}

impl Binary {
    /// Every binary the demo needs.
    pub const ALL: [Binary; 3] = [Binary::Trellisd, Binary::Proxy, Binary::Ordering];

    /// The executable's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Binary::Trellisd => "trellisd",
            Binary::Proxy => "trellis-proxy",
            Binary::Ordering => "trellis-ordering",
        }
    }

    /// The Cargo package that builds it.
    pub fn package(self) -> &'static str {
        match self {
            Binary::Trellisd => "trellis-controlplane",
            Binary::Proxy => "trellis-proxy",
            Binary::Ordering => "trellis-ordering",
        }
    }
}

/// How to start one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// A short name for progress lines, errors and the log file.
    pub name: String,
    pub binary: Binary,
    pub args: Vec<String>,
    /// Variables set for this process (on top of the inherited ones minus [`PROXY_VARIABLES`]).
    pub env: Vec<(String, String)>,
}

/// The demo's processes and addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub subnet: Subnet,
    /// The port the ingress gateway serves the tutorial's Gateway on.
    pub gateway_port: u16,
}

impl Plan {
    pub fn ip(&self, workload: &Workload) -> Ipv4Addr {
        self.subnet.ip(workload.host)
    }

    pub fn gateway_ip(&self) -> Ipv4Addr {
        self.subnet.ip(GATEWAY_HOST)
    }

    pub fn trellisd_addr(&self) -> SocketAddr {
        SocketAddr::from((self.subnet.ip(TRELLISD_HOST), TRELLISD_PORT))
    }

    /// Where the demo serves its JWT issuer's key set.
    pub fn jwks_addr(&self) -> SocketAddr {
        SocketAddr::from((self.subnet.ip(JWKS_HOST), JWKS_PORT))
    }

    /// The CA folder `trellisd --folder folder` uses (its default), where the bootstrap tokens live.
    pub fn ca_dir(folder: &Path) -> PathBuf {
        folder.join(DEFAULT_CA_DIR_NAME)
    }

    /// The identity a workload's sidecar gets its certificate for.
    pub fn identity(workload: &Workload) -> Identity {
        Identity { namespace: NAMESPACE.to_owned(), service_account: workload.service_account.to_owned() }
    }

    /// The ingress gateway's identity.
    pub fn gateway_identity() -> Identity {
        Identity { namespace: GATEWAY_NAMESPACE.to_owned(), service_account: GATEWAY_SERVICE_ACCOUNT.to_owned() }
    }

    /// Every identity the demo's proxies hold, once each (two shipping versions share one), for the
    /// bootstrap tokens to mint before the proxies start.
    pub fn identities() -> Vec<Identity> {
        let mut out: Vec<Identity> = Vec::new();
        for identity in WORKLOADS.iter().map(Plan::identity).chain([Plan::gateway_identity()]) {
            if !out.contains(&identity) {
                out.push(identity);
            }
        }
        out
    }

    /// The node id a workload's sidecar reports.
    pub fn proxy_id(workload: &Workload) -> String {
        format!("{}.{NAMESPACE}", workload.name)
    }

    /// The node ids of every proxy the demo starts, sidecars first.
    pub fn proxy_ids(&self) -> Vec<String> {
        WORKLOADS.iter().map(Plan::proxy_id).chain([GATEWAY_ID.to_owned()]).collect()
    }

    /// The ingress gateway's URL for `path`.
    pub fn gateway_url(&self, path: &str) -> String {
        match self.gateway_port {
            80 => format!("http://{}{path}", self.gateway_ip()),
            port => format!("http://{}:{port}{path}", self.gateway_ip()),
        }
    }

    /// URL of `path` on `port` of `workload`'s sidecar.
    pub fn sidecar_url(&self, workload: &Workload, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", self.ip(workload))
    }

    /// The sidecar's Prometheus URL.
    pub fn metrics_url(&self, workload: &Workload) -> String {
        self.sidecar_url(workload, PROMETHEUS_PORT, trellis_api::ports::PROMETHEUS_PATH)
    }

    /// URL of `trellisd`'s list of connected proxies.
    pub fn status_url(&self) -> String {
        format!("http://{}{}", self.trellisd_addr(), trellis_api::push::STATUS_PATH)
    }

    /// `trellisd` in local mode on `folder`.
    pub fn trellisd(&self, folder: &Path) -> Launch {
        Launch {
            name: "trellisd".to_owned(),
            binary: Binary::Trellisd,
            args: strings(&["--folder", &folder.display().to_string(), "--listen", &self.trellisd_addr().to_string()]),
            env: Vec::new(),
        }
    }

    /// The ordering app of `workload`, on `IP:8080`; booking calls through its sidecar's explicit proxy.
    pub fn app(&self, workload: &Workload) -> Launch {
        let ip = self.ip(workload);
        let listen = SocketAddr::from((ip, APP_PORT)).to_string();
        let env = if workload.role == "booking" {
            vec![("HTTP_PROXY".to_owned(), format!("http://{ip}:{EXPLICIT_PROXY_PORT}"))]
        } else {
            Vec::new()
        };
        Launch {
            name: workload.name.to_owned(),
            binary: Binary::Ordering,
            args: strings(&["--role", workload.role, "--version", workload.version, "--listen", &listen]),
            env,
        }
    }

    /// The sidecar of `workload`: inbound listener in front of the app, explicit proxy for its calls, and
    /// its bootstrap token under the CA folder `ca_dir` for its certificate.
    pub fn sidecar(&self, workload: &Workload, ca_dir: &Path) -> Launch {
        let ip = self.ip(workload);
        let mut args = strings(&["sidecar"]);
        args.extend(self.proxy_flags(ip, ca_dir, &token_path(ca_dir, &Plan::identity(workload))));
        args.extend(strings(&[
            "--outbound-port",
            &OUTBOUND_PORT.to_string(),
            "--inbound-port",
            &INBOUND_PORT.to_string(),
            "--inbound-target",
            &SocketAddr::from((ip, APP_PORT)).to_string(),
            "--explicit-proxy-addr",
            &SocketAddr::from((ip, EXPLICIT_PROXY_PORT)).to_string(),
            "--node-id",
            &Plan::proxy_id(workload),
            "--namespace",
            NAMESPACE,
            "--service-account",
            workload.service_account,
            "--labels",
            &format!("app={},version={}", workload.service, workload.version),
        ]));
        Launch { name: format!("{} sidecar", workload.name), binary: Binary::Proxy, args, env: Vec::new() }
    }

    /// The ingress gateway (`istio: ingressgateway` in the root namespace), with its bootstrap token
    /// under the CA folder `ca_dir`.
    pub fn gateway(&self, ca_dir: &Path) -> Launch {
        let mut args = strings(&["gateway"]);
        args.extend(self.proxy_flags(self.gateway_ip(), ca_dir, &token_path(ca_dir, &Plan::gateway_identity())));
        args.extend(strings(&[
            "--node-id",
            GATEWAY_ID,
            "--namespace",
            GATEWAY_NAMESPACE,
            "--service-account",
            GATEWAY_SERVICE_ACCOUNT,
            "--labels",
            "istio=ingressgateway",
        ]));
        Launch { name: "ingress gateway".to_owned(), binary: Binary::Proxy, args, env: Vec::new() }
    }

    /// Flags every proxy of the demo shares: its own address for every listener, the control plane
    /// (config and CA) and the bootstrap token proving its identity to the CA.
    fn proxy_flags(&self, ip: Ipv4Addr, ca_dir: &Path, token_file: &Path) -> Vec<String> {
        let at = |port: u16| SocketAddr::from((ip, port)).to_string();
        strings(&[
            "--discovery-address",
            &self.trellisd_addr().to_string(),
            "--discovery-ca",
            &ca_dir.join(ROOT_CERT_FILE).display().to_string(),
            "--ca-token-file",
            &token_file.display().to_string(),
            "--instance-ip",
            &ip.to_string(),
            "--listen-ip",
            &ip.to_string(),
            "--admin-addr",
            &at(ADMIN_PORT),
            "--readiness-addr",
            &at(READINESS_PORT),
            "--prometheus-addr",
            &at(PROMETHEUS_PORT),
            "--concurrency",
            &PROXY_CONCURRENCY.to_string(),
        ])
    }

    /// Every address a process of the demo binds, with who binds it (the gateway binds its port once
    /// the Gateway step reaches it).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        let proxy_ports = [ADMIN_PORT, READINESS_PORT, PROMETHEUS_PORT];
        let mut out = vec![
            ("trellisd".to_owned(), self.trellisd_addr()),
            ("the demo's JWT key set".to_owned(), self.jwks_addr()),
        ];
        for workload in WORKLOADS {
            let ip = self.ip(&workload);
            out.push((workload.name.to_owned(), SocketAddr::from((ip, APP_PORT))));
            let sidecar = format!("{} sidecar", workload.name);
            for port in [OUTBOUND_PORT, INBOUND_PORT, EXPLICIT_PROXY_PORT].into_iter().chain(proxy_ports) {
                out.push((sidecar.clone(), SocketAddr::from((ip, port))));
            }
        }
        for port in [self.gateway_port].into_iter().chain(proxy_ports) {
            out.push(("ingress gateway".to_owned(), SocketAddr::from((self.gateway_ip(), port))));
        }
        out
    }

    /// The local-mode description of the demo's workloads (`00-local-workloads.yaml`).
    pub fn local_workloads_yaml(&self) -> String {
        let mut out = String::from(
            "# Written by `trellis demo`: the tutorial's services as local mode describes them. A ServiceEntry\n\
             # per service (its Kubernetes name, a virtual address like a ClusterIP, its port and the labels of\n\
             # its workloads) and a WorkloadEntry per running instance, at the loopback address its sidecar\n\
             # binds. `ports` sends the mesh to the sidecar's inbound listener, which forwards to the app on\n\
             # the same address's port 8080.\n",
        );
        for service in SERVICES {
            let _ = write!(
                out,
                "---\n\
                 apiVersion: networking.istio.io/v1\n\
                 kind: ServiceEntry\n\
                 metadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
                 spec:\n  hosts: [{name}.{NAMESPACE}.svc.cluster.local]\n  addresses: [{vip}]\n  \
                 location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n    - number: {port}\n      name: http\n      protocol: HTTP\n  \
                 workloadSelector:\n    labels:\n      app: {name}\n",
                name = service.name,
                port = service.port,
                vip = self.subnet.ip(service.virtual_host),
            );
        }
        for workload in WORKLOADS {
            let _ = write!(
                out,
                "---\n\
                 apiVersion: networking.istio.io/v1\n\
                 kind: WorkloadEntry\n\
                 metadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
                 spec:\n  address: {ip}\n  serviceAccount: {sa}\n  labels:\n    app: {service}\n    \
                 version: {version}\n  ports:\n    http: {INBOUND_PORT}\n",
                name = workload.name,
                ip = self.ip(&workload),
                sa = workload.service_account,
                service = workload.service,
                version = workload.version,
            );
        }
        let _ = write!(
            out,
            "---\n\
             apiVersion: networking.istio.io/v1\n\
             kind: WorkloadEntry\n\
             metadata:\n  name: ingressgateway\n  namespace: {GATEWAY_NAMESPACE}\n\
             spec:\n  address: {ip}\n  serviceAccount: {GATEWAY_SERVICE_ACCOUNT}\n  labels:\n    \
             istio: ingressgateway\n",
            ip = self.gateway_ip(),
        );
        out
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
