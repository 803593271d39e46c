//! What `trellis run` tells the user, as pure data: for each WorkloadEntry of the folder, the
//! `trellis-proxy` command of its sidecar (or gateway) and where its process listens.
//!
//! Each proxy binds every listener on its workload's own loopback address (`127.0.1.N`: Linux serves all
//! of 127/8 without setup), so none collides on 15000/15001/15006/15021/15090. Without root there is no
//! traffic capture: the process sends its calls through the sidecar's explicit proxy
//! (`HTTP_PROXY=http://IP:15080`), and the sidecar's inbound listener stands on the address the mesh
//! sends the workload's traffic to (the WorkloadEntry's address and port, as translate computes the
//! workload's inbound ports) and forwards to the process (`--inbound-target`). The process therefore
//! listens elsewhere: on the service's own target port when the WorkloadEntry's `ports` send the mesh
//! to another port, else on the mesh port shifted by [`APPLICATION_PORT_OFFSET`].

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use trellis_api::proxy_config::ProxyMode;
use trellis_controlplane::ca;
use trellis_controlplane::index::{Index, Kind, TargetPort, Workload};
use trellis_controlplane::translate::scope;
use trellis_controlplane::{ProxyIdentity, translate};

/// Port of a sidecar's explicit proxy (`HTTP_PROXY`).
pub const EXPLICIT_PROXY_PORT: u16 = 15080;
/// Proxy admin port.
pub const ADMIN_PORT: u16 = trellis_api::ports::ADMIN;
/// Proxy readiness port.
pub const READINESS_PORT: u16 = trellis_api::ports::READINESS;
/// Proxy Prometheus port.
pub const PROMETHEUS_PORT: u16 = trellis_api::ports::PROMETHEUS;
/// How far the process's port is moved from the mesh port its sidecar takes, when the folder does not
/// say where the process listens.
pub const APPLICATION_PORT_OFFSET: u16 = 10000;
/// Longest line of a printed command before it wraps.
pub const COMMAND_WIDTH: usize = 96;
/// Ports below this need privileges to bind (unless `net.ipv4.ip_unprivileged_port_start` is lower).
pub const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// How one workload runs in local mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `namespace/name` of the WorkloadEntry.
    pub workload: String,
    pub ip: Option<IpAddr>,
    pub service_account: String,
    pub role: Role,
    /// The workload's CA identity and the file its bootstrap token goes in, when trellisd runs a CA.
    pub token: Option<(ca::Identity, PathBuf)>,
    /// The proxy's command line (program first), when the workload can have one.
    pub command: Vec<String>,
    /// Things the user should know (ports that cannot be fronted, privileged ports...).
    pub notes: Vec<String>,
}

/// What the proxy of a workload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A sidecar; `application` is where the process listens behind the inbound listener on `inbound`.
    Sidecar { inbound: Option<u16>, application: Option<SocketAddr>, explicit_proxy: Option<SocketAddr> },
    /// A gateway serving these ports.
    Gateway { ports: Vec<u16> },
}

/// The launch of every WorkloadEntry in `index`, whose proxies follow `control_plane`; `proxy` is the
/// `trellis-proxy` program to name in commands. With `ca_dir` (the folder of trellisd's CA), each proxy
/// is given its bootstrap token file there, to obtain its certificate with.
pub fn plan(index: &Index, control_plane: SocketAddr, proxy: &str, ca_dir: Option<&Path>) -> Vec<Launch> {
    index
        .of_kind(Kind::WorkloadEntry)
        .filter_map(|(key, _)| Some((key, index.workload(key)?)))
        .map(|(key, workload)| {
            let identity = ProxyIdentity::for_workload(index, key, ProxyMode::Sidecar);
            launch(index, identity, workload, control_plane, proxy, ca_dir)
        })
        .collect()
}

