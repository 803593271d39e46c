use std::net::SocketAddr;
use std::path::Path;

use trellis_controlplane::Index;

use super::plan::{Launch, Role, plan, render, shell_command, shell_word};

const SERVICES: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: inventory, namespace: shop}
spec:
  hosts: [inventory.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: inventory}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: inventory-v1, namespace: shop}
spec: {address: 127.0.1.2, serviceAccount: inventory, labels: {app: inventory, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web, namespace: shop}
spec: {address: 127.0.1.1, labels: {app: web}}
";

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway, namespace: istio-system}
spec: {address: 127.0.1.10, serviceAccount: trellis-ingressgateway, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
";

fn control_plane() -> SocketAddr {
    "127.0.0.1:15012".parse().expect("an address")
}

fn launches(yaml: &str) -> Vec<Launch> {
    let index = Index::from_yaml_documents(yaml).expect("valid YAML");
    plan(&index, control_plane(), "trellis-proxy", Some(Path::new("/mesh/.trellis-ca")))
}

fn launch<'l>(launches: &'l [Launch], workload: &str) -> &'l Launch {
    launches.iter().find(|l| l.workload == workload).unwrap_or_else(|| panic!("no launch of {workload}"))
}

fn flag<'c>(launch: &'c Launch, name: &str) -> Option<&'c str> {
    let at = launch.command.iter().position(|w| w == name)?;
    launch.command.get(at + 1).map(String::as_str)
}

#[test]
fn a_serving_workload_gets_a_sidecar_in_front_of_its_process_on_its_own_loopback_address() {
    let launches = launches(SERVICES);
    let inventory = launch(&launches, "shop/inventory-v1");
    assert_eq!(&inventory.command[..4], ["trellis-proxy", "sidecar", "--discovery-address", "127.0.0.1:15012"]);
    assert_eq!(flag(inventory, "--node-id"), Some("inventory-v1.shop"));
    assert_eq!(flag(inventory, "--namespace"), Some("shop"));
    assert_eq!(flag(inventory, "--service-account"), Some("inventory"));
    assert_eq!(flag(inventory, "--labels"), Some("app=inventory,version=v1"));
    assert_eq!(flag(inventory, "--listen-ip"), Some("127.0.1.2"));
    assert_eq!(flag(inventory, "--admin-addr"), Some("127.0.1.2:15000"));
    assert_eq!(flag(inventory, "--readiness-addr"), Some("127.0.1.2:15021"));
    assert_eq!(flag(inventory, "--prometheus-addr"), Some("127.0.1.2:15090"));
    assert_eq!(flag(inventory, "--explicit-proxy-addr"), Some("127.0.1.2:15080"));
    assert_eq!(flag(inventory, "--inbound-port"), Some("8080"), "the mesh sends the workload's traffic to 8080");
    assert_eq!(flag(inventory, "--inbound-target"), Some("127.0.1.2:18080"), "so the process moves aside");
    assert_eq!(
        flag(inventory, "--ca-token-file"),
        Some("/mesh/.trellis-ca/tokens/shop.inventory.token"),
        "its bootstrap token, for its certificate from trellisd's CA"
    );
    assert_eq!(flag(inventory, "--discovery-ca"), Some("/mesh/.trellis-ca/root-cert.pem"), "TLS to trellisd");
    let (identity, _) = inventory.token.as_ref().expect("a token to mint");
    assert_eq!((identity.namespace.as_str(), identity.service_account.as_str()), ("shop", "inventory"));
    assert!(inventory.notes.is_empty(), "{:?}", inventory.notes);

    let web = launch(&launches, "shop/web");
    assert_eq!(flag(web, "--service-account"), Some("default"));
    assert_eq!(flag(web, "--inbound-port"), None, "a client serves nothing");
    assert!(matches!(web.role, Role::Sidecar { inbound: None, application: None, explicit_proxy: Some(_) }));
}

