//! `trellis inject -f FILE|-`: the manual injection path (Istio's `kube-inject`). Reads multi-document
//! YAML, adds the sidecar to Pods and to the pod templates of Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, Jobs and CronJobs with the same `trellis_webhook::inject` the webhook runs, and writes
//! the documents back in order. Every other document is written back exactly as it was read; each
//! object left alone is named on stderr with the reason.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use trellis_api::mesh::MeshSpec;
use trellis_webhook::{Decision, Namespace};

/// The file name that means standard input.
const STDIN: &str = "-";
/// The namespace of an object that names none (what `kubectl apply` would use without `-n`).
const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubernetes YAML to inject (`-` for standard input); multi-document files are fine.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// A `Mesh` object (or just its spec) whose proxy settings apply; the Mesh defaults when absent.
    #[arg(long, value_name = "FILE")]
    mesh: Option<PathBuf>,
}

pub fn run(args: &Args) -> ExitCode {
    match inject_command(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("trellis inject: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn inject_command(args: &Args) -> Result<()> {
    let text = if args.file.as_os_str() == STDIN {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    let mesh = match &args.mesh {
        Some(path) => read_mesh(path)?,
        None => serde_json::from_value(json!({})).context("the default mesh settings")?,
    };
    let output = inject_documents(&text, &mesh)?;
    for note in &output.notes {
        eprintln!("{note}");
    }
    std::io::stdout().write_all(output.yaml.as_bytes()).context("writing standard output")?;
    Ok(())
}

fn read_mesh(path: &std::path::Path) -> Result<MeshSpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_saphyr::from_str(&text).with_context(|| format!("{}: not YAML", path.display()))?;
    let spec = if value.get("kind").and_then(Value::as_str) == Some("Mesh") {
        value.get("spec").cloned().unwrap_or_else(|| json!({}))
    } else {
        value
    };
    serde_json::from_value(spec).with_context(|| format!("{}: not a Mesh spec", path.display()))
}

/// The injected YAML and one line per object left alone.
#[derive(Debug)]
pub struct Output {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// Where the pod template of each kind that has one is, as JSON-pointer segments (a Pod is its own).
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every pod and pod template of the multi-document YAML `text`.
pub fn inject_documents(text: &str, mesh: &MeshSpec) -> Result<Output> {
    let mut yaml = String::new();
    let mut notes = Vec::new();
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        if !yaml.is_empty() {
            yaml.push_str("---\n");
        }
        let value: Value = serde_saphyr::from_str(chunk.text)
            .with_context(|| format!("document {} (line {}) is not valid YAML", index + 1, chunk.line))?;
        match inject_object(value, mesh).with_context(|| format!("document {} (line {})", index + 1, chunk.line))? {
            Injected::Yes(object) => {
                yaml.push_str(&serde_saphyr::to_string(&object).context("writing YAML")?);
            }
            Injected::No(reason) => {
                if let Some(reason) = reason {
                    notes.push(reason);
                }
                yaml.push_str(chunk.text);
                if !chunk.text.is_empty() && !chunk.text.ends_with('\n') {
                    yaml.push('\n');
                }
            }
        }
    }
    Ok(Output { yaml, notes })
}

enum Injected {
    Yes(Value),
    /// Left as it is, with the reason to tell (none for an empty document).
    No(Option<String>),
}

fn inject_object(mut object: Value, mesh: &MeshSpec) -> Result<Injected> {
    if object.is_null() {
        return Ok(Injected::No(None));
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_owned();
    let who = format!("{kind} {name}");
    let Some(path) = template_path(&kind) else {
        return Ok(Injected::No(Some(format!("skipped {who}: a {kind} has no pod template"))));
    };
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(DEFAULT_NAMESPACE);
    let namespace = namespace.to_owned();
    let pointer: String = path.iter().map(|segment| format!("/{segment}")).collect();
    let Some(template) = object.pointer_mut(&pointer) else {
        bail!("{who}: {} is missing", path.join("."));
    };
    // A pod template is a pod's metadata and spec: the same patch applies to both.
    let mut pod = json!({ "apiVersion": "v1", "kind": "Pod" });
    pod["metadata"] = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    pod["spec"] = template.get("spec").cloned().unwrap_or(Value::Null);
    let typed: Pod =
        serde_json::from_value(pod).with_context(|| format!("{who}: the pod template is not a valid pod"))?;
    let injection = trellis_webhook::inject(&typed, &Namespace { name: &namespace, labels: None }, mesh)
        .with_context(|| who.clone())?;
    for warning in &injection.warnings {
        eprintln!("warning: {who}: {warning}");
    }
    if let Decision::Skip(skip) = injection.decision {
        return Ok(Injected::No(Some(format!("skipped {who}: {skip}"))));
    }
    if template.get("metadata").is_none_or(Value::is_null) {
        template["metadata"] = json!({});
    }
    json_patch::patch(template, &injection.patch).with_context(|| format!("{who}: applying the injection"))?;
    Ok(Injected::Yes(object))
}

/// One document of a multi-document YAML text, as written, and its first line.
struct Chunk<'a> {
    text: &'a str,
    line: usize,
}

/// Splits `text` at its `---` document markers, keeping each document's text byte for byte.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if offset > start || number > 0 {
                chunks.push(Chunk { text: &text[start..offset], line: start_line });
            }
            start = offset + line.len();
            start_line = number + 2;
        }
        offset += line.len();
    }
    chunks.push(Chunk { text: &text[start..], line: start_line });
    // A leading marker or a trailing one leaves an empty document behind: drop those.
    chunks.retain(|chunk| !chunk.text.trim().is_empty());
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_mesh() -> MeshSpec {
        serde_json::from_value(json!({})).expect("the default mesh")
    }

    fn tutorial() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tutorial/01-order-service.yaml");
        std::fs::read_to_string(path).expect("the tutorial's first example")
    }

    #[test]
    fn the_tutorial_deployment_gets_the_sidecar_and_its_service_is_passed_through_unchanged() {
        let text = tutorial();
        let output = inject_documents(&text, &default_mesh()).expect("injected");
        assert_eq!(output.notes, ["skipped Service order-service: a Service has no pod template"]);
        let service_text = text.split("\n---\n").nth(1).expect("the Service document");
        assert!(output.yaml.ends_with(service_text), "the Service changed:\n{}", output.yaml);

        let documents: Vec<Value> = serde_saphyr::from_multiple(&output.yaml).expect("the output is YAML");
        assert_eq!(documents.len(), 2);
        let template = &documents[0]["spec"]["template"];
        let init: Vec<&str> = template["spec"]["initContainers"]
            .as_array()
            .expect("init containers")
            .iter()
            .map(|c| c["name"].as_str().expect("a name"))
            .collect();
        assert_eq!(init, ["trellis-init", "trellis-proxy"]);
        assert_eq!(template["spec"]["containers"][0]["name"], "order-service");
        assert_eq!(template["spec"]["containers"][0]["resources"]["requests"]["memory"], "200Mi");
        assert_eq!(template["metadata"]["labels"]["app"], "order-service");
        assert!(template["metadata"]["annotations"]["trellis.dev/sidecar-status"].is_string());
        // The whole Deployment is still a valid one for the API server's types.
        let again = inject_documents(&output.yaml, &default_mesh()).expect("re-injected");
        assert_eq!(again.notes[0], "skipped Deployment order-service: the pod already has the sidecar");
    }

    #[test]
    fn every_workload_kind_is_injected_and_opted_out_or_other_objects_are_named_on_stderr() {
        let pod_spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
        let template = json!({"metadata": {"labels": {"app": "a"}}, "spec": pod_spec});
        let mut documents =
            vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec})];
        for kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"] {
            documents.push(json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"}, "spec": {"template": template}}));
        }
        documents.push(json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}));
        documents.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "out"},
            "spec": {"template": {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}, "spec": pod_spec}}}));
        documents
            .push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}}));
        let text: Vec<String> = documents.iter().map(|d| serde_saphyr::to_string(d).expect("yaml")).collect();
        let output = inject_documents(&text.join("---\n"), &default_mesh()).expect("injected");
        assert_eq!(
            output.notes,
            [
                "skipped Deployment out: opted out by the annotation sidecar.istio.io/inject=false",
                "skipped ConfigMap cm: a ConfigMap has no pod template"
            ]
        );
        let out: Vec<Value> = serde_saphyr::from_multiple(&output.yaml).expect("yaml");
        assert_eq!(out.len(), documents.len());
        for (document, path) in out.iter().zip([
            "/spec",
            "/spec/template/spec",
            "/spec/template/spec",
            "/spec/template/spec",
            "/spec/template/spec",
            "/spec/template/spec",
            "/spec/jobTemplate/spec/template/spec",
        ]) {
            let init = document.pointer(&format!("{path}/initContainers/1/name"));
            assert_eq!(init, Some(&json!("trellis-proxy")), "{document}");
        }
        assert_eq!(out[7], documents[7]);
        assert_eq!(out[8], documents[8]);
    }

    #[test]
    fn a_broken_document_is_an_error_naming_it() {
        let text = "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n";
        let err = format!("{:#}", inject_documents(text, &default_mesh()).expect_err("a bad pod"));
        assert!(err.contains("document 2 (line 4)") && err.contains("Pod p"), "{err}");
        let err = format!("{:#}", inject_documents("a: [\n", &default_mesh()).expect_err("bad YAML"));
        assert!(err.contains("document 1 (line 1) is not valid YAML"), "{err}");
    }

    #[test]
    fn documents_are_split_at_their_markers_byte_for_byte() {
        let text = "---\na: 1\n--- \n# only a comment\n---\nb: 2\n";
        let chunks: Vec<(&str, usize)> = split_documents(text).iter().map(|c| (c.text, c.line)).collect();
        assert_eq!(chunks, [("a: 1\n", 2), ("# only a comment\n", 4), ("b: 2\n", 6)]);
    }
}
