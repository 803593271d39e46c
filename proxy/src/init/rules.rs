//! The interception rules as text: a pure function from `InitConfig` to `iptables-restore` input,
//! plus the small parsers of `iptables-save` output that make applying it idempotent.
//!
//! The rules follow Istio's `istio-iptables` (REDIRECT mode) with `TRELLIS_*` chains in the `nat`
//! table. Every rule is written exactly as `iptables-save` prints it back (matches in save order,
//! `-m tcp` spelled out, networks in canonical form), so "what we wrote" and "what is there" compare
//! as plain lines. Applied with `*-restore --noflush`: the `:TRELLIS_* - [0:0]` declarations create
//! or flush our chains, other tables and chains are left alone, and the two jumps from `PREROUTING`
//! and `OUTPUT` are left out of the input when they are already present (`restore_input`).

use super::config::{Family, InitConfig, Selection};

/// Chain `PREROUTING` jumps to for inbound TCP: exclusions, then the jump to `TRELLIS_IN_REDIRECT`.
pub const CHAIN_INBOUND: &str = "TRELLIS_INBOUND";
/// Chain that redirects to the inbound capture port.
pub const CHAIN_IN_REDIRECT: &str = "TRELLIS_IN_REDIRECT";
/// Chain `OUTPUT` jumps to for locally generated TCP: owner and loopback handling, exclusions, inclusions.
pub const CHAIN_OUTPUT: &str = "TRELLIS_OUTPUT";
/// Chain that redirects to the outbound capture port.
pub const CHAIN_REDIRECT: &str = "TRELLIS_REDIRECT";
/// Our chains, in the order `iptables-save` lists them (by name).
pub const CHAINS: [&str; 4] = [CHAIN_INBOUND, CHAIN_IN_REDIRECT, CHAIN_OUTPUT, CHAIN_REDIRECT];
/// Prefix shared by every chain this mode owns.
pub const CHAIN_PREFIX: &str = "TRELLIS_";

/// Source address of the proxy's inbound passthrough connections to the app, IPv4 (as Istio's
/// 127.0.0.6): traffic from it on `lo` is never captured, so the proxy must bind it when it forwards
/// inbound traffic to the app's pod IP.
pub const INBOUND_PASSTHROUGH_SOURCE_V4: &str = "127.0.0.6";
/// Source address of the proxy's inbound passthrough connections, IPv6 (as Istio's ::6). IPv6 `lo`
/// only has ::1, so `init` adds this address to `lo` when it writes IPv6 rules.
pub const INBOUND_PASSTHROUGH_SOURCE_V6: &str = "::6";

/// The host network of `lo` that is never captured (container-to-container and proxy-aware traffic).
fn loopback_host(family: Family) -> &'static str {
    match family {
        Family::V4 => "127.0.0.1/32",
        Family::V6 => "::1/128",
    }
}

fn passthrough_source(family: Family) -> String {
    match family {
        Family::V4 => format!("{INBOUND_PASSTHROUGH_SOURCE_V4}/32"),
        Family::V6 => format!("{INBOUND_PASSTHROUGH_SOURCE_V6}/128"),
    }
}

/// The jump from `PREROUTING` into our inbound chain.
pub fn prerouting_jump() -> String {
    format!("-A PREROUTING -p tcp -j {CHAIN_INBOUND}")
}

/// The jump from `OUTPUT` into our outbound chain.
pub fn output_jump() -> String {
    format!("-A OUTPUT -p tcp -j {CHAIN_OUTPUT}")
}

/// The rules of one family, one `iptables-save`-shaped line each, in the order `iptables-save`
/// prints them: jumps from the built-in chains, then our chains by name.
pub fn rule_lines(config: &InitConfig, family: Family) -> Vec<String> {
    let mut lines = vec![prerouting_jump(), output_jump()];
    inbound_rules(config, &mut lines);
    lines.push(format!("-A {CHAIN_IN_REDIRECT} -p tcp -j REDIRECT --to-ports {}", config.inbound_port));
    output_rules(config, family, &mut lines);
    lines.push(format!("-A {CHAIN_REDIRECT} -p tcp -j REDIRECT --to-ports {}", config.outbound_port));
    lines
}

