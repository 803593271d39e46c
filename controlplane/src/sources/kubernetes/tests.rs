use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::{Value, json};
use trellis_api::{FieldPath, Issue, Severity};

use super::ingest::*;
use super::status::apply_body;
use super::*;
use crate::index::{Change, Index, Key, Resource};

fn virtual_service(name: &str, spec: Value, status: Option<Value>) -> DynamicObject {
    let mut value = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": name, "namespace": "shop", "generation": 3, "resourceVersion": "17",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        },
        "spec": spec,
    });
    if let Some(status) = status {
        value["status"] = status;
    }
    serde_json::from_value(value).expect("a DynamicObject")
}

fn vs_item(object: &DynamicObject) -> Item {
    let resource = api_resource(Kind::VirtualService).expect("an Istio kind");
    config_item(SOURCE_NAME, Kind::VirtualService, &resource, object)
}

fn valid_spec() -> Value {
    json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})
}

fn rejected_status(message: &str) -> Value {
    json!({"observedGeneration": 3, "conditions": [{
        "type": "Accepted", "status": "False", "reason": "Invalid", "message": message,
        "observedGeneration": 3, "lastTransitionTime": "2024-05-01T10:00:05Z",
    }]})
}

fn service(name: &str, port: i64) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": port}]},
    }))
    .expect("a Service")
}

#[test]
fn an_istio_object_is_decoded_with_its_creation_time_and_without_what_status_writes_change() {
    let item = vs_item(&virtual_service("reviews", valid_spec(), None));
    assert_eq!(item.key, Key::new(Kind::VirtualService, "shop", "reviews"));
    let Ok(Change::Upsert { resource: Resource::Config(config), created }) = &item.outcome else {
        panic!("an upsert of a config: {:?}", item.outcome)
    };
    assert!(config.valid().is_some(), "{:?}", config.errors);
    assert_eq!(*created, Some(1_714_557_600));
    let status = item.status.as_ref().expect("Istio kinds have a status target");
    assert_eq!((&status.desired, &status.observed), (&Verdict::Valid, &Verdict::Valid));

    let mut rewritten = virtual_service("reviews", valid_spec(), Some(rejected_status("old")));
    rewritten.metadata.resource_version = Some("18".to_owned());
    rewritten.metadata.managed_fields = None;
    let again = vs_item(&rewritten);
    assert_eq!(again.outcome.as_ref().ok(), item.outcome.as_ref().ok(), "a status write is not a change");
}

#[test]
fn an_invalid_istio_object_is_kept_with_its_errors_and_should_be_rejected_naming_the_field() {
    let spec = json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": ""}}]}]});
    let item = vs_item(&virtual_service("broken", spec, None));
    let Ok(Change::Upsert { resource: Resource::Config(config), .. }) = &item.outcome else {
        panic!("an upsert of a config: {:?}", item.outcome)
    };
    assert!(config.valid().is_none() && !config.errors.is_empty());
    let status = item.status.expect("a status target");
    let Verdict::Rejected { generation, message } = status.desired else { panic!("rejected: {:?}", status.desired) };
    assert_eq!(generation, Some(3));
    assert!(message.starts_with("spec.http[0].route[0].destination.host: "), "{message}");
}

#[test]
fn an_istio_object_that_does_not_decode_is_kept_with_the_type_error_at_its_field() {
    let spec = json!({"hosts": ["reviews"], "http": [{"timeout": 5}]});
    let item = vs_item(&virtual_service("typed-wrong", spec, None));
    let Ok(Change::Upsert { resource: Resource::Config(config), .. }) = &item.outcome else {
        panic!("an upsert of a config: {:?}", item.outcome)
    };
    assert!(config.object.is_none());
    let Some(StatusTarget { desired: Verdict::Rejected { message, .. }, .. }) = item.status else { panic!("rejected") };
    assert!(message.starts_with("spec.http[0].timeout: "), "{message}");
}

