use super::*;
use crate::index::load;

const ENTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: two-hosts, namespace: shop}
spec:
  hosts: [a.example.com, b.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 192.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: resolver, namespace: shop}
spec:
  hosts: [dns.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 53, name: dns, protocol: UDP}]
  endpoints: [{address: 192.0.2.2}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: shop}
spec: {address: 192.0.2.9, labels: {app: vm}, serviceAccount: vm-sa}
"#;

fn changes(text: &str) -> Vec<Change> {
    let loaded = load::yaml("test.yaml", text);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.changes
}

#[test]
fn each_host_of_a_service_entry_becomes_a_registry_entry_without_udp_ports() {
    let mut index = Index::new();
    index.apply_all(changes(ENTRY));
    let hosts: Vec<&str> = index.services().map(|s| s.hostname.as_str()).collect();
    assert_eq!(hosts, ["dns.example.com", "a.example.com", "b.example.com"], "by entry, then host");
    let dns = index.services().next().expect("a service");
    assert_eq!(dns.ports.len(), 1, "UDP is not proxied");
    assert_eq!(dns.endpoints[0].address, "192.0.2.2");
    let vm = index.workload(&Key::new(Kind::WorkloadEntry, "shop", "vm")).expect("the WorkloadEntry");
    assert_eq!((vm.service_account.as_str(), vm.meshed, vm.weight), ("vm-sa", true, 1));
}

#[test]
fn an_upsert_keeps_the_objects_age_and_a_delete_removes_what_was_derived_from_it() {
    let mut index = Index::new();
    index.apply_all(changes(ENTRY));
    let key = Key::new(Kind::ServiceEntry, "shop", "two-hosts");
    let age = index.age(&key);
    let changed = ENTRY.replace("b.example.com", "c.example.com");
    let mut again = changes(&changed);
    assert!(index.apply(again.remove(0)), "a changed object is a change");
    assert!(!index.apply(again.remove(0)), "an identical object is not");
    index.apply(Change::Delete(Key::new(Kind::ServiceEntry, "shop", "resolver")));
    assert_eq!(index.age(&key), age, "an update keeps the creation rank");
    let hosts: Vec<&str> = index.services().map(|s| s.hostname.as_str()).collect();
    assert_eq!(hosts, ["a.example.com", "c.example.com"]);
    assert!(index.apply(Change::Delete(key.clone())));
    assert_eq!(index.services().count(), 0);
    assert!(!index.apply(Change::Delete(key)), "deleting twice changes nothing");
    assert!(index.apply(Change::Delete(Key::new(Kind::WorkloadEntry, "shop", "vm"))));
    assert_eq!(index.workloads().count(), 0);
}

#[test]
fn an_invalid_object_is_kept_with_its_errors_and_derives_nothing() {
    let mut index = Index::new();
    index.apply_all(changes(&ENTRY.replace("resolution: STATIC", "resolution: NONE")));
    assert_eq!(index.services().count(), 0, "NONE with endpoints is invalid");
    let invalid: Vec<&Key> = index.invalid().map(|(k, _)| k).collect();
    assert_eq!(
        invalid,
        [&Key::new(Kind::ServiceEntry, "shop", "resolver"), &Key::new(Kind::ServiceEntry, "shop", "two-hosts")]
    );
    let (_, config) = index.invalid().next().expect("the invalid entry");
    assert!(!config.errors.is_empty());
}

#[test]
fn a_kubernetes_service_keeps_named_target_ports_and_its_export_to_annotation() {
    let text = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {networking.istio.io/exportTo: ". , team-b"}
spec:
  clusterIP: 10.0.0.1
  selector: {app: web}
  ports:
    - {name: grpc-api, port: 8080, targetPort: api}
    - {name: metrics, port: 9090, targetPort: 9091, appProtocol: http}
    - {name: dns, port: 53, protocol: UDP}
"#;
    let index = Index::from_yaml_documents(text).expect("valid");
    let web = index.services().next().expect("the service");
    assert_eq!(web.hostname, "web.default.svc.cluster.local", "no namespace means default");
    assert_eq!(web.export_to, [".", "team-b"]);
    let ports: Vec<(u16, &TargetPort, trellis_api::proxy_config::Protocol)> =
        web.ports.iter().map(|p| (p.port, &p.target_port, p.protocol)).collect();
    use trellis_api::proxy_config::Protocol;
    assert_eq!(
        ports,
        [(8080, &TargetPort::Name("api".into()), Protocol::Grpc), (9090, &TargetPort::Number(9091), Protocol::Http)]
    );
}

