//! `trellis-proxy init` against a real kernel: each test makes its own network namespace
//! (`trellis-init-<pid>-<tag>`, a veth `eth0` addressed in 10.244.0.0/16 like a pod), runs the
//! built binary inside it with `ip netns exec`, and reads the result back with `iptables-save`.
//! Checked: the rules are there, a second run leaves exactly the same rules, `--dry-run` prints
//! exactly what was written, nft and legacy (each when installed) and auto detection, and a
//! non-root user holding only CAP_NET_ADMIN and CAP_NET_RAW (via `setpriv`) gets the same result.
//!
//! Needs root (network namespaces) and the programs `ip` (iproute2), `iptables-*` (iptables) and
//! `setpriv` (util-linux). When not root every test fails with that explanation, unless
//! `TRELLIS_SKIP_ROOT_TESTS=1`, which makes them print that they skipped and pass.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use trellis_test_support::root_or_skip;

use trellis_proxy::init::owned_lines;

/// Set to `1` to skip these tests when not root instead of failing.
/// The binary under test, built by cargo for integration tests.
const BINARY: &str = env!("CARGO_BIN_EXE_trellis-proxy");
/// UID/GID of the unprivileged run (`nobody`).
const UNPRIVILEGED_ID: &str = "65534";
/// Flags exercising every list, with IPv4 and IPv6 ranges mixed.
const FLAGS: &[&str] = &[
    "--exclude-inbound-ports",
    "8081",
    "--exclude-outbound-ports",
    "25",
    "--include-outbound-ports",
    "443",
    "--exclude-outbound-ip-ranges",
    "10.244.1.0/24,fd00:10:244::/48",
];

/// Runs a command, panicking with its output unless it succeeds; returns stdout.
fn ok(command: &mut Command) -> String {
    let output = output(command);
    assert!(output.status.success(), "{command:?} failed ({}):\n{}", output.status, describe(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

fn describe(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `program --version` runs (the program is installed).
fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The iptables variants installed here, each to be tested.
fn variants() -> Vec<&'static str> {
    let found: Vec<&str> = ["nft", "legacy"].into_iter().filter(|v| installed(&format!("iptables-{v}-save"))).collect();
    assert!(!found.is_empty(), "neither iptables-nft nor iptables-legacy is installed (apt-get install iptables)");
    found
}

/// A network namespace of our own, deleted on drop even when the test fails.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("trellis-init-{}-{tag}", std::process::id());
        // Left over from a crashed run with the same pid: remove it first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let netns = Netns { name };
        ok(Command::new("ip").args(["netns", "add", &netns.name]));
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
            &["addr", "add", "10.244.0.10/24", "dev", "eth0"],
            &["link", "set", "eth0", "up"],
            &["link", "set", "eth1", "up"],
        ] {
            ok(&mut netns.exec("ip", args));
        }
        netns
    }

    /// `program args` inside the namespace, with no TRELLIS_* variables from our environment.
    fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]).args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRELLIS_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// `trellis-proxy init args` as root inside the namespace; its stdout.
    fn init(&self, args: &[&str]) -> String {
        ok(&mut self.exec(BINARY, &[&["init"], args].concat()))
    }

    /// `<family>-<variant>-save` inside the namespace, comment lines (timestamps) dropped.
    fn save(&self, family: &str, variant: &str) -> String {
        let text = ok(&mut self.exec(&format!("{family}-{variant}-save"), &[]));
        text.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect()
    }

    /// Whether IPv6 is enabled in the namespace (what `--ipv6 auto` decides on).
    fn has_ipv6(&self) -> bool {
        let text = output(&mut self.exec("cat", &["/proc/sys/net/ipv6/conf/all/disable_ipv6"]));
        text.status.success() && String::from_utf8_lossy(&text.stdout).trim() == "0"
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip").args(["netns", "del", &self.name]).output();
        if !deleted.is_ok_and(|o| o.status.success()) {
            eprintln!("could not delete network namespace {}; remove it with `ip netns del {}`", self.name, self.name);
        }
    }
}

/// The `*nat ... COMMIT` blocks of a `--dry-run` output: IPv4 first, then IPv6 when present.
fn dry_run_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line == "*nat" {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line == "COMMIT"
            && let Some(block) = current.take()
        {
            blocks.push(block);
        }
    }
    blocks
}