#[test]
fn the_observed_verdict_is_rejected_only_for_trellis_invalid_condition() {
    let (verdict, since) = observed_verdict(Some(&rejected_status("spec.hosts: required")));
    assert_eq!(verdict, Verdict::Rejected { generation: Some(3), message: "spec.hosts: required".to_owned() });
    assert_eq!(since.map(|t| t.0.as_second()), Some(1_714_557_605));
    let accepted = json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
        "lastTransitionTime": "2024-05-01T10:00:05Z"}]});
    assert_eq!(observed_verdict(Some(&accepted)).0, Verdict::Valid);
    let foreign = json!({"validationMessages": [{"level": "ERROR"}]});
    assert_eq!(observed_verdict(Some(&foreign)).0, Verdict::Valid, "a status Trellis cannot read is not its own");
    assert_eq!(observed_verdict(None).0, Verdict::Valid);
}

#[test]
fn a_long_list_of_errors_is_cut_at_an_error_and_says_how_many_were_left_out() {
    let issue = |i: usize| Issue {
        severity: Severity::Error,
        path: FieldPath::of("spec").key("hosts").index(i),
        message: "x".repeat(100),
    };
    assert_eq!(rejection_message(&[]), None);
    let one = rejection_message(&[issue(0)]).expect("a message");
    assert_eq!(one, format!("spec.hosts[0]: {}", "x".repeat(100)));
    let many: Vec<Issue> = (0..100).map(issue).collect();
    let message = rejection_message(&many).expect("a message");
    assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
    let kept = message.matches("spec.hosts[").count();
    assert!(message.ends_with(&format!("; and {} more", 100 - kept)), "{message}");
}

#[test]
fn keys_of_cluster_scoped_kinds_have_no_namespace_and_namespaced_ones_default() {
    let meta = |namespace: Option<&str>| kube::api::ObjectMeta {
        name: Some("x".to_owned()),
        namespace: namespace.map(str::to_owned),
        ..Default::default()
    };
    assert_eq!(key_of(Kind::Mesh, &meta(Some("ignored"))), Key::new(Kind::Mesh, "", "x"));
    assert_eq!(key_of(Kind::Namespace, &meta(None)), Key::new(Kind::Namespace, "", "x"));
    assert_eq!(key_of(Kind::Pod, &meta(None)), Key::new(Kind::Pod, "default", "x"));
    assert!(api_resource(Kind::Pod).is_none());
    let mesh = api_resource(Kind::Mesh).expect("the Mesh is a CRD");
    assert_eq!((mesh.api_version.as_str(), mesh.plural.as_str()), ("trellis.dev/v1alpha1", "meshes"));
}

#[test]
fn a_relist_replaces_the_kind_at_its_end_and_deletes_what_it_no_longer_holds() {
    let mut ingest = Ingest::new();
    let mut index = Index::new();
    let item = |name: &str| service_item(SOURCE_NAME, &service(name, 80));
    assert!(!ingest.handle(&mut index, SourceEvent::Init(Kind::Service)));
    assert!(!ingest.handle(&mut index, SourceEvent::InitApply(item("a"))), "buffered until the list ends");
    ingest.handle(&mut index, SourceEvent::InitApply(item("b")));
    assert!(index.is_empty());
    assert!(ingest.handle(&mut index, SourceEvent::InitDone(Kind::Service)));
    assert_eq!(index.of_kind(Kind::Service).count(), 2);

    ingest.handle(&mut index, SourceEvent::Init(Kind::Service));
    ingest.handle(&mut index, SourceEvent::InitApply(item("a")));
    assert_eq!(index.of_kind(Kind::Service).count(), 2, "the old picture stays until the list ends");
    assert!(ingest.handle(&mut index, SourceEvent::InitDone(Kind::Service)));
    let names: Vec<&str> = index.of_kind(Kind::Service).map(|(k, _)| &*k.name).collect();
    assert_eq!(names, ["a"]);
    assert!(!ingest.handle(&mut index, SourceEvent::Init(Kind::Pod)));
    assert!(!ingest.handle(&mut index, SourceEvent::InitDone(Kind::Pod)), "an empty list of another kind");
    assert_eq!(index.len(), 1);
}

