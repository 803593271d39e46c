//! The resolved configuration of `init` mode and the parsing that produces it from flag values.
//!
//! List values use the syntax of Istio's `traffic.sidecar.istio.io/*` annotations (comma separated,
//! spaces and empty entries ignored, `*` meaning "all" where Istio allows it), so the injector can
//! copy an annotation into a flag unchanged. A bad entry is refused with the flag it came from;
//! nothing here touches the system.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::Error;

/// Which values a list flag selects: all of them (`*`) or only those listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    /// `*`: every value.
    All,
    /// Only these values (possibly none).
    Only(Vec<T>),
}

/// Whether to write IPv6 (`ip6tables`) rules as well as IPv4 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// On when the pod's network namespace has IPv6 enabled (`net.ipv6.conf.all.disable_ipv6 = 0`).
    Auto,
    /// Always write IPv6 rules; fail if `ip6tables` cannot.
    On,
    /// IPv4 rules only.
    Off,
}

/// Which iptables backend to write through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesMode {
    /// The variant that already holds rules in this network namespace, else nft when it works, else legacy.
    Auto,
    /// `iptables-nft` (the nf_tables kernel API).
    Nft,
    /// `iptables-legacy` (the x_tables kernel API).
    Legacy,
}

/// An address family, and so one of the two rule sets (`iptables` or `ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `IPv4` or `IPv6`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// An IP network in canonical form (host bits cleared), printed the way `iptables-save` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network `addr/prefix`, host bits cleared; `None` when the prefix is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The family whose rules this network belongs in.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether the network lies in loopback space (Istio's test: the address is loopback).
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address meaning that one host.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let prefix = match (prefix, addr) {
            (Some(p), _) => p.parse::<u8>().map_err(|_| format!("{text:?} has a bad prefix length"))?,
            (None, IpAddr::V4(_)) => 32,
            (None, IpAddr::V6(_)) => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(|| format!("{text:?} has a prefix length too long for its family"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything `init` needs to know, resolved and validated. The rule text is a pure function of this
/// (see `rules::restore_text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// Port the sidecar's inbound capture listener serves (redirect target of inbound TCP).
    pub inbound_port: u16,
    /// Port the sidecar's outbound capture listener serves (redirect target of outbound TCP).
    pub outbound_port: u16,
    /// UID the proxy runs as; its traffic is never captured.
    pub proxy_uid: u32,
    /// GID the proxy runs as; its traffic is never captured.
    pub proxy_gid: u32,
    /// Inbound ports to capture.
    pub include_inbound_ports: Selection<u16>,
    /// Inbound ports never captured, on top of `always_excluded_inbound_ports`.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports always captured, whatever the destination address.
    pub include_outbound_ports: Vec<u16>,
    /// Outbound ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations to capture.
    pub include_outbound_ip_ranges: Selection<Cidr>,
    /// Outbound destinations never captured.
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
    /// Whether to write IPv6 rules.
    pub ipv6: Ipv6Mode,
    /// Which iptables backend to use.
    pub iptables_mode: IptablesMode,
    /// Print the rules instead of writing them.
    pub dry_run: bool,
}

impl Default for InitConfig {
    /// The configuration of `trellis-proxy init` with no flags and no environment.
    fn default() -> InitConfig {
        InitConfig {
            inbound_port: super::DEFAULT_INBOUND_PORT,
            outbound_port: super::DEFAULT_OUTBOUND_PORT,
            proxy_uid: super::DEFAULT_PROXY_UID,
            proxy_gid: super::DEFAULT_PROXY_GID,
            include_inbound_ports: Selection::All,
            exclude_inbound_ports: Vec::new(),
            include_outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            include_outbound_ip_ranges: Selection::All,
            exclude_outbound_ip_ranges: Vec::new(),
            ipv6: Ipv6Mode::Auto,
            iptables_mode: IptablesMode::Auto,
            dry_run: false,
        }
    }
}

impl InitConfig {
    /// Inbound ports that are never redirected, whatever the flags say: the proxy's own ports
    /// (admin, readiness, Prometheus) and the two capture ports. Sorted, without duplicates.
    pub fn always_excluded_inbound_ports(&self) -> Vec<u16> {
        let mut ports = super::ALWAYS_EXCLUDED_INBOUND_PORTS.to_vec();
        ports.extend([self.inbound_port, self.outbound_port]);
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Every inbound port that is not redirected: the fixed ones, then the configured ones.
    pub fn excluded_inbound_ports(&self) -> Vec<u16> {
        let mut ports = self.always_excluded_inbound_ports();
        for &port in &self.exclude_inbound_ports {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// Whether any included outbound range is loopback; then app-to-loopback traffic other than to
    /// 127.0.0.1/::1 is captured too (Istio skips its "app on lo returns" rules in that case).
    pub fn includes_loopback(&self) -> bool {
        match &self.include_outbound_ip_ranges {
            Selection::All => false,
            Selection::Only(ranges) => ranges.iter().any(Cidr::is_loopback),
        }
    }
}

/// The entries of a comma-separated list, trimmed, empty ones dropped.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// Whether the list is exactly `*` (spaces allowed).
fn is_wildcard(text: &str) -> bool {
    text.trim() == "*"
}

/// Parses a port list (`80,8080`); `*` is refused, duplicates are dropped in order.
pub fn parse_ports(flag: &'static str, text: &str) -> Result<Vec<u16>, Error> {
    let mut ports = Vec::new();
    for entry in entries(text) {
        let port = match entry.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ if entry == "*" => {
                let message = "\"*\" is not allowed here; list the ports".to_string();
                return Err(Error::Flag { flag, message });
            }
            _ => {
                let message = format!("{entry:?} is not a port (1-65535) in the comma-separated list {text:?}");
                return Err(Error::Flag { flag, message });
            }
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Parses a port list that may be `*`.
pub fn parse_port_selection(flag: &'static str, text: &str) -> Result<Selection<u16>, Error> {
    if is_wildcard(text) { Ok(Selection::All) } else { parse_ports(flag, text).map(Selection::Only) }
}

/// Parses a CIDR list (`10.0.0.0/8,fd00::/8`, bare addresses allowed); `*` is refused.
pub fn parse_cidrs(flag: &'static str, text: &str) -> Result<Vec<Cidr>, Error> {
    let mut cidrs = Vec::new();
    for entry in entries(text) {
        if entry == "*" {
            let message = "\"*\" is not allowed here; list the ranges".to_string();
            return Err(Error::Flag { flag, message });
        }
        let cidr: Cidr = entry.parse().map_err(|message| Error::Flag { flag, message })?;
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

/// Parses a CIDR list that may be `*`.
pub fn parse_cidr_selection(flag: &'static str, text: &str) -> Result<Selection<Cidr>, Error> {
    if is_wildcard(text) { Ok(Selection::All) } else { parse_cidrs(flag, text).map(Selection::Only) }
}
