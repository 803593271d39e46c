//! Unit tests of `init`: flag parsing, the rule text, the `iptables-save` parsers and the backend
//! choice. None needs root; `tests/init_netns.rs` checks the same text against a real kernel.

use clap::{CommandFactory as _, Parser};

use super::backend::{self, Probe, Tools, Variant};
use super::config::{Cidr, Family, InitConfig, IptablesMode, Selection};
use super::rules::{self, owned_lines, plan_text, restore_input, restore_text, rule_lines};
use super::{InitArgs, run};
use crate::Error;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

/// Parses `init` flags the way the binary does (environment included).
fn args(flags: &[&str]) -> InitArgs {
    let argv = std::iter::once("init").chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("flags parse").init
}

fn config(flags: &[&str]) -> InitConfig {
    args(flags).config().expect("valid config")
}

fn flag_error(flags: &[&str]) -> (&'static str, String) {
    match args(flags).config() {
        Err(Error::Flag { flag, message }) => (flag, message),
        other => panic!("expected a flag error, got {other:?}"),
    }
}

fn cidr(text: &str) -> Cidr {
    text.parse().expect("cidr")
}

/// The default IPv4 rules, exactly as `iptables-save` prints them back.
const DEFAULT_V4: &str = "\
*nat
:TRELLIS_INBOUND - [0:0]
:TRELLIS_IN_REDIRECT - [0:0]
:TRELLIS_OUTPUT - [0:0]
:TRELLIS_REDIRECT - [0:0]
-A PREROUTING -p tcp -j TRELLIS_INBOUND
-A OUTPUT -p tcp -j TRELLIS_OUTPUT
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT
-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A TRELLIS_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A TRELLIS_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j TRELLIS_IN_REDIRECT
-A TRELLIS_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j TRELLIS_IN_REDIRECT
-A TRELLIS_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -d 127.0.0.1/32 -j RETURN
-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT
-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";

#[test]
fn the_default_ipv4_rules_are_istios_redirect_rules_with_trellis_chains() {
    assert_eq!(restore_text(&InitConfig::default(), Family::V4), DEFAULT_V4);
}

#[test]
fn the_ipv6_rules_use_ipv6_loopback_and_passthrough_addresses() {
    let expected = DEFAULT_V4.replace("127.0.0.6/32", "::6/128").replace("127.0.0.1/32", "::1/128");
    assert_eq!(restore_text(&InitConfig::default(), Family::V6), expected);
}

#[test]
fn no_flags_give_the_default_config() {
    // The environment of the test process could set TRELLIS_* variables; none are expected in CI.
    assert_eq!(config(&[]), InitConfig::default());
}

#[test]
fn every_flag_has_an_environment_variable() {
    let command = Cli::command();
    for arg in command.get_arguments().filter(|a| a.get_long().is_some()) {
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
        assert!(env.starts_with("TRELLIS_"), "--{:?} has no TRELLIS_ env var", arg.get_long());
    }
}

#[test]
fn excluded_inbound_ports_return_after_the_fixed_ones() {
    let lines = rule_lines(&config(&["--exclude-inbound-ports", "8081, 15021,,9090"]), Family::V4);
    let inbound: Vec<&String> = lines.iter().filter(|l| l.starts_with("-A TRELLIS_INBOUND")).collect();
    let ports: Vec<&str> =
        inbound.iter().filter_map(|l| l.split("--dport ").nth(1)).map(|r| r.split(' ').next().unwrap_or("")).collect();
    assert_eq!(ports, ["15000", "15001", "15006", "15021", "15090", "8081", "9090"]);
    assert_eq!(inbound.last().map(|l| l.as_str()), Some("-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT"));
}

#[test]
fn an_inbound_port_list_captures_only_those_ports_and_never_the_proxys_own() {
    let lines = rule_lines(
        &config(&["--include-inbound-ports", "80,15021,8080", "--exclude-inbound-ports", "8080"]),
        Family::V4,
    );
    let inbound: Vec<&str> = lines.iter().map(String::as_str).filter(|l| l.starts_with("-A TRELLIS_INBOUND")).collect();
    assert_eq!(inbound, ["-A TRELLIS_INBOUND -p tcp -m tcp --dport 80 -j TRELLIS_IN_REDIRECT"]);
}

#[test]
fn an_empty_inbound_port_list_captures_no_inbound_traffic() {
    let lines = rule_lines(&config(&["--include-inbound-ports", ""]), Family::V4);
    assert!(!lines.iter().any(|l| l.starts_with("-A TRELLIS_INBOUND")), "{lines:#?}");
}

