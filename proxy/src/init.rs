//! `init` mode: writes the iptables rules that send a pod's TCP through its sidecar, then exits.
//!
//! Inbound TCP is redirected to the inbound capture port (15006) and outbound TCP to the outbound
//! capture port (15001), in `TRELLIS_*` chains of the `nat` table shaped like Istio's
//! `istio-iptables` REDIRECT mode: the proxy's own traffic (UID/GID 1337) is never captured, traffic
//! to 127.0.0.1/::1 is never captured, the app calling its own pod IP over `lo` goes straight to the
//! app, while the proxy calling its own pod IP goes through inbound capture. The proxy's admin,
//! readiness and metrics ports and the capture ports are never captured inbound. Port and CIDR lists
//! take the values of Istio's `traffic.sidecar.istio.io/*` annotations. IPv4 rules go to `iptables`
//! and IPv6 rules to `ip6tables`, each family getting only its own CIDRs.
//!
//! Split as: `config` (flag values to a validated `InitConfig`), `rules` (a pure function from
//! `InitConfig` to `iptables-restore` text, and parsers of `iptables-save` output) and `backend`
//! (detecting nft or legacy, running `*-save`/`*-restore`). Running twice leaves exactly the same
//! rules: the chains are redeclared (so flushed) under `--noflush` and the jumps from `PREROUTING`
//! and `OUTPUT` are only added when absent.
//!
//! Privileges: no root needed, only `CAP_NET_ADMIN` and `CAP_NET_RAW` in the pod's network
//! namespace, and they must reach the `iptables` and `ip` programs this mode runs, that is be in
//! the ambient set for a non-root user, for example
//! `setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps -all,+net_admin,+net_raw
//! --ambient-caps -all,+net_admin,+net_raw --bounding-set -all,+net_admin,+net_raw trellis-proxy init`.
//! With iptables-legacy as non-root the lock file moves to the temporary directory (see `backend`).
//!
//! The proxy's side of the contract: bind the inbound passthrough source
//! (`INBOUND_PASSTHROUGH_SOURCE_V4` 127.0.0.6, `INBOUND_PASSTHROUGH_SOURCE_V6` ::6) when forwarding
//! inbound traffic to the app, and run as UID/GID 1337.

pub mod backend;
pub mod config;
pub mod rules;
#[cfg(test)]
mod tests;

pub use config::{Cidr, Family, InitConfig, IptablesMode, Ipv6Mode, Selection};
pub use rules::{INBOUND_PASSTHROUGH_SOURCE_V4, INBOUND_PASSTHROUGH_SOURCE_V6, owned_lines, plan_text, restore_text};

use crate::Error;

/// Default inbound capture port, the redirect target of inbound TCP.
pub const DEFAULT_INBOUND_PORT: u16 = crate::settings::DEFAULT_INBOUND_PORT;
/// Default outbound capture port, the redirect target of outbound TCP.
pub const DEFAULT_OUTBOUND_PORT: u16 = crate::settings::DEFAULT_OUTBOUND_PORT;
/// Default UID of the proxy, whose traffic is never captured.
pub const DEFAULT_PROXY_UID: u32 = crate::settings::PROXY_UID;
/// Default GID of the proxy, whose traffic is never captured.
pub const DEFAULT_PROXY_GID: u32 = crate::settings::PROXY_UID;
/// Inbound ports never captured whatever the flags say: admin (15000), readiness (15021) and
/// Prometheus (15090). The two capture ports are never captured either.
pub const ALWAYS_EXCLUDED_INBOUND_PORTS: [u16; 3] = [15000, 15021, 15090];
/// Default `--include-inbound-ports`: every inbound port.
pub const DEFAULT_INCLUDE_INBOUND_PORTS: &str = "*";
/// Default `--exclude-inbound-ports`: none beyond `ALWAYS_EXCLUDED_INBOUND_PORTS`.
pub const DEFAULT_EXCLUDE_INBOUND_PORTS: &str = "";
/// Default `--include-outbound-ports`: none (only matters when not every IP range is included).
pub const DEFAULT_INCLUDE_OUTBOUND_PORTS: &str = "";
/// Default `--exclude-outbound-ports`: none.
pub const DEFAULT_EXCLUDE_OUTBOUND_PORTS: &str = "";
/// Default `--include-outbound-ip-ranges`: every destination.
pub const DEFAULT_INCLUDE_OUTBOUND_IP_RANGES: &str = "*";
/// Default `--exclude-outbound-ip-ranges`: none.
pub const DEFAULT_EXCLUDE_OUTBOUND_IP_RANGES: &str = "";
/// Default `--ipv6`: on when the network namespace has IPv6 enabled.
pub const DEFAULT_IPV6: &str = "auto";
/// Default `--iptables-mode`: detect nft or legacy.
pub const DEFAULT_IPTABLES_MODE: &str = "auto";

