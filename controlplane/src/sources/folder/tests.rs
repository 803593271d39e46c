use std::path::Path;
use std::time::Duration;

use super::*;
use crate::index::Kind;

const SERVICE_ENTRY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backend
  namespace: shop
spec:
  hosts: [backend.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
    - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  workloadSelector:
    labels: {app: backend}
";

fn workload_entry(name: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: shop\n\
         spec:\n  address: {address}\n  labels: {{app: backend}}\n"
    )
}

const VIRTUAL_SERVICE_JSON: &str = r#"{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
 "metadata": {"name": "backend", "namespace": "shop"},
 "spec": {"hosts": ["backend"], "http": [{"route": [{"destination": {"host": "backend"}}]}]}}"#;

/// Writes a file the way careful writers do (a new file renamed over the old one), so every write is
/// a new version even within one clock tick.
fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folder");
    let temporary = dir.join(format!("{name}.partial").replace('/', "_"));
    std::fs::write(&temporary, text).expect("write file");
    std::fs::rename(&temporary, &path).expect("rename file");
}

fn open(dir: &Path) -> (FolderSource, SharedIndex) {
    let index = SharedIndex::default();
    (FolderSource::new(dir, index.clone()), index)
}

fn has(index: &SharedIndex, kind: Kind, name: &str) -> bool {
    index.read().get(&Key::new(kind, "shop", name)).is_some()
}

fn lines(scan: &Scan) -> Vec<String> {
    scan.findings.iter().map(ToString::to_string).collect()
}

#[test]
fn every_yaml_and_json_file_of_the_folder_tree_becomes_one_batch_of_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "services.yaml", SERVICE_ENTRY);
    write(dir.path(), "workloads/backend-1.yml", &workload_entry("backend-1", "127.0.1.1"));
    write(dir.path(), "routes.json", VIRTUAL_SERVICE_JSON);
    write(dir.path(), "notes.txt", "kind: ServiceEntry\n");
    write(dir.path(), ".hidden.yaml", &workload_entry("hidden", "127.0.1.9"));
    let (mut source, index) = open(dir.path());

    let scan = source.scan().expect("the folder is readable");
    assert!(scan.changed);
    assert!(scan.findings.is_empty(), "{:?}", lines(&scan));
    assert_eq!((scan.files, scan.objects, scan.read.len()), (3, 3, 3));
    assert_eq!(index.generation(), 1, "one batch, one generation");
    assert!(has(&index, Kind::ServiceEntry, "backend"));
    assert!(has(&index, Kind::WorkloadEntry, "backend-1"));
    assert!(has(&index, Kind::VirtualService, "backend"));
    assert!(!has(&index, Kind::WorkloadEntry, "hidden"), "hidden files are skipped");
    assert_eq!(index.read().workloads().count(), 1);

    let again = source.scan().expect("still readable");
    assert!(again.read.is_empty() && !again.changed, "nothing is read again while nothing changed");
    assert_eq!(index.generation(), 1);
}

#[test]
fn a_changed_file_is_read_again_and_the_objects_it_no_longer_holds_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let both = format!("{}---\n{}", workload_entry("backend-1", "127.0.1.1"), workload_entry("backend-2", "127.0.1.2"));
    write(dir.path(), "workloads.yaml", &both);
    write(dir.path(), "services.yaml", SERVICE_ENTRY);
    let (mut source, index) = open(dir.path());
    source.scan().expect("readable");
    assert!(has(&index, Kind::WorkloadEntry, "backend-2"));

    write(dir.path(), "workloads.yaml", &workload_entry("backend-1", "127.0.1.3"));
    let scan = source.scan().expect("readable");
    assert_eq!(scan.read, vec![dir.path().join("workloads.yaml")], "only the changed file is read");
    assert!(scan.changed);
    assert_eq!(index.generation(), 2, "the update and the delete are one batch");
    assert!(!has(&index, Kind::WorkloadEntry, "backend-2"), "the object that left the file is deleted");
    let addresses: Vec<String> = index.read().workloads().map(|w| w.address.clone()).collect();
    assert_eq!(addresses, vec!["127.0.1.3"]);
}