#[test]
fn excluded_outbound_ports_return_before_anything_else_in_the_output_chain() {
    let lines = rule_lines(&config(&["--exclude-outbound-ports", "25,3306"]), Family::V4);
    let output: Vec<&str> = lines.iter().map(String::as_str).filter(|l| l.starts_with("-A TRELLIS_OUTPUT")).collect();
    assert_eq!(output[0], "-A TRELLIS_OUTPUT -p tcp -m tcp --dport 25 -j RETURN");
    assert_eq!(output[1], "-A TRELLIS_OUTPUT -p tcp -m tcp --dport 3306 -j RETURN");
    assert_eq!(output[2], "-A TRELLIS_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN");
}

#[test]
fn ipv4_ranges_go_only_to_iptables_and_ipv6_ranges_only_to_ip6tables() {
    let config = config(&[
        "--exclude-outbound-ip-ranges",
        "10.96.0.0/12,fd00::/8",
        "--include-outbound-ip-ranges",
        "10.244.0.0/16,2001:db8::/32",
    ]);
    let v4 = restore_text(&config, Family::V4);
    let v6 = restore_text(&config, Family::V6);
    assert!(v4.contains("-A TRELLIS_OUTPUT -d 10.96.0.0/12 -j RETURN\n"), "{v4}");
    assert!(v4.contains("-A TRELLIS_OUTPUT -d 10.244.0.0/16 -j TRELLIS_REDIRECT\n"), "{v4}");
    assert!(!v4.contains("fd00") && !v4.contains("2001:db8"), "{v4}");
    assert!(v6.contains("-A TRELLIS_OUTPUT -d fd00::/8 -j RETURN\n"), "{v6}");
    assert!(v6.contains("-A TRELLIS_OUTPUT -d 2001:db8::/32 -j TRELLIS_REDIRECT\n"), "{v6}");
    assert!(!v6.contains("10.96") && !v6.contains("10.244"), "{v6}");
    assert!(!v4.contains("-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT"), "a range list is not a wildcard: {v4}");
}

#[test]
fn an_ipv4_only_include_list_captures_no_ipv6_destination() {
    let config = config(&["--include-outbound-ip-ranges", "10.0.0.0/8"]);
    let v6 = restore_text(&config, Family::V6);
    assert!(!v6.contains("-A TRELLIS_OUTPUT -d 10.") && !v6.contains("-j TRELLIS_REDIRECT"), "{v6}");
}

#[test]
fn exclusions_come_before_included_ports_and_ranges() {
    let lines = rule_lines(
        &config(&[
            "--exclude-outbound-ip-ranges",
            "10.96.0.1",
            "--include-outbound-ports",
            "443",
            "--include-outbound-ip-ranges",
            "10.0.0.0/8",
        ]),
        Family::V4,
    );
    let tail: Vec<&str> = lines.iter().rev().skip(1).take(4).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "-A TRELLIS_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A TRELLIS_OUTPUT -d 10.96.0.1/32 -j RETURN",
            "-A TRELLIS_OUTPUT -p tcp -m tcp --dport 443 -j TRELLIS_REDIRECT",
            "-A TRELLIS_OUTPUT -d 10.0.0.0/8 -j TRELLIS_REDIRECT",
        ]
    );
}

