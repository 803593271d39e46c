//! `trellis analyze` driven as a user runs it: a real process, real files, stdout and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn trellis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tutorial")
}

struct Run {
    code: i32,
    stdout: String,
}

fn run(output: Output) -> Run {
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 output"),
    }
}

/// Writes `content` to a file named `name` in a fresh folder and analyzes it.
fn analyze_file(name: &str, content: &[u8]) -> (Run, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write input");
    let out = trellis().arg("analyze").arg(&path).output().expect("run trellis");
    (run(out), path.display().to_string())
}

/// Asserts that one output line starts with `file:line: object: path:` and mentions `needle`.
fn assert_line(run: &Run, prefix: &str, needle: &str) {
    let found = run.stdout.lines().any(|l| l.starts_with(prefix) && l.contains(needle));
    assert!(found, "no line starting {prefix:?} and containing {needle:?} in:\n{}", run.stdout);
}

const VS_HEAD: &str =
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n";

#[test]
fn the_tutorial_examples_analyze_without_errors() {
    let out = run(trellis().arg("analyze").arg(examples()).output().expect("run"));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(!out.stdout.contains(": error:"), "{}", out.stdout);
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_file_line_object_and_field() {
    let yaml = format!(
        "{VS_HEAD}  hosts: [reviews]\n  http:\n    - route:\n        - destination:\n            host: reviews\n          weight: heavy\n"
    );
    let (out, file) = analyze_file("wrong-type.yaml", yaml.as_bytes());
    assert_eq!(out.code, 1);
    assert_line(
        &out,
        &format!("{file}:12: VirtualService shop/reviews: spec.http[0].route[0].weight: error:"),
        "invalid type",
    );
}

#[test]
fn an_unknown_field_is_an_error_at_that_field() {
    let yaml = format!("{VS_HEAD}  hosts: [reviews]\n  htttp: []\n");
    let (out, file) = analyze_file("unknown.yaml", yaml.as_bytes());
    assert_eq!(out.code, 1);
    assert_line(&out, &format!("{file}:8: VirtualService shop/reviews: spec.htttp: error:"), "unknown field `htttp`");
}

#[test]
fn a_bad_duration_is_an_error_at_the_timeout() {
    let yaml = format!(
        "{VS_HEAD}  hosts: [reviews]\n  http:\n    - timeout: 3 minutes\n      route:\n        - destination:\n            host: reviews\n"
    );
    let (out, file) = analyze_file("duration.yaml", yaml.as_bytes());
    assert_eq!(out.code, 1);
    assert_line(&out, &format!("{file}:9: VirtualService shop/reviews: spec.http[0].timeout: error:"), "3 minutes");
}

#[test]
fn all_zero_route_weights_are_an_error_but_relative_weights_are_fine() {
    let route = |w1, w2| {
        format!(
            "{VS_HEAD}  hosts: [reviews]\n  http:\n    - route:\n        - destination: {{host: reviews}}\n          weight: {w1}\n        - destination: {{host: ratings}}\n          weight: {w2}\n"
        )
    };
    let (out, file) = analyze_file("zero.yaml", route(0, 0).as_bytes());
    assert_eq!(out.code, 1);
    assert_line(&out, &format!("{file}:"), "VirtualService shop/reviews: spec.http[0].route");
    assert!(out.stdout.contains("zero"), "{}", out.stdout);
    let (out, _) = analyze_file("relative.yaml", route(1, 3).as_bytes());
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn a_route_to_a_subset_no_destination_rule_defines_is_an_error() {
    let yaml = format!(
        "{VS_HEAD}  hosts: [reviews]\n  http:\n    - route:\n        - destination:\n            host: reviews\n            subset: v3\n---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  host: reviews\n  subsets:\n    - name: v1\n      labels: {{version: v1}}\n"
    );
    let (out, file) = analyze_file("subset.yaml", yaml.as_bytes());
    assert_eq!(out.code, 1);
    assert_line(
        &out,
        &format!("{file}:12: VirtualService shop/reviews: spec.http[0].route[0].destination.subset: error:"),
        "\"v3\"",
    );
    assert!(out.stdout.contains("shop/reviews (it defines: v1)"), "{}", out.stdout);
}

#[test]
fn an_invalid_regex_is_an_error_at_the_regex() {
    let yaml = format!(
        "{VS_HEAD}  hosts: [reviews]\n  http:\n    - match:\n        - uri:\n            regex: \"/api/(v1\"\n      route:\n        - destination: {{host: reviews}}\n"
    );
    let (out, file) = analyze_file("regex.yaml", yaml.as_bytes());
    assert_eq!(out.code, 1);
    assert_line(
        &out,
        &format!("{file}:11: VirtualService shop/reviews: spec.http[0].match[0].uri.regex: error:"),
        "regular expression",
    );
}

#[test]
fn a_gateway_that_does_not_exist_is_an_error() {
    let yaml = format!(
        "{VS_HEAD}  hosts: [reviews]\n  gateways: [missing-gateway]\n  http:\n    - route:\n        - destination: {{host: reviews}}\n"
    );
    let (out, file) = analyze_file("gateway.yaml", yaml.as_bytes());
    assert_eq!(out.code, 1);
    assert_line(
        &out,
        &format!("{file}:8: VirtualService shop/reviews: spec.gateways[0]: error:"),
        "Gateway shop/missing-gateway does not exist",
    );
}

#[test]
fn two_virtual_services_for_the_same_host_are_an_error() {
    let one = format!("{VS_HEAD}  hosts: [reviews]\n  http:\n    - route:\n        - destination: {{host: reviews}}\n");
    let two = one.replace("name: reviews", "name: reviews-again");
    let (out, file) = analyze_file("dup.yaml", format!("{one}---\n{two}").as_bytes());
    assert_eq!(out.code, 1);
    assert_line(
        &out,
        &format!("{file}:18: VirtualService shop/reviews-again: spec.hosts[0]: error:"),
        "VirtualService shop/reviews",
    );
}

#[test]
fn malformed_yaml_is_an_error_with_its_line() {
    let (out, file) = analyze_file("broken.yaml", b"apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n");
    assert_eq!(out.code, 1);
    assert_line(&out, &format!("{file}:3: error:"), "invalid YAML");
}

#[test]
fn an_empty_file_is_a_warning_not_an_error() {
    let (out, file) = analyze_file("empty.yaml", b"");
    assert_eq!(out.code, 0);
    assert_line(&out, &format!("{file}:1: warning:"), "no Kubernetes objects");
}

#[test]
fn binary_garbage_is_an_error_not_a_crash() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (out, file) = analyze_file("garbage.yaml", &garbage);
    assert_eq!(out.code, 1);
    assert_line(&out, &format!("{file}:1: error:"), "binary");
}

#[test]
fn kinds_trellis_does_not_own_pass_through_untouched() {
    let yaml = b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {anything: [goes, here]}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    let (out, _) = analyze_file("foreign.yaml", yaml);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "");
}