fn launch(
    index: &Index,
    identity: Option<ProxyIdentity>,
    workload: &Workload,
    control_plane: SocketAddr,
    proxy: &str,
    ca_dir: Option<&Path>,
) -> Launch {
    let mut launch = Launch {
        workload: format!("{}/{}", workload.namespace, workload.name),
        ip: workload.ip(),
        service_account: workload.service_account.clone(),
        role: Role::Sidecar { inbound: None, application: None, explicit_proxy: None },
        token: None,
        command: Vec::new(),
        notes: Vec::new(),
    };
    let (Some(ip), Some(mut identity)) = (workload.ip(), identity) else {
        launch.notes.push(format!("its address {:?} is not an IP address, so no proxy can bind it", workload.address));
        return launch;
    };
    if !ip.is_loopback() {
        launch.notes.push(format!("{ip} is not a loopback address: its proxy binds it only if this machine has it"));
    }
    identity.mode = ProxyMode::Gateway;
    let gateway_ports: Vec<u16> = translate(index, &identity).config.gateway_listeners.iter().map(|l| l.port).collect();
    let mode = if gateway_ports.is_empty() { "sidecar" } else { "gateway" };
    let mut command = vec![proxy.to_owned(), mode.to_owned()];
    command.extend(flags(&[("--discovery-address", &control_plane.to_string())]));
    let labels: Vec<String> = workload.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    command.extend(flags(&[("--node-id", &identity.id), ("--namespace", &workload.namespace)]));
    command.extend(flags(&[("--service-account", &workload.service_account)]));
    if !labels.is_empty() {
        command.extend(flags(&[("--labels", &labels.join(","))]));
    }
    if let Some(ca_dir) = ca_dir {
        match ca::Identity::new(&workload.namespace, &workload.service_account) {
            Ok(ca_identity) => {
                let file = ca::token_path(ca_dir, &ca_identity);
                command.extend(flags(&[("--ca-token-file", &file.display().to_string())]));
                // The config and certificates come over TLS, verified with the mesh's root.
                let roots = ca_dir.join(ca::root::ROOT_CERT_FILE);
                command.extend(flags(&[("--discovery-ca", &roots.display().to_string())]));
                launch.token = Some((ca_identity, file));
            }
            Err(why) => launch.notes.push(format!("it gets no certificate (mutual TLS): {why}")),
        }
    }
    let at = |port: u16| SocketAddr::new(ip, port).to_string();
    command.extend(flags(&[("--listen-ip", &ip.to_string()), ("--instance-ip", &ip.to_string())]));
    command.extend(flags(&[("--admin-addr", &at(ADMIN_PORT)), ("--readiness-addr", &at(READINESS_PORT))]));
    command.extend(flags(&[("--prometheus-addr", &at(PROMETHEUS_PORT))]));
    if !gateway_ports.is_empty() {
        let privileged: Vec<String> =
            gateway_ports.iter().filter(|p| **p < FIRST_UNPRIVILEGED_PORT).map(u16::to_string).collect();
        if !privileged.is_empty() {
            launch.notes.push(format!(
                "port {} needs privileges to bind: run the gateway as root, give it cap_net_bind_service, or lower \
                 net.ipv4.ip_unprivileged_port_start",
                privileged.join(", ")
            ));
        }
        launch.role = Role::Gateway { ports: gateway_ports };
        launch.command = command;
        return launch;
    }
    identity.mode = ProxyMode::Sidecar;
    let inbound: Vec<u16> = translate(index, &identity).config.inbound.iter().map(|l| l.port).collect();
    let explicit_proxy = SocketAddr::new(ip, EXPLICIT_PROXY_PORT);
    command.extend(flags(&[("--explicit-proxy-addr", &explicit_proxy.to_string())]));
    let front = inbound.first().copied();
    let application = front.map(|port| SocketAddr::new(ip, application_port(index, workload, port)));
    if let (Some(port), Some(application)) = (front, application) {
        command.extend(flags(&[("--inbound-port", &port.to_string()), ("--inbound-target", &application.to_string())]));
    }
    if inbound.len() > 1 {
        let others: Vec<String> = inbound[1..].iter().map(u16::to_string).collect();
        launch.notes.push(format!(
            "it serves ports {} too, which local mode does not front (one inbound port per sidecar)",
            others.join(", ")
        ));
    }
    launch.role = Role::Sidecar { inbound: front, application, explicit_proxy: Some(explicit_proxy) };
    launch.command = command;
    launch
}

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().flat_map(|(flag, value)| [(*flag).to_owned(), (*value).to_owned()]).collect()
}