#[test]
fn including_a_loopback_range_also_captures_the_app_calling_itself_over_lo() {
    let lines = rule_lines(&config(&["--include-outbound-ip-ranges", "127.0.0.0/8,10.0.0.0/8"]), Family::V4);
    assert!(!lines.iter().any(|l| l.contains("! --uid-owner") || l.contains("! --gid-owner")), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j TRELLIS_REDIRECT"));
}

#[test]
fn other_ports_and_owners_are_written_where_the_defaults_were() {
    let config =
        config(&["--inbound-port", "16006", "--outbound-port", "16001", "--proxy-uid", "2000", "--proxy-gid", "3000"]);
    let text = restore_text(&config, Family::V4);
    assert!(text.contains("-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006\n"));
    assert!(text.contains("-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 16001\n"));
    assert!(
        text.contains("-m owner --uid-owner 2000 -j RETURN\n")
            && text.contains("-m owner --gid-owner 3000 -j RETURN\n")
    );
    assert!(text.contains("--dport 16006 -j RETURN") && text.contains("--dport 16001 -j RETURN"));
    assert!(!text.contains("1337"), "{text}");
}

#[test]
fn a_bad_port_is_refused_naming_its_flag() {
    let (flag, message) = flag_error(&["--exclude-outbound-ports", "80,http"]);
    assert_eq!(flag, "--exclude-outbound-ports");
    assert!(message.contains("\"http\""), "{message}");
    assert_eq!(flag_error(&["--exclude-inbound-ports", "0"]).0, "--exclude-inbound-ports");
    assert_eq!(flag_error(&["--include-inbound-ports", "70000"]).0, "--include-inbound-ports");
    assert_eq!(flag_error(&["--include-outbound-ports", "*"]).0, "--include-outbound-ports");
}

#[test]
fn a_bad_range_is_refused_naming_its_flag() {
    assert_eq!(flag_error(&["--exclude-outbound-ip-ranges", "10.0.0.0/33"]).0, "--exclude-outbound-ip-ranges");
    assert_eq!(flag_error(&["--exclude-outbound-ip-ranges", "*"]).0, "--exclude-outbound-ip-ranges");
    assert_eq!(flag_error(&["--include-outbound-ip-ranges", "10.0.0/8"]).0, "--include-outbound-ip-ranges");
    assert_eq!(flag_error(&["--include-outbound-ip-ranges", "fd00::/129"]).0, "--include-outbound-ip-ranges");
}

#[test]
fn equal_capture_ports_are_refused() {
    assert_eq!(flag_error(&["--inbound-port", "15001"]).0, "--inbound-port");
    assert_eq!(flag_error(&["--outbound-port", "0"]).0, "--outbound-port");
}

#[test]
fn a_bad_mode_is_refused_by_the_parser_naming_its_flag() {
    let argv = ["init", "--iptables-mode", "xtables"];
    let err = Cli::try_parse_from(argv).expect_err("bad mode");
    assert!(err.to_string().contains("--iptables-mode"), "{err}");
    let err = Cli::try_parse_from(["init", "--ipv6", "maybe"]).expect_err("bad ipv6");
    assert!(err.to_string().contains("--ipv6"), "{err}");
}

#[test]
fn ranges_are_written_in_canonical_form_and_deduplicated() {
    assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("10.1.2.3").to_string(), "10.1.2.3/32");
    assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
    assert_eq!(cidr("2001:DB8:0:0:1::1/32").to_string(), "2001:db8::/32");
    assert_eq!(cidr("fd00::1").to_string(), "fd00::1/128");
    let config = config(&["--exclude-outbound-ip-ranges", " 10.0.0.1/8 , 10.0.0.0/8,"]);
    assert_eq!(config.exclude_outbound_ip_ranges, vec![cidr("10.0.0.0/8")]);
    assert!(matches!(config.include_outbound_ip_ranges, Selection::All));
}

#[test]
fn the_plan_has_an_ipv6_block_only_when_ipv6_is_on() {
    let config = InitConfig::default();
    let v4_only = plan_text(&config, false);
    assert_eq!(v4_only.matches("*nat").count(), 1);
    let both = plan_text(&config, true);
    assert_eq!(both.matches("*nat").count(), 2);
    assert!(both.find("127.0.0.1/32") < both.find("::1/128"), "IPv4 block first");
}

#[test]
fn dry_run_only_prints() {
    // With --ipv6 off and --dry-run nothing is probed or written, so this runs anywhere.
    let args = args(&["--dry-run", "--ipv6", "off", "--iptables-mode", "legacy"]);
    run(&args).expect("dry run succeeds without iptables");
}

/// `iptables-save` output of a namespace holding our default rules and someone else's.
const SAVED: &str = "\
# Generated by iptables-save v1.8.9 on Wed Nov 25 22:53:15 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -s 10.244.0.99/32 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OTHER - [0:0]
:TRELLIS_REDIRECT - [0:0]
:TRELLIS_OUTPUT - [0:0]
:TRELLIS_INBOUND - [0:0]
:TRELLIS_IN_REDIRECT - [0:0]
-A PREROUTING -p tcp -j TRELLIS_INBOUND
-A OUTPUT -j OTHER
-A OUTPUT -p tcp -j TRELLIS_OUTPUT
-A POSTROUTING -j MASQUERADE
-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A TRELLIS_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A TRELLIS_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j TRELLIS_IN_REDIRECT
-A TRELLIS_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j TRELLIS_IN_REDIRECT
-A TRELLIS_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -d 127.0.0.1/32 -j RETURN
-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT
-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OTHER -j RETURN
COMMIT
# Completed on Wed Nov 25 22:53:15 2026
";

#[test]
fn the_owned_lines_of_saved_rules_equal_those_of_the_rules_we_write() {
    // Chains listed in another order and foreign rules around ours do not matter.
    assert_eq!(owned_lines(SAVED), owned_lines(DEFAULT_V4));
    assert_eq!(owned_lines(DEFAULT_V4).len(), DEFAULT_V4.lines().count() - 2, "everything but *nat and COMMIT");
}