fn inbound_rules(config: &InitConfig, lines: &mut Vec<String>) {
    let excluded = config.excluded_inbound_ports();
    match &config.include_inbound_ports {
        Selection::All => {
            for port in excluded {
                lines.push(format!("-A {CHAIN_INBOUND} -p tcp -m tcp --dport {port} -j RETURN"));
            }
            lines.push(format!("-A {CHAIN_INBOUND} -p tcp -j {CHAIN_IN_REDIRECT}"));
        }
        Selection::Only(ports) => {
            // Only the listed ports reach the proxy, so exclusions need no rule: an excluded port
            // (including the proxy's own) is just left out of the list.
            for port in ports.iter().filter(|p| !excluded.contains(p)) {
                lines.push(format!("-A {CHAIN_INBOUND} -p tcp -m tcp --dport {port} -j {CHAIN_IN_REDIRECT}"));
            }
        }
    }
}

fn output_rules(config: &InitConfig, family: Family, lines: &mut Vec<String>) {
    let out = CHAIN_OUTPUT;
    let lo = loopback_host(family);
    // Port exclusions come first, before connections back to the pod itself are redirected.
    for port in &config.exclude_outbound_ports {
        lines.push(format!("-A {out} -p tcp -m tcp --dport {port} -j RETURN"));
    }
    // The proxy's inbound passthrough to the app (source 127.0.0.6 / ::6) is never captured.
    lines.push(format!("-A {out} -s {} -o lo -j RETURN", passthrough_source(family)));
    for owner in [format!("--uid-owner {}", config.proxy_uid), format!("--gid-owner {}", config.proxy_gid)] {
        // The proxy calling its own pod by a non-loopback address (app -> proxy -> own pod IP):
        // send it through inbound capture, so the pod's inbound policy applies.
        lines.push(format!("-A {out} ! -d {lo} -o lo -p tcp -m owner {owner} -j {CHAIN_IN_REDIRECT}"));
        // The app calling its own pod IP over lo goes straight to the app, unless loopback
        // ranges were explicitly included.
        if !config.includes_loopback() {
            lines.push(format!("-A {out} -o lo -m owner ! {owner} -j RETURN"));
        }
        // Everything else the proxy sends leaves uncaptured (no loops).
        lines.push(format!("-A {out} -m owner {owner} -j RETURN"));
    }
    // Container-to-container and proxy-aware traffic to localhost is never captured.
    lines.push(format!("-A {out} -d {lo} -j RETURN"));
    for cidr in config.exclude_outbound_ip_ranges.iter().filter(|c| c.family() == family) {
        lines.push(format!("-A {out} -d {cidr} -j RETURN"));
    }
    for port in &config.include_outbound_ports {
        lines.push(format!("-A {out} -p tcp -m tcp --dport {port} -j {CHAIN_REDIRECT}"));
    }
    match &config.include_outbound_ip_ranges {
        Selection::All => lines.push(format!("-A {out} -j {CHAIN_REDIRECT}")),
        Selection::Only(ranges) => {
            for cidr in ranges.iter().filter(|c| c.family() == family) {
                lines.push(format!("-A {out} -d {cidr} -j {CHAIN_REDIRECT}"));
            }
        }
    }
}