#[test]
fn a_removed_file_deletes_its_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "services.yaml", SERVICE_ENTRY);
    write(dir.path(), "routes.json", VIRTUAL_SERVICE_JSON);
    let (mut source, index) = open(dir.path());
    source.scan().expect("readable");
    std::fs::remove_file(dir.path().join("routes.json")).expect("remove");
    let scan = source.scan().expect("readable");
    assert_eq!(scan.removed, vec![dir.path().join("routes.json")]);
    assert!(!has(&index, Kind::VirtualService, "backend"));
    assert!(has(&index, Kind::ServiceEntry, "backend"), "the other file's objects stay");
    assert_eq!(scan.objects, 1);
}

#[test]
fn a_file_that_fails_to_parse_keeps_its_last_good_objects_and_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "workloads.yaml", &workload_entry("backend-1", "127.0.1.1"));
    let (mut source, index) = open(dir.path());
    source.scan().expect("readable");
    let generation = index.generation();

    let broken = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: [unclosed\n";
    write(dir.path(), "workloads.yaml", broken);
    let scan = source.scan().expect("readable");
    let file = dir.path().join("workloads.yaml");
    let reported = lines(&scan);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0].starts_with(&format!("{}:", file.display())), "{reported:?}");
    assert!(reported[0].contains(": error: invalid YAML"), "{reported:?}");
    assert_eq!(scan.kept, vec![(file.clone(), 1)]);
    assert!(has(&index, Kind::WorkloadEntry, "backend-1"), "the last good version stays");
    assert_eq!(index.generation(), generation, "nothing changed in the index");
    assert!(source.scan().expect("readable").read.is_empty(), "a failing file is not re-read until it changes");

    write(dir.path(), "workloads.yaml", &workload_entry("backend-9", "127.0.1.9"));
    let fixed = source.scan().expect("readable");
    assert!(fixed.findings.is_empty() && fixed.kept.is_empty());
    assert!(has(&index, Kind::WorkloadEntry, "backend-9"));
    assert!(!has(&index, Kind::WorkloadEntry, "backend-1"));
}

#[test]
fn a_kubernetes_document_that_cannot_be_read_fails_its_file_at_the_line_of_its_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n    - port: eighty\n",
        workload_entry("backend-1", "127.0.1.1")
    );
    write(dir.path(), "mixed.yaml", &text);
    let (mut source, index) = open(dir.path());
    let scan = source.scan().expect("readable");
    let reported = lines(&scan);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0].starts_with(&format!("{}:", dir.path().join("mixed.yaml").display())), "{reported:?}");
    assert!(reported[0].contains("spec.ports[0].port"), "{reported:?}");
    assert!(index.read().is_empty(), "a new file that fails has no last good version");
}

#[test]
fn an_invalid_istio_object_is_kept_and_reported_at_its_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: backend\n  namespace: shop\n\
                spec:\n  hosts: [backend]\n  http:\n    - timeout: soon\n      route:\n        - destination: {host: backend}\n";
    write(dir.path(), "routes.yaml", text);
    let (mut source, index) = open(dir.path());
    let scan = source.scan().expect("readable");
    let reported = lines(&scan);
    let file = dir.path().join("routes.yaml");
    let prefix = format!("{}:9: VirtualService shop/backend: spec.http[0].timeout: error:", file.display());
    assert!(reported.iter().any(|l| l.starts_with(&prefix)), "{reported:?}");
    assert!(scan.kept.is_empty(), "an invalid object does not fail its file");
    assert_eq!(index.read().invalid().count(), 1, "kept with its errors, for translate to name");
}