/// Env var of `--inbound-port` (shared with the sidecar's flag of the same name).
pub const ENV_INBOUND_PORT: &str = "TRELLIS_INBOUND_PORT";
/// Env var of `--outbound-port` (shared with the sidecar's flag of the same name).
pub const ENV_OUTBOUND_PORT: &str = "TRELLIS_OUTBOUND_PORT";
/// Env var of `--proxy-uid`.
pub const ENV_PROXY_UID: &str = "TRELLIS_PROXY_UID";
/// Env var of `--proxy-gid`.
pub const ENV_PROXY_GID: &str = "TRELLIS_PROXY_GID";
/// Env var of `--include-inbound-ports` (annotation `traffic.sidecar.istio.io/includeInboundPorts`).
pub const ENV_INCLUDE_INBOUND_PORTS: &str = "TRELLIS_INCLUDE_INBOUND_PORTS";
/// Env var of `--exclude-inbound-ports` (annotation `traffic.sidecar.istio.io/excludeInboundPorts`).
pub const ENV_EXCLUDE_INBOUND_PORTS: &str = "TRELLIS_EXCLUDE_INBOUND_PORTS";
/// Env var of `--include-outbound-ports` (annotation `traffic.sidecar.istio.io/includeOutboundPorts`).
pub const ENV_INCLUDE_OUTBOUND_PORTS: &str = "TRELLIS_INCLUDE_OUTBOUND_PORTS";
/// Env var of `--exclude-outbound-ports` (annotation `traffic.sidecar.istio.io/excludeOutboundPorts`).
pub const ENV_EXCLUDE_OUTBOUND_PORTS: &str = "TRELLIS_EXCLUDE_OUTBOUND_PORTS";
/// Env var of `--include-outbound-ip-ranges` (annotation `traffic.sidecar.istio.io/includeOutboundIPRanges`).
pub const ENV_INCLUDE_OUTBOUND_IP_RANGES: &str = "TRELLIS_INCLUDE_OUTBOUND_IP_RANGES";
/// Env var of `--exclude-outbound-ip-ranges` (annotation `traffic.sidecar.istio.io/excludeOutboundIPRanges`).
pub const ENV_EXCLUDE_OUTBOUND_IP_RANGES: &str = "TRELLIS_EXCLUDE_OUTBOUND_IP_RANGES";
/// Env var of `--ipv6`.
pub const ENV_IPV6: &str = "TRELLIS_IPV6";
/// Env var of `--iptables-mode`.
pub const ENV_IPTABLES_MODE: &str = "TRELLIS_IPTABLES_MODE";
/// Env var of `--dry-run` (`true`/`false`).
pub const ENV_DRY_RUN: &str = "TRELLIS_DRY_RUN";

/// Flags of `trellis-proxy init`. List values are comma separated, as in Istio's annotations.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Inbound capture port: where inbound TCP is redirected.
    #[arg(long, env = ENV_INBOUND_PORT, default_value_t = DEFAULT_INBOUND_PORT)]
    pub inbound_port: u16,
    /// Outbound capture port: where outbound TCP is redirected.
    #[arg(long, env = ENV_OUTBOUND_PORT, default_value_t = DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// UID the proxy runs as; its traffic is never captured.
    #[arg(long, env = ENV_PROXY_UID, default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// GID the proxy runs as; its traffic is never captured.
    #[arg(long, env = ENV_PROXY_GID, default_value_t = DEFAULT_PROXY_GID)]
    pub proxy_gid: u32,
    /// Inbound ports to capture, or `*` for all (15000, 15021, 15090 and the capture ports never are).
    #[arg(long, env = ENV_INCLUDE_INBOUND_PORTS, default_value = DEFAULT_INCLUDE_INBOUND_PORTS, value_name = "PORTS")]
    pub include_inbound_ports: String,
    /// Inbound ports never captured.
    #[arg(long, env = ENV_EXCLUDE_INBOUND_PORTS, default_value = DEFAULT_EXCLUDE_INBOUND_PORTS, value_name = "PORTS")]
    pub exclude_inbound_ports: String,
    /// Outbound ports always captured, whatever the destination address.
    #[arg(long, env = ENV_INCLUDE_OUTBOUND_PORTS, default_value = DEFAULT_INCLUDE_OUTBOUND_PORTS, value_name = "PORTS")]
    pub include_outbound_ports: String,
    /// Outbound ports never captured.
    #[arg(long, env = ENV_EXCLUDE_OUTBOUND_PORTS, default_value = DEFAULT_EXCLUDE_OUTBOUND_PORTS, value_name = "PORTS")]
    pub exclude_outbound_ports: String,
    /// Outbound destinations to capture (CIDRs, IPv4 and IPv6 mixed), or `*` for all.
    #[arg(long, env = ENV_INCLUDE_OUTBOUND_IP_RANGES, default_value = DEFAULT_INCLUDE_OUTBOUND_IP_RANGES, value_name = "CIDRS")]
    pub include_outbound_ip_ranges: String,
    /// Outbound destinations never captured (CIDRs, IPv4 and IPv6 mixed).
    #[arg(long, env = ENV_EXCLUDE_OUTBOUND_IP_RANGES, default_value = DEFAULT_EXCLUDE_OUTBOUND_IP_RANGES, value_name = "CIDRS")]
    pub exclude_outbound_ip_ranges: String,
    /// Write IPv6 rules too: `auto` when the network namespace has IPv6 enabled.
    #[arg(long, env = ENV_IPV6, value_enum, default_value = DEFAULT_IPV6)]
    pub ipv6: Ipv6Mode,
    /// iptables backend: `auto` uses the variant that already has rules, else nft when it works.
    #[arg(long, env = ENV_IPTABLES_MODE, value_enum, default_value = DEFAULT_IPTABLES_MODE)]
    pub iptables_mode: IptablesMode,
    /// Print the rules (iptables-restore format, one block per family) and change nothing.
    #[arg(long, env = ENV_DRY_RUN)]
    pub dry_run: bool,
}