/// The complete `iptables-restore` input for one family: the `nat` table with our chains declared
/// (which creates or flushes them under `--noflush`), every rule, and `COMMIT`.
pub fn restore_text(config: &InitConfig, family: Family) -> String {
    let mut text = String::from("*nat\n");
    for chain in CHAINS {
        text.push(':');
        text.push_str(chain);
        text.push_str(" - [0:0]\n");
    }
    for line in rule_lines(config, family) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// What `--dry-run` prints: one commented block per family, IPv4 first, each valid
/// `iptables-restore` input.
pub fn plan_text(config: &InitConfig, ipv6: bool) -> String {
    let mut text = String::from("# trellis-proxy init: IPv4 rules, applied with `iptables-restore --noflush`\n");
    text.push_str(&restore_text(config, Family::V4));
    if ipv6 {
        text.push_str("# trellis-proxy init: IPv6 rules, applied with `ip6tables-restore --noflush`\n");
        text.push_str(&format!(
            "# (and `ip -6 addr replace {INBOUND_PASSTHROUGH_SOURCE_V6}/128 dev lo` for the inbound passthrough source)\n"
        ));
        text.push_str(&restore_text(config, Family::V6));
    }
    text
}

/// The lines of the `nat` table in `iptables-save` output (`*nat` to `COMMIT`, exclusive), comments dropped.
pub fn nat_lines(save: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_nat = false;
    for line in save.lines().map(str::trim_end) {
        if line.starts_with('*') {
            in_nat = line == "*nat";
        } else if line == "COMMIT" {
            in_nat = false;
        } else if in_nat && !line.is_empty() && !line.starts_with('#') {
            lines.push(line);
        }
    }
    lines
}

/// Whether `iptables-save` output holds any rule at all, in any table (a chain policy or an empty
/// table does not count). Used to tell which iptables variant a network namespace already uses.
pub fn has_rules(save: &str) -> bool {
    save.lines().any(|line| line.starts_with("-A "))
}

/// The chain a `-A CHAIN ...` line appends to.
fn chain_of(line: &str) -> Option<&str> {
    line.strip_prefix("-A ")?.split_whitespace().next()
}

/// Whether a `nat` line belongs to this mode: a declaration of or rule in a `TRELLIS_*` chain, or a
/// rule jumping to one.
fn is_owned(line: &str) -> bool {
    if let Some(declared) = line.strip_prefix(':') {
        return declared.starts_with(CHAIN_PREFIX);
    }
    match chain_of(line) {
        Some(chain) => chain.starts_with(CHAIN_PREFIX) || line.contains(&format!(" -j {CHAIN_PREFIX}")),
        None => false,
    }
}

/// Position of a chain in `iptables-save` order: built-in chains in hook order, then by name.
fn chain_rank(chain: &str) -> (usize, &str) {
    const BUILT_IN: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];
    match BUILT_IN.iter().position(|b| *b == chain) {
        Some(i) => (i, ""),
        None => (BUILT_IN.len(), chain),
    }
}

/// The lines of `nat` that this mode owns (see `is_owned`), in a canonical order: declarations
/// sorted by name, then rules grouped by chain (built-in chains first) keeping their order within
/// each chain. Works on `iptables-save` output and on `restore_text`/`plan_text` blocks alike, so the
/// two compare directly.
pub fn owned_lines(save: &str) -> Vec<String> {
    let lines: Vec<&str> = nat_lines(save).into_iter().filter(|l| is_owned(l)).collect();
    let mut declarations: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with(':')).collect();
    declarations.sort_unstable();
    let mut rules: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("-A ")).collect();
    rules.sort_by_key(|&line| chain_rank(chain_of(line).unwrap_or_default()));
    declarations.into_iter().chain(rules).map(str::to_string).collect()
}

/// The input to feed `*-restore --noflush` given what `*-save` printed: `desired` with each jump
/// from a built-in chain left out when that exact rule is already present, so running twice never
/// duplicates a jump. Our own chains are flushed and rewritten by their declarations either way.
pub fn restore_input(desired: &str, current_save: &str) -> String {
    let present = nat_lines(current_save);
    let mut text = String::with_capacity(desired.len());
    for line in desired.lines() {
        let built_in = chain_of(line).is_some_and(|chain| !chain.starts_with(CHAIN_PREFIX));
        if built_in && present.contains(&line) {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}