#[test]
fn a_kubernetes_object_that_cannot_be_read_is_a_problem_naming_it() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{port: 70000}]\n";
    let err = Index::from_yaml_documents(text).expect_err("port out of range");
    assert_eq!(err.to_string(), "<yaml>: Service shop/web: spec.ports[0].port: port 70000 is out of range 1-65535");
    let loaded = load::yaml("f.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n");
    assert_eq!(loaded.problems.len(), 1);
    assert!(loaded.problems[0].to_string().starts_with("f.yaml: line 1: spec.containers: "), "{}", loaded.problems[0]);
}

#[test]
fn the_default_mesh_is_preferred_and_other_kinds_are_ignored() {
    let text = r#"
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: another}
spec: {trustDomain: other.example}
---
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: example.org}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
spec: {}
"#;
    let index = Index::from_yaml_documents(text).expect("valid");
    assert_eq!(index.mesh().map(|m| m.trust_domain.as_str()), Some("example.org"));
    assert_eq!(index.len(), 2, "the Deployment is not kept");
}

#[test]
fn the_default_mesh_settings_apply_only_while_no_mesh_object_is_held() {
    let spec = |root: &str| MeshSpec { root_namespace: root.to_owned(), ..MeshSpec::default() };
    let mut index = Index::new();
    assert!(index.mesh().is_none());
    assert!(index.set_default_mesh(Some(spec("mesh-root"))));
    assert!(!index.set_default_mesh(Some(spec("mesh-root"))), "the same settings are no change");
    assert_eq!(index.mesh().map(|m| m.root_namespace.as_str()), Some("mesh-root"));
    let mesh =
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {rootNamespace: from-object}\n";
    index.apply_all(changes(mesh));
    assert_eq!(index.mesh().map(|m| m.root_namespace.as_str()), Some("from-object"), "a Mesh object wins");
}

#[test]
fn a_valid_workload_entry_is_kept_as_its_workload_alone_and_handing_it_back_changes_nothing() {
    let mut index = Index::new();
    index.apply_all(changes(ENTRY));
    let key = Key::new(Kind::WorkloadEntry, "shop", "vm");
    let entry = index.get(&key).expect("the WorkloadEntry is listed");
    let Resource::WorkloadEntry(kept) = &entry.resource else { panic!("kept whole: {:?}", entry.resource) };
    let listed = index.workload(&key).expect("its workload");
    assert!(std::ptr::eq(kept.as_ref(), listed), "the entry and the list of workloads hold one workload");
    let again = Change::upsert(entry.resource.clone());
    assert!(!index.apply(again), "what the index holds, handed back, is no change");
    let mut same = changes(ENTRY);
    assert!(!index.apply(same.remove(2)), "nor is the same document read again");
    let moved = changes(&ENTRY.replace("192.0.2.9", "192.0.2.10")).remove(2);
    assert!(index.apply(moved), "a new address is a change");
    assert_eq!(index.workload(&key).map(|w| w.address.as_str()), Some("192.0.2.10"));
    assert_eq!(index.of_kind(Kind::WorkloadEntry).count(), 1);
}

#[test]
fn a_resource_is_two_words_whatever_its_kind() {
    assert_eq!(std::mem::size_of::<Resource>(), 2 * std::mem::size_of::<usize>());
    assert!(std::mem::size_of::<Entry>() <= 48, "{} B", std::mem::size_of::<Entry>());
}