#[test]
fn an_object_defined_twice_uses_the_first_and_reports_the_other_until_the_first_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.yaml", &workload_entry("backend-1", "127.0.1.1"));
    write(dir.path(), "b.yaml", &workload_entry("backend-1", "127.0.1.2"));
    let (mut source, index) = open(dir.path());
    let scan = source.scan().expect("readable");
    let reported = lines(&scan);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0].contains("WorkloadEntry shop/backend-1 is also defined at"), "{reported:?}");
    assert!(reported[0].contains(": warning: "), "{reported:?}");
    let address = |index: &SharedIndex| index.read().workloads().map(|w| w.address.clone()).collect::<Vec<_>>();
    assert_eq!(address(&index), vec!["127.0.1.1"]);

    std::fs::remove_file(dir.path().join("a.yaml")).expect("remove");
    source.scan().expect("readable");
    assert_eq!(address(&index), vec!["127.0.1.2"], "the other definition takes over");
}

#[test]
fn an_object_shadowed_by_a_new_file_and_then_uncovered_comes_back_as_its_file_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "b.yaml", &workload_entry("backend-1", "127.0.1.2"));
    let (mut source, index) = open(dir.path());
    source.scan().expect("readable");
    let address = |index: &SharedIndex| index.read().workloads().map(|w| w.address.clone()).collect::<Vec<_>>();
    assert_eq!(address(&index), vec!["127.0.1.2"]);

    write(dir.path(), "a.yaml", &workload_entry("backend-1", "127.0.1.1"));
    let scan = source.scan().expect("readable");
    assert_eq!(scan.read.len(), 1, "only the new file is read");
    assert_eq!(address(&index), vec!["127.0.1.1"], "the first file in path order wins");

    std::fs::remove_file(dir.path().join("a.yaml")).expect("remove");
    let scan = source.scan().expect("readable");
    assert!(scan.read.is_empty() && scan.changed, "b.yaml is not read again, yet its object returns");
    assert_eq!(address(&index), vec!["127.0.1.2"]);
}

#[test]
fn a_folder_that_cannot_be_listed_is_an_error_that_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "services.yaml", SERVICE_ENTRY);
    let (mut source, index) = open(&dir.path().join("nowhere"));
    let err = source.scan().expect_err("no such folder");
    assert!(err.to_string().starts_with("cannot read folder"), "{err}");
    assert!(index.read().is_empty());

    let (mut source, index) = open(&dir.path().join("services.yaml"));
    assert!(source.scan().expect_err("a file is not a folder").to_string().ends_with("not a folder"));
    assert!(index.read().is_empty());
}

#[test]
fn a_binary_file_is_reported_and_not_read() {
    let parsed = parse("image.yaml", &[0xff, 0xfe, 0x00]);
    let findings = parsed.expect_err("not text");
    assert_eq!(findings[0].to_string(), "image.yaml:1: error: not UTF-8 text (is it a binary file?)");
}

#[tokio::test]
async fn a_running_source_picks_up_a_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "services.yaml", SERVICE_ENTRY);
    let (mut source, index) = open(dir.path());
    source.scan().expect("readable");
    let mut generations = index.subscribe();
    let running = tokio::spawn(source.run(Duration::from_millis(10)));
    write(dir.path(), "workloads.yaml", &workload_entry("backend-1", "127.0.1.1"));
    tokio::time::timeout(Duration::from_secs(10), generations.changed())
        .await
        .expect("the change is picked up in time")
        .expect("the index lives");
    assert!(has(&index, Kind::WorkloadEntry, "backend-1"));
    running.abort();
}

#[test]
fn the_source_and_the_index_share_one_copy_of_each_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "services.yaml", &format!("{SERVICE_ENTRY}---\n{}", workload_entry("backend-1", "10.0.0.1")));
    let (mut source, index) = open(dir.path());
    source.scan().expect("scan");
    let index = index.read();
    for state in source.files.values() {
        for held in &state.objects {
            let key = index.key(&held.key).expect("indexed");
            assert!(Arc::ptr_eq(&key.name, &held.key.name), "{}", held.key);
            let (owned, _) = source.owners.get_key_value(&held.key).expect("owned");
            assert!(Arc::ptr_eq(&key.namespace, &owned.namespace), "{}", held.key);
        }
    }
}