/// Where the process of `workload` listens when its sidecar takes the mesh port `inbound`: the target
/// port of the service port the WorkloadEntry moved to `inbound`, else `inbound` shifted.
pub fn application_port(index: &Index, workload: &Workload, inbound: u16) -> u16 {
    for service in index.services().filter(|s| s.namespace() == workload.namespace) {
        if !service.selector.as_ref().is_some_and(|selector| scope::selects(selector, &workload.labels)) {
            continue;
        }
        for port in &service.ports {
            let natural = match &port.target_port {
                TargetPort::Same => port.port,
                TargetPort::Number(number) => *number,
                TargetPort::Name(_) => continue,
            };
            if workload.ports.get(&port.name) == Some(&inbound) && natural != inbound {
                return natural;
            }
        }
    }
    inbound.checked_add(APPLICATION_PORT_OFFSET).unwrap_or_else(|| inbound - APPLICATION_PORT_OFFSET)
}

/// The instructions `trellis run` prints for `launches`.
pub fn render(launches: &[Launch]) -> String {
    let mut out = String::new();
    if launches.is_empty() {
        out.push_str(
            "The folder has no WorkloadEntry: describe each process as a WorkloadEntry with its own loopback\n\
             address (127.0.1.N), selected by a ServiceEntry, and this prints how to start its sidecar.\n",
        );
        return out;
    }
    out.push_str("Start each workload beside its proxy, each on its own loopback address:\n");
    for launch in launches {
        let address = launch.ip.map_or_else(|| "no IP".to_owned(), |ip| ip.to_string());
        let _ = write!(out, "\n{} ({address}, service account {})", launch.workload, launch.service_account);
        match &launch.role {
            Role::Gateway { ports } => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                let _ = writeln!(out, ": a gateway serving port {}", ports.join(", "));
            }
            Role::Sidecar { .. } => out.push('\n'),
        }
        if !launch.command.is_empty() {
            let _ = writeln!(out, "  proxy:\n    {}", shell_command(&launch.command));
        }
        if let Role::Sidecar { inbound, application, explicit_proxy: Some(explicit) } = &launch.role {
            match (inbound, application) {
                (Some(inbound), Some(application)) => {
                    let _ = writeln!(
                        out,
                        "  process: listen on {application} (the sidecar takes the mesh's traffic on port {inbound})"
                    );
                }
                _ => out.push_str("  process: serves no port of a service (a client only)\n"),
            }
            let _ = writeln!(out, "    and send its calls through the sidecar: HTTP_PROXY=http://{explicit}");
        }
        for note in &launch.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    out
}

/// `words` as one shell command line, wrapped before a flag (kept with its value) that would make the
/// line longer than [`COMMAND_WIDTH`].
pub fn shell_command(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
    let mut units: Vec<String> = Vec::new();
    let mut i = 0;
    while i < quoted.len() {
        let takes_value = quoted[i].starts_with("--") && quoted.get(i + 1).is_some_and(|next| !next.starts_with("--"));
        let width = if takes_value { 2 } else { 1 };
        units.push(quoted[i..i + width].join(" "));
        i += width;
    }
    let mut out = String::new();
    let mut line = 0;
    for (n, unit) in units.iter().enumerate() {
        if n > 0 && unit.starts_with("--") && line + 1 + unit.len() > COMMAND_WIDTH {
            out.push_str(" \\\n      ");
            line = 6;
        } else if n > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(unit);
        line += unit.len();
    }
    out
}

/// `word` quoted for a POSIX shell when it needs to be.
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
