//! The tutorial's YAML (`examples/tutorial/`) is Trellis's acceptance data: every file parses into
//! typed structs, validates clean, and survives a YAML -> types -> YAML round trip without losing a field.

use std::path::PathBuf;

mod common;

use common::normalize;
use trellis_api::analyze::{Source, analyze};
use trellis_api::document;
use trellis_api::object::decode;

fn tutorial_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/tutorial");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/tutorial exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the tutorial has at least six files, found {files:?}");
    files
}

#[test]
fn every_tutorial_object_of_a_served_kind_parses_into_its_type_and_round_trips_without_loss() {
    let mut typed = 0;
    for file in tutorial_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in document::parse(&text).expect("valid YAML") {
            let decoded = decode(&doc.value);
            let issues: Vec<_> = decoded.issues.iter().collect();
            assert!(!decoded.issues.has_errors(), "{}: {}: {issues:?}", file.display(), decoded.id);
            let Some(object) = decoded.object else { continue };
            typed += 1;
            let mut back = object.to_value().expect("serialize");
            // The typed form writes the storage version; the user's version is kept by the caller.
            back["apiVersion"] = doc.value["apiVersion"].clone();
            assert_eq!(
                normalize(&back),
                normalize(&doc.value),
                "{}: {} changed in a round trip",
                file.display(),
                decoded.id
            );
        }
    }
    assert!(typed >= 7, "expected the tutorial's Istio objects to be typed, got {typed}");
}

#[test]
fn the_tutorial_folder_analyzes_with_no_errors() {
    let sources: Vec<Source> = tutorial_files()
        .into_iter()
        .map(|p| Source { name: p.display().to_string(), bytes: std::fs::read(&p).expect("read") })
        .collect();
    let report = analyze(&sources);
    let errors: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert!(!report.has_errors(), "{errors:#?}");
    assert!(report.objects.iter().any(|o| o.id.kind == "VirtualService" && o.id.name == "shipping-service"));
}