/// Checks the rules `flags` wrote in `netns` through `variant`: present, right family, and equal to
/// what `--dry-run` prints for the same flags.
fn check_written(netns: &Netns, variant: &str, flags: &[&str]) -> (String, Option<String>) {
    let v4 = netns.save("iptables", variant);
    for expected in [
        "-A PREROUTING -p tcp -j TRELLIS_INBOUND\n",
        "-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n",
        "-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n",
        "-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n",
        "-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN\n",
        "-A TRELLIS_OUTPUT -m owner --gid-owner 1337 -j RETURN\n",
        "-A TRELLIS_INBOUND -p tcp -m tcp --dport 15021 -j RETURN\n",
        "-A TRELLIS_INBOUND -p tcp -m tcp --dport 8081 -j RETURN\n",
        "-A TRELLIS_OUTPUT -d 10.244.1.0/24 -j RETURN\n",
    ] {
        assert!(v4.contains(expected), "iptables-{variant}-save lacks {expected:?}:\n{v4}");
    }
    assert!(!v4.contains("fd00:"), "an IPv6 range reached iptables:\n{v4}");
    assert_eq!(v4.matches("-j TRELLIS_INBOUND\n").count(), 1, "one PREROUTING jump:\n{v4}");

    let v6 = netns.has_ipv6().then(|| netns.save("ip6tables", variant));
    if let Some(v6) = &v6 {
        assert!(v6.contains("-A TRELLIS_OUTPUT -d fd00:10:244::/48 -j RETURN\n"), "ip6tables-{variant}-save:\n{v6}");
        assert!(v6.contains("-A TRELLIS_OUTPUT -s ::6/128 -o lo -j RETURN\n"), "ip6tables-{variant}-save:\n{v6}");
        assert!(!v6.contains("10.244.1.0"), "an IPv4 range reached ip6tables:\n{v6}");
        let lo = ok(&mut netns.exec("ip", &["-6", "addr", "show", "dev", "lo"]));
        assert!(lo.contains("::6/128"), "the IPv6 passthrough address is missing from lo:\n{lo}");
    } else {
        eprintln!("IPv6 is disabled in this namespace: only IPv4 rules checked");
    }

    let dry = netns.init(&[&["--dry-run", "--iptables-mode", variant], flags].concat());
    let blocks = dry_run_blocks(&dry);
    assert_eq!(blocks.len(), if v6.is_some() { 2 } else { 1 }, "dry-run blocks:\n{dry}");
    assert_eq!(owned_lines(&blocks[0]), owned_lines(&v4), "--dry-run IPv4 differs from what {variant} holds");
    if let Some(v6) = &v6 {
        assert_eq!(owned_lines(&blocks[1]), owned_lines(v6), "--dry-run IPv6 differs from what {variant} holds");
    }
    (v4, v6)
}

/// Asserts that `variant` holds no rule of ours in `netns` (in either family).
fn assert_untouched(netns: &Netns, variant: &str) {
    for family in ["iptables", "ip6tables"] {
        let saved = netns.save(family, variant);
        assert!(!saved.contains("TRELLIS"), "{family}-{variant} was written to:\n{saved}");
    }
}

#[test]
fn rules_match_the_dry_run_and_a_second_run_leaves_exactly_the_same_rules() {
    if !root_or_skip("rules_match_the_dry_run_and_a_second_run_leaves_exactly_the_same_rules") {
        return;
    }
    let variants = variants();
    for &variant in &variants {
        let netns = Netns::new(&format!("twice-{variant}"));
        let flags = [&["--iptables-mode", variant][..], FLAGS].concat();
        netns.init(&flags);
        let first = check_written(&netns, variant, FLAGS);
        netns.init(&flags);
        let second = check_written(&netns, variant, FLAGS);
        assert_eq!(first.0, second.0, "a second run changed the IPv4 rules of {variant}");
        assert_eq!(first.1, second.1, "a second run changed the IPv6 rules of {variant}");
        for other in variants.iter().filter(|v| **v != variant) {
            assert_untouched(&netns, other);
        }
    }
}