#[test]
fn a_workload_entry_that_moves_the_mesh_port_keeps_its_process_on_the_services_target_port() {
    let moved = SERVICES.replace(
        "labels: {app: inventory, version: v1}}",
        "labels: {app: inventory, version: v1}, ports: {http: 15006}}",
    );
    let launches = launches(&moved);
    let inventory = launch(&launches, "shop/inventory-v1");
    assert_eq!(flag(inventory, "--inbound-port"), Some("15006"));
    assert_eq!(flag(inventory, "--inbound-target"), Some("127.0.1.2:8080"));
}

#[test]
fn a_workload_selected_by_a_gateway_gets_a_gateway_and_a_note_about_privileged_ports() {
    let launches = launches(&format!("{SERVICES}---\n{GATEWAY}"));
    let gateway = launch(&launches, "istio-system/ingressgateway");
    assert_eq!(gateway.command[1], "gateway");
    assert_eq!(gateway.role, Role::Gateway { ports: vec![80] });
    assert_eq!(flag(gateway, "--labels"), Some("istio=ingressgateway"));
    assert_eq!(flag(gateway, "--explicit-proxy-addr"), None);
    assert!(gateway.notes.iter().any(|n| n.starts_with("port 80 needs privileges")), "{:?}", gateway.notes);
}

#[test]
fn a_workload_serving_two_ports_is_told_that_only_the_first_is_fronted() {
    let two = SERVICES.replace(
        "ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]",
        "ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}, {number: 9090, name: grpc, protocol: GRPC}]",
    );
    let launches = launches(&two);
    let inventory = launch(&launches, "shop/inventory-v1");
    assert_eq!(flag(inventory, "--inbound-port"), Some("8080"));
    assert!(inventory.notes.iter().any(|n| n.contains("ports 9090 too")), "{:?}", inventory.notes);
}

#[test]
fn a_workload_without_an_ip_or_off_loopback_is_explained() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: shop}\n\
                spec: {address: 192.0.2.7, labels: {app: vm}}\n";
    let launches = launches(yaml);
    assert!(launches[0].notes[0].contains("is not a loopback address"), "{:?}", launches[0].notes);
    assert!(!launches[0].command.is_empty());
}

#[test]
fn the_instructions_show_each_command_and_where_the_process_listens_and_sends_its_calls() {
    let text = render(&launches(SERVICES));
    assert!(text.starts_with("Start each workload beside its proxy"), "{text}");
    assert!(text.contains("\nshop/inventory-v1 (127.0.1.2, service account inventory)\n"), "{text}");
    assert!(text.contains("  proxy:\n    trellis-proxy sidecar --discovery-address 127.0.0.1:15012"), "{text}");
    assert!(text.contains("  process: listen on 127.0.1.2:18080 (the sidecar takes the mesh's traffic on port 8080)"));
    assert!(text.contains("    and send its calls through the sidecar: HTTP_PROXY=http://127.0.1.2:15080"), "{text}");
    assert!(text.contains("  process: serves no port of a service (a client only)"), "{text}");
    assert!(render(&[]).starts_with("The folder has no WorkloadEntry"));
}

#[test]
fn commands_are_quoted_for_the_shell_and_wrapped_before_flags() {
    assert_eq!(shell_word("app=web,version=v1"), "app=web,version=v1");
    assert_eq!(shell_word("my dir/trellis-proxy"), "'my dir/trellis-proxy'");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
    assert_eq!(shell_word(""), "''");
    let words: Vec<String> = ["proxy", "sidecar"]
        .into_iter()
        .chain(std::iter::repeat_n(["--flag", "value-of-some-length"], 8).flatten())
        .chain(["--switch"])
        .map(str::to_owned)
        .collect();
    let command = shell_command(&words);
    assert!(command.contains(" \\\n      --flag value-of-some-length"), "a flag stays with its value: {command}");
    assert!(command.lines().all(|l| l.len() <= super::plan::COMMAND_WIDTH + 2), "{command}");
    assert!(command.ends_with(" --switch"), "{command}");
}
