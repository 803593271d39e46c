//! The thin I/O layer of `init`: finds which iptables variant (nft or legacy) the network namespace
//! uses, reads its rules with `*-save`, writes ours with `*-restore --noflush`, and adds the IPv6
//! inbound passthrough address to `lo`. Decisions are pure functions (`choose`, `variant_from_version`,
//! `ipv6_enabled_from`) so they are tested without root; the rest only runs programs.
//!
//! Nothing here needs root: the programs need `CAP_NET_ADMIN` (and `CAP_NET_RAW`) in the pod's
//! network namespace. The one file iptables itself writes is the legacy lock file,
//! `/run/xtables.lock`, which only root may create; when not root and `XTABLES_LOCKFILE` is unset we
//! point it at a per-user file in the temporary directory (the lock only orders iptables runs that
//! share a mount namespace, and an init container has its own).

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::config::{Family, IptablesMode};
use super::rules;
use crate::Error;

/// Environment variable iptables (1.8.6+) reads for the path of its legacy lock file.
pub const XTABLES_LOCKFILE_ENV: &str = "XTABLES_LOCKFILE";
/// How long a legacy `*-restore` waits for the xtables lock, in seconds.
pub const LEGACY_LOCK_WAIT_SECONDS: u32 = 30;
/// Kernel switch read by `--ipv6 auto`; it is per network namespace.
pub const DISABLE_IPV6_SYSCTL: &str = "/proc/sys/net/ipv6/conf/all/disable_ipv6";

/// The two iptables implementations that share one command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft`: rules live in nf_tables.
    Nft,
    /// `iptables-legacy`: rules live in x_tables.
    Legacy,
}

impl Variant {
    /// `nft` or `legacy`, as in the binary names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        }
    }
}

/// The `*-save` and `*-restore` programs of one variant and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub save: String,
    pub restore: String,
}

impl Tools {
    /// The suffixed programs, e.g. `ip6tables-legacy-save`.
    pub fn suffixed(family: Family, variant: Variant) -> Tools {
        let base = base_name(family);
        let v = variant.name();
        Tools { save: format!("{base}-{v}-save"), restore: format!("{base}-{v}-restore") }
    }

    /// The unsuffixed programs (`iptables-save`), whatever variant they are.
    pub fn plain(family: Family) -> Tools {
        let base = base_name(family);
        Tools { save: format!("{base}-save"), restore: format!("{base}-restore") }
    }
}

fn base_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// A variant that works here, with what its `*-save` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub variant: Variant,
    pub tools: Tools,
    /// Output of `*-save` (all tables) when probed.
    pub saved: String,
}

impl Probe {
    /// Whether this variant already holds rules in the network namespace.
    pub fn has_rules(&self) -> bool {
        rules::has_rules(&self.saved)
    }
}

/// Picks the variant to write through (Istio's order): a forced mode takes that variant; `auto`
/// takes legacy if it already holds rules, else nft if it holds rules, else nft if it works, else
/// legacy. `None` when nothing suitable works.
pub fn choose(mode: IptablesMode, probes: &[Probe]) -> Option<&Probe> {
    let find = |variant: Variant| probes.iter().find(|p| p.variant == variant);
    match mode {
        IptablesMode::Nft => find(Variant::Nft),
        IptablesMode::Legacy => find(Variant::Legacy),
        IptablesMode::Auto => {
            let with_rules = |variant| find(variant).filter(|p| p.has_rules());
            with_rules(Variant::Legacy)
                .or_else(|| with_rules(Variant::Nft))
                .or_else(|| find(Variant::Nft))
                .or_else(|| find(Variant::Legacy))
        }
    }
}

/// The variant of an unsuffixed binary from its `--version` line (`iptables-save v1.8.9 (nf_tables)`);
/// anything without `nf_tables` is legacy (old releases print no marker).
pub fn variant_from_version(version: &str) -> Variant {
    if version.contains("nf_tables") { Variant::Nft } else { Variant::Legacy }
}

/// Whether IPv6 is on, from the content of `DISABLE_IPV6_SYSCTL` (`None`: the file is missing, so
/// the kernel has no IPv6).
pub fn ipv6_enabled_from(disable_ipv6: Option<&str>) -> bool {
    disable_ipv6.is_some_and(|content| content.trim() == "0")
}

/// Whether this network namespace has IPv6 enabled (`--ipv6 auto`).
pub fn host_ipv6_enabled() -> bool {
    ipv6_enabled_from(std::fs::read_to_string(DISABLE_IPV6_SYSCTL).ok().as_deref())
}

/// A `Command` for an iptables program, with the lock file moved somewhere writable when not root.
fn xtables_command(program: &str) -> Command {
    let mut command = Command::new(program);
    if let Some(path) = unprivileged_lockfile() {
        command.env(XTABLES_LOCKFILE_ENV, path);
    }
    command
}