#[test]
fn auto_mode_uses_nft_in_a_fresh_namespace_and_legacy_where_legacy_already_has_rules() {
    if !root_or_skip("auto_mode_uses_nft_in_a_fresh_namespace_and_legacy_where_legacy_already_has_rules") {
        return;
    }
    if variants().len() < 2 {
        eprintln!("only one iptables variant is installed: auto-detection between nft and legacy not checked");
        return;
    }
    let fresh = Netns::new("auto-fresh");
    fresh.init(FLAGS);
    check_written(&fresh, "nft", FLAGS);
    assert_untouched(&fresh, "legacy");

    let legacy = Netns::new("auto-legacy");
    // Someone else's legacy rules, as on a node whose tools write through x_tables.
    ok(&mut legacy.exec("iptables-legacy", &["-t", "filter", "-A", "INPUT", "-s", "10.244.0.99/32", "-j", "ACCEPT"]));
    if legacy.has_ipv6() {
        ok(&mut legacy
            .exec("ip6tables-legacy", &["-t", "filter", "-A", "INPUT", "-s", "fd00:10:244::99/128", "-j", "ACCEPT"]));
    }
    legacy.init(FLAGS);
    check_written(&legacy, "legacy", FLAGS);
    assert_untouched(&legacy, "nft");
    let kept = legacy.save("iptables", "legacy");
    assert!(kept.contains("-A INPUT -s 10.244.0.99/32 -j ACCEPT\n"), "the existing rule was lost:\n{kept}");
}

/// A copy of the binary that any user may run (the build directory may not be reachable by `nobody`).
struct SharedBinary {
    dir: tempfile::TempDir,
}

impl SharedBinary {
    fn new() -> SharedBinary {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
        let path = dir.path().join("trellis-proxy");
        std::fs::copy(BINARY, &path).expect("copy the binary");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
        SharedBinary { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("trellis-proxy")
    }
}

/// `setpriv` arguments that become `nobody` holding exactly `caps` (e.g. `+net_admin,+net_raw`).
fn as_nobody_with(caps: &str, binary: &Path) -> Vec<String> {
    let set = format!("-all{caps}");
    let mut args: Vec<String> = ["--reuid", UNPRIVILEGED_ID, "--regid", UNPRIVILEGED_ID, "--clear-groups"]
        .into_iter()
        .map(str::to_string)
        .collect();
    for flag in ["--inh-caps", "--ambient-caps", "--bounding-set"] {
        args.push(flag.to_string());
        args.push(set.clone());
    }
    args.push(binary.display().to_string());
    args.push("init".to_string());
    args
}

#[test]
fn a_non_root_user_with_only_net_admin_and_net_raw_writes_the_same_rules() {
    if !root_or_skip("a_non_root_user_with_only_net_admin_and_net_raw_writes_the_same_rules") {
        return;
    }
    assert!(installed("setpriv"), "setpriv is not installed (apt-get install util-linux)");
    let binary = SharedBinary::new();
    for variant in variants() {
        let netns = Netns::new(&format!("nonroot-{variant}"));
        let flags = [&["--iptables-mode", variant][..], FLAGS].concat();
        let run = |caps: &str| {
            let args = [as_nobody_with(caps, &binary.path()), flags.iter().map(|f| f.to_string()).collect()].concat();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            output(&mut netns.exec("setpriv", &args))
        };

        let without = run("");
        assert!(!without.status.success(), "init succeeded without capabilities:\n{}", describe(&without));
        assert_untouched(&netns, variant);

        let with = run(",+net_admin,+net_raw");
        assert!(with.status.success(), "init as nobody with NET_ADMIN+NET_RAW failed:\n{}", describe(&with));
        let first = check_written(&netns, variant, FLAGS);
        let again = run(",+net_admin,+net_raw");
        assert!(again.status.success(), "second init as nobody failed:\n{}", describe(&again));
        assert_eq!(
            first,
            check_written(&netns, variant, FLAGS),
            "a second unprivileged run changed the {variant} rules"
        );
    }
}

#[test]
fn a_bad_flag_fails_naming_the_flag_and_writes_nothing() {
    if !root_or_skip("a_bad_flag_fails_naming_the_flag_and_writes_nothing") {
        return;
    }
    let netns = Netns::new("badflag");
    let failed = output(&mut netns.exec(BINARY, &["init", "--exclude-outbound-ip-ranges", "10.244.0.0/33"]));
    assert!(!failed.status.success(), "a bad range was accepted:\n{}", describe(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("--exclude-outbound-ip-ranges"), "the error does not name the flag: {stderr}");
    for variant in variants() {
        assert_untouched(&netns, variant);
    }
}