#[test]
fn an_unserved_version_of_an_istio_kind_is_an_error() {
    let yaml = b"apiVersion: security.istio.io/v1alpha3\nkind: PeerAuthentication\nmetadata: {name: x}\nspec: {}\n";
    let (out, file) = analyze_file("version.yaml", yaml);
    assert_eq!(out.code, 1);
    assert_line(&out, &format!("{file}:1: PeerAuthentication default/x: apiVersion: error:"), "v1beta1, v1");
}

#[test]
fn fields_accepted_but_not_acted_on_are_warnings() {
    let yaml = format!(
        "{VS_HEAD}  hosts: [reviews]\n  http:\n    - corsPolicy:\n        allowOrigins: [{{exact: \"https://a.example\"}}]\n      route:\n        - destination: {{host: reviews}}\n"
    );
    let (out, file) = analyze_file("cors.yaml", yaml.as_bytes());
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_line(
        &out,
        &format!("{file}:9: VirtualService shop/reviews: spec.http[0].corsPolicy: warning:"),
        "not acted on yet",
    );
}

#[test]
fn stdin_is_read_when_the_path_is_a_dash() {
    use std::io::Write;
    let mut child =
        trellis().args(["analyze", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    let yaml = format!("{VS_HEAD}  hosts: [reviews]\n  unknownField: 1\n");
    child.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("write");
    let out = run(child.wait_with_output().expect("wait"));
    assert_eq!(out.code, 1);
    assert_line(&out, "<stdin>:8: VirtualService shop/reviews: spec.unknownField: error:", "unknown field");
}

#[test]
fn a_missing_file_exits_with_two() {
    let out = run(trellis().args(["analyze", "/nonexistent/trellis/file.yaml"]).output().expect("run"));
    assert_eq!(out.code, 2);
}

#[test]
fn the_minus_f_flag_names_files_like_kubectl() {
    let out =
        run(trellis().arg("analyze").arg("-f").arg(examples().join("03-shipping-split.yaml")).output().expect("run"));
    assert_eq!(out.code, 0, "{}", out.stdout);
}