#[test]
fn a_kubernetes_object_that_cannot_be_read_is_left_out_with_its_reason_and_replaces_the_old_version() {
    let mut ingest = Ingest::new();
    let mut index = Index::new();
    ingest.handle(&mut index, SourceEvent::Apply(service_item(SOURCE_NAME, &service("a", 80))));
    assert_eq!(index.len(), 1);
    assert!(ingest.handle(&mut index, SourceEvent::Apply(service_item(SOURCE_NAME, &service("a", 70000)))));
    assert!(index.is_empty(), "the unreadable version is not kept, nor the old one");
    let key = Key::new(Kind::Service, "shop", "a");
    let reason = ingest.problems().get(&key).expect("a reason");
    assert!(reason.contains("spec.ports[0].port") && reason.contains("70000"), "{reason}");
    ingest.handle(&mut index, SourceEvent::Apply(service_item(SOURCE_NAME, &service("a", 80))));
    assert!(ingest.problems().is_empty() && index.len() == 1, "a fixed object comes back");
    ingest.handle(&mut index, SourceEvent::Apply(service_item(SOURCE_NAME, &service("b", 0))));
    ingest.handle(&mut index, SourceEvent::Init(Kind::Service));
    ingest.handle(&mut index, SourceEvent::InitDone(Kind::Service));
    assert!(ingest.problems().is_empty() && index.is_empty(), "a relist forgets the problems of deleted objects");
}

#[test]
fn touched_istio_objects_are_reported_once_with_their_target_and_deleted_ones_without() {
    let mut ingest = Ingest::new();
    let mut index = Index::new();
    ingest.handle(&mut index, SourceEvent::Apply(service_item(SOURCE_NAME, &service("a", 80))));
    ingest.handle(&mut index, SourceEvent::Apply(vs_item(&virtual_service("reviews", valid_spec(), None))));
    let key = Key::new(Kind::VirtualService, "shop", "reviews");
    let touched = ingest.take_touched();
    assert_eq!(touched.len(), 1, "Services have no status target");
    assert_eq!(touched[0].0, key);
    assert!(touched[0].1.is_some());
    assert!(ingest.take_touched().is_empty());
    ingest.handle(&mut index, SourceEvent::Delete(key.clone()));
    assert_eq!(ingest.take_touched(), vec![(key.clone(), None)]);
    assert!(ingest.status(&key).is_none());
}

#[test]
fn the_status_body_applies_the_rejection_or_an_empty_status_under_the_objects_name() {
    let resource = api_resource(Kind::VirtualService).expect("an Istio kind");
    let key = Key::new(Kind::VirtualService, "shop", "broken");
    let since = Time(Timestamp::from_second(1_714_557_605).expect("a time"));
    let rejected = Verdict::Rejected { generation: Some(3), message: "spec.hosts: required".to_owned() };
    assert_eq!(
        apply_body(&key, &resource, &rejected, since.clone()),
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "broken", "namespace": "shop"},
            "status": {"observedGeneration": 3, "conditions": [{
                "type": "Accepted", "status": "False", "reason": "Invalid", "message": "spec.hosts: required",
                "observedGeneration": 3, "lastTransitionTime": "2024-05-01T10:00:05Z",
            }]},
        })
    );
    let mesh = api_resource(Kind::Mesh).expect("a CRD");
    let body = apply_body(&Key::new(Kind::Mesh, "", "default"), &mesh, &Verdict::Valid, since);
    assert_eq!(body["metadata"], json!({"name": "default"}));
    assert_eq!(body["status"], json!({}));
}

#[test]
fn the_retry_delay_doubles_up_to_its_maximum_and_starts_over_after_a_quiet_period() {
    let mut backoff = Doubling::new(Duration::from_millis(10), Duration::from_millis(35));
    let delays: Vec<u128> = (0..4).map(|_| backoff.next().expect("endless").as_millis()).collect();
    assert_eq!(delays, [10, 20, 35, 35]);
    Backoff::reset(&mut backoff);
    assert_eq!(backoff.next(), Some(Duration::from_millis(35)), "a success alone does not start over");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(backoff.next(), Some(Duration::from_millis(10)));
}