impl InitArgs {
    /// The validated configuration these flags describe, or the flag that is wrong.
    pub fn config(&self) -> Result<InitConfig, Error> {
        for (flag, port) in [("--inbound-port", self.inbound_port), ("--outbound-port", self.outbound_port)] {
            if port == 0 {
                return Err(Error::Flag { flag, message: "0 is not a port".to_string() });
            }
        }
        let config = InitConfig {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            include_inbound_ports: config::parse_port_selection(
                "--include-inbound-ports",
                &self.include_inbound_ports,
            )?,
            exclude_inbound_ports: config::parse_ports("--exclude-inbound-ports", &self.exclude_inbound_ports)?,
            include_outbound_ports: config::parse_ports("--include-outbound-ports", &self.include_outbound_ports)?,
            exclude_outbound_ports: config::parse_ports("--exclude-outbound-ports", &self.exclude_outbound_ports)?,
            include_outbound_ip_ranges: config::parse_cidr_selection(
                "--include-outbound-ip-ranges",
                &self.include_outbound_ip_ranges,
            )?,
            exclude_outbound_ip_ranges: config::parse_cidrs(
                "--exclude-outbound-ip-ranges",
                &self.exclude_outbound_ip_ranges,
            )?,
            ipv6: self.ipv6,
            iptables_mode: self.iptables_mode,
            dry_run: self.dry_run,
        };
        if config.inbound_port == config.outbound_port {
            let message = format!("{} is also the outbound port", config.inbound_port);
            return Err(Error::Flag { flag: "--inbound-port", message });
        }
        Ok(config)
    }
}

/// Whether `config` asks for IPv6 rules on this machine.
fn wants_ipv6(config: &InitConfig) -> bool {
    match config.ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        Ipv6Mode::Auto => backend::host_ipv6_enabled(),
    }
}

/// Runs `init`: prints the rules with `--dry-run`, else writes them for IPv4 (and IPv6 when wanted)
/// through the detected iptables variant and prints what it wrote.
pub fn run(args: &InitArgs) -> Result<(), Error> {
    let config = args.config()?;
    let ipv6 = wants_ipv6(&config);
    if config.dry_run {
        print!("{}", plan_text(&config, ipv6));
        return Ok(());
    }
    let families: &[Family] = if ipv6 { &[Family::V4, Family::V6] } else { &[Family::V4] };
    // Detect every family before writing any, so a missing ip6tables fails before IPv4 changes.
    let mut chosen = Vec::with_capacity(families.len());
    for &family in families {
        chosen.push((family, backend::detect(family, config.iptables_mode)?));
    }
    if ipv6 {
        backend::add_ipv6_passthrough_address()?;
    }
    for (family, probe) in chosen {
        let desired = restore_text(&config, family);
        backend::restore(&probe, &rules::restore_input(&desired, &probe.saved))?;
        println!("# trellis-proxy init: {} rules written with {} --noflush", family.name(), probe.tools.restore);
        print!("{desired}");
    }
    Ok(())
}