/// The lock file to use instead of root's `/run/xtables.lock`, when not root and none is set.
fn unprivileged_lockfile() -> Option<PathBuf> {
    if std::env::var_os(XTABLES_LOCKFILE_ENV).is_some() {
        return None;
    }
    // `/proc/self` belongs to the effective user; treat an unreadable one as "not root".
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if euid == Some(0) {
        return None;
    }
    let user = euid.map_or_else(|| "unknown".to_string(), |uid| uid.to_string());
    Some(std::env::temp_dir().join(format!("trellis-xtables-{user}.lock")))
}

/// Runs `program args`, returning its output when it exits 0, else a one-line reason.
fn run_quietly(program: &str, args: &[&str]) -> Result<Output, String> {
    match xtables_command(program).args(args).stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => Ok(output),
        Ok(output) => Err(format!("{program}: {} ({})", String::from_utf8_lossy(&output.stderr).trim(), output.status)),
        Err(err) => Err(format!("{program}: {err}")),
    }
}

/// Tries `tools.save`; a probe when it runs. Every table is listed when possible; legacy
/// `*-save` without `-t` reads `/proc/net/ip_tables_names`, which only root may read, so when that
/// is refused only `nat` is listed (which makes the kernel instantiate an empty legacy `nat` table
/// in the namespace if there was none: harmless, and it holds no rule).
fn probe_tools(variant: Variant, tools: Tools, notes: &mut Vec<String>) -> Option<Probe> {
    let output = run_quietly(&tools.save, &[])
        .or_else(|all| run_quietly(&tools.save, &["-t", "nat"]).map_err(|nat| format!("{all}; with -t nat: {nat}")));
    match output {
        Ok(output) => Some(Probe { variant, saved: String::from_utf8_lossy(&output.stdout).into_owned(), tools }),
        Err(note) => {
            notes.push(note);
            None
        }
    }
}

/// Every variant that works for `family`: the suffixed programs first, then the unsuffixed one
/// for a variant that has no suffixed program. Also returns why the others did not work.
pub fn probe(family: Family) -> (Vec<Probe>, Vec<String>) {
    let mut notes = Vec::new();
    let mut probes: Vec<Probe> = [Variant::Nft, Variant::Legacy]
        .into_iter()
        .filter_map(|variant| probe_tools(variant, Tools::suffixed(family, variant), &mut notes))
        .collect();
    if probes.len() < 2 {
        let plain = Tools::plain(family);
        match run_quietly(&plain.save, &["--version"]) {
            Ok(output) => {
                let variant = variant_from_version(&String::from_utf8_lossy(&output.stdout));
                if !probes.iter().any(|p| p.variant == variant)
                    && let Some(probe) = probe_tools(variant, plain, &mut notes)
                {
                    probes.push(probe);
                }
            }
            Err(note) => notes.push(note),
        }
    }
    (probes, notes)
}

/// The variant to write `family`'s rules through, per `mode`.
pub fn detect(family: Family, mode: IptablesMode) -> Result<Probe, Error> {
    let (probes, notes) = probe(family);
    if let Some(probe) = choose(mode, &probes) {
        return Ok(probe.clone());
    }
    let wanted = match mode {
        IptablesMode::Auto => "any iptables variant".to_string(),
        IptablesMode::Nft => "iptables-nft (--iptables-mode nft)".to_string(),
        IptablesMode::Legacy => "iptables-legacy (--iptables-mode legacy)".to_string(),
    };
    let tried = if notes.is_empty() { "no program failed".to_string() } else { notes.join("; ") };
    Err(Error::Iptables(format!(
        "no working {wanted} for {} rules (install the `iptables` package; the programs need CAP_NET_ADMIN): {tried}",
        family.name()
    )))
}

/// Feeds `input` to `probe`'s `*-restore --noflush` (legacy also waits for the xtables lock).
pub fn restore(probe: &Probe, input: &str) -> Result<(), Error> {
    let program = &probe.tools.restore;
    let mut command = xtables_command(program);
    command.arg("--noflush");
    if probe.variant == Variant::Legacy {
        command.arg(format!("--wait={LEGACY_LOCK_WAIT_SECONDS}"));
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting {program}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(Error::io(format!("writing rules to {program}")))?;
    }
    let output = child.wait_with_output().map_err(Error::io(format!("waiting for {program}")))?;
    if output.status.success() {
        return Ok(());
    }
    let numbered: Vec<String> = input.lines().enumerate().map(|(i, line)| format!("{:>4} {line}", i + 1)).collect();
    Err(Error::Iptables(format!(
        "{program} --noflush failed ({}): {}\ninput was:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        numbered.join("\n")
    )))
}

/// Adds the IPv6 inbound passthrough source (`::6/128`) to `lo`; idempotent (`ip addr replace`).
pub fn add_ipv6_passthrough_address() -> Result<(), Error> {
    let address = format!("{}/128", rules::INBOUND_PASSTHROUGH_SOURCE_V6);
    let args = ["-6", "addr", "replace", address.as_str(), "dev", "lo"];
    let shown = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running `{shown}` (is iproute2 installed?)")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Iptables(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