#[test]
fn a_missing_rule_or_a_foreign_jump_shows_in_the_owned_lines() {
    let missing = SAVED.replace("-A TRELLIS_OUTPUT -d 127.0.0.1/32 -j RETURN\n", "");
    assert_ne!(owned_lines(&missing), owned_lines(DEFAULT_V4));
    let doubled = SAVED.replace("COMMIT\n# Completed", "-A OUTPUT -j TRELLIS_OUTPUT\nCOMMIT\n# Completed");
    assert_ne!(owned_lines(&doubled), owned_lines(DEFAULT_V4));
}

#[test]
fn jumps_already_present_are_left_out_of_the_restore_input() {
    let input = restore_input(DEFAULT_V4, SAVED);
    assert!(!input.contains("-A PREROUTING"), "{input}");
    assert!(!input.contains("-A OUTPUT"), "{input}");
    assert!(input.contains(":TRELLIS_REDIRECT - [0:0]\n-A TRELLIS_INBOUND"), "{input}");
    assert_eq!(input.lines().count(), DEFAULT_V4.lines().count() - 2);
}

#[test]
fn jumps_missing_from_the_namespace_are_kept_in_the_restore_input() {
    assert_eq!(restore_input(DEFAULT_V4, ""), DEFAULT_V4);
    let without_output_jump = SAVED.replace("-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n", "");
    let input = restore_input(DEFAULT_V4, &without_output_jump);
    assert!(input.contains("-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n") && !input.contains("-A PREROUTING"), "{input}");
}

#[test]
fn a_jump_in_another_table_does_not_count_as_present() {
    let filter_only = "*filter\n-A OUTPUT -p tcp -j TRELLIS_OUTPUT\nCOMMIT\n";
    assert_eq!(restore_input(DEFAULT_V4, filter_only), DEFAULT_V4);
}

#[test]
fn only_rules_count_as_existing_rules() {
    assert!(rules::has_rules(SAVED));
    assert!(!rules::has_rules("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"));
    assert!(!rules::has_rules(""));
}

fn probe(variant: Variant, saved: &str) -> Probe {
    Probe { variant, tools: Tools::suffixed(Family::V4, variant), saved: saved.to_string() }
}

/// The variant `mode` picks among `probes`.
fn chosen(mode: IptablesMode, probes: &[Probe]) -> Option<Variant> {
    backend::choose(mode, probes).map(|p| p.variant)
}

#[test]
fn auto_mode_prefers_the_variant_that_already_has_rules() {
    let (nft_empty, nft_used) = (probe(Variant::Nft, ""), probe(Variant::Nft, SAVED));
    let (legacy_empty, legacy_used) = (probe(Variant::Legacy, ""), probe(Variant::Legacy, SAVED));
    assert_eq!(chosen(IptablesMode::Auto, &[nft_empty.clone(), legacy_used]), Some(Variant::Legacy));
    assert_eq!(chosen(IptablesMode::Auto, &[nft_used, legacy_empty.clone()]), Some(Variant::Nft));
    assert_eq!(chosen(IptablesMode::Auto, &[nft_empty, legacy_empty.clone()]), Some(Variant::Nft), "nft when no rules");
    assert_eq!(chosen(IptablesMode::Auto, &[legacy_empty]), Some(Variant::Legacy), "legacy when nft does not work");
    assert_eq!(chosen(IptablesMode::Auto, &[]), None);
}

#[test]
fn a_forced_mode_takes_that_variant_or_nothing() {
    let probes = [probe(Variant::Nft, ""), probe(Variant::Legacy, SAVED)];
    assert_eq!(chosen(IptablesMode::Nft, &probes), Some(Variant::Nft));
    assert_eq!(chosen(IptablesMode::Legacy, &probes), Some(Variant::Legacy));
    assert_eq!(chosen(IptablesMode::Legacy, &probes[..1]), None);
}

#[test]
fn the_variant_of_an_unsuffixed_binary_comes_from_its_version() {
    assert_eq!(backend::variant_from_version("iptables-save v1.8.9 (nf_tables)"), Variant::Nft);
    assert_eq!(backend::variant_from_version("iptables-save v1.8.9 (legacy)"), Variant::Legacy);
    assert_eq!(backend::variant_from_version("iptables-save v1.6.1"), Variant::Legacy);
}

#[test]
fn programs_are_named_per_family_and_variant() {
    assert_eq!(Tools::suffixed(Family::V6, Variant::Legacy).restore, "ip6tables-legacy-restore");
    assert_eq!(Tools::suffixed(Family::V4, Variant::Nft).save, "iptables-nft-save");
    assert_eq!(Tools::plain(Family::V6).save, "ip6tables-save");
}

#[test]
fn ipv6_counts_as_enabled_only_when_the_kernel_says_so() {
    assert!(backend::ipv6_enabled_from(Some("0\n")));
    assert!(!backend::ipv6_enabled_from(Some("1\n")));
    assert!(!backend::ipv6_enabled_from(None));
}
