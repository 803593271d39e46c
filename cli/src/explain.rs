//! `trellis explain`: which virtual host, route, destinations, subsets and endpoints one request takes
//! through one proxy, offline from YAML or from a running `trellisd`.
//!
//! Offline, the YAML becomes an index (`trellis_controlplane::index::load`), the source workload (a Pod
//! or WorkloadEntry) a proxy identity, and `trellis_controlplane::translate` the config that proxy would
//! receive from `trellisd`. With `--control-plane`, the config is the one trellisd last sent to that
//! proxy (`fetch`). Either way the request then goes through the proxy's own compiled tables and route
//! selection (`trace`), so explain and the running proxy cannot disagree. The verdict is printed as text
//! (`render`) or JSON (`-o json`, the `model` types).

mod authz;
mod fetch;
mod model;
mod render;
mod request;
mod trace;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use trellis_api::object::Object;
use trellis_api::proxy_config::{ProxyConfig, ProxyMode};
use trellis_controlplane::index::{Key, Kind, WorkloadKind, load};
use trellis_controlplane::translate::scope;
use trellis_controlplane::{Index, ProxyIdentity, translate};

use crate::analyze::YAML_EXTENSIONS;
pub use model::Explanation;
pub use request::Request;

/// Exit code when a virtual host and a route (or TCP clusters) took the request.
pub const EXIT_ROUTED: u8 = 0;
/// Exit code when nothing routed it: no route (404), no virtual host (passthrough or refusal), no listener.
pub const EXIT_NOT_ROUTED: u8 = 1;
/// Exit code for bad arguments or input that cannot be read.
pub const EXIT_USAGE: u8 = 2;
/// Namespace of a `--from` or `--gateway` that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders of YAML: Istio kinds, ServiceEntries and WorkloadEntries, Kubernetes Services,
    /// Pods and EndpointSlices (folders are read recursively: *.yaml, *.yml, *.json); `-` reads stdin.
    /// With `--control-plane`, optional: used only to trace named routes back to their rule.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required_unless_present = "control_plane")]
    pub files: Vec<PathBuf>,
    /// Ask this running trellisd (`HOST[:PORT]`, port 15012 by default) for the config it last sent to
    /// the proxy of `--from`/`--gateway` (node id `WORKLOAD.NAMESPACE`) instead of translating the YAML.
    #[arg(long, value_name = "ADDR")]
    pub control_plane: Option<String>,
    /// The workload sending the request, a Pod or WorkloadEntry: its sidecar routes the request.
    #[arg(long, value_name = "NAMESPACE/WORKLOAD", required_unless_present = "gateway", conflicts_with = "gateway")]
    pub from: Option<String>,
    /// Explain the request arriving at this ingress gateway workload (a Pod or WorkloadEntry) instead.
    #[arg(long, value_name = "NAMESPACE/WORKLOAD")]
    pub gateway: Option<String>,
    /// The request's method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// A request header; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// The request's URL, as the application sends it: `http://reviews:9080/api/v1?x=1`.
    #[arg(value_name = "URL")]
    pub url: String,
}

/// How the explanation is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The proxy a request goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub namespace: String,
    pub workload: String,
    pub mode: ProxyMode,
}

impl Source {
    /// `NAMESPACE/WORKLOAD` (or `WORKLOAD`, in [`DEFAULT_NAMESPACE`]).
    pub fn parse(text: &str, mode: ProxyMode) -> Result<Self> {
        let (namespace, workload) = text.split_once('/').unwrap_or((DEFAULT_NAMESPACE, text));
        if namespace.is_empty() || workload.is_empty() || workload.contains('/') {
            bail!("{text:?} is not NAMESPACE/WORKLOAD");
        }
        Ok(Self { namespace: namespace.to_owned(), workload: workload.to_owned(), mode })
    }

    /// The node id its proxy reports to trellisd, as translate names it: `WORKLOAD.NAMESPACE`.
    pub fn node_id(&self) -> String {
        format!("{}.{}", self.workload, self.namespace)
    }
}

pub fn run(args: &Args) -> ExitCode {
    match explain_files(args) {
        Ok(explanation) => {
            let text = match args.output {
                Format::Text => render::text(&explanation),
                Format::Json => match serde_json::to_string_pretty(&explanation) {
                    Ok(json) => json + "\n",
                    Err(err) => {
                        eprintln!("trellis explain: {err}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
            };
            // A closed pipe (`| head`) does not change the verdict.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::from(if explanation.outcome.is_routed() { EXIT_ROUTED } else { EXIT_NOT_ROUTED })
        }
        Err(err) => {
            eprintln!("trellis explain: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn explain_files(args: &Args) -> Result<Explanation> {
    let request = Request::parse(&args.method, &args.url, &args.headers).map_err(|e| anyhow!(e))?;
    let source = match (&args.from, &args.gateway) {
        (Some(from), None) => Source::parse(from, ProxyMode::Sidecar).context("--from")?,
        (None, Some(gateway)) => Source::parse(gateway, ProxyMode::Gateway).context("--gateway")?,
        _ => bail!("name the sending workload with --from, or the ingress gateway with --gateway"),
    };
    match &args.control_plane {
        None => offline(&load_index(&args.files)?, &source, &request),
        Some(address) => {
            let index = if args.files.is_empty() { None } else { Some(load_index(&args.files)?) };
            let config = fetch::config(address, &source.node_id())?;
            if config.mode != source.mode {
                bail!("proxy {} is a {:?} proxy, not a {:?} one", source.node_id(), config.mode, source.mode);
            }
            let mut explanation = trace::explain(config.clone(), &request, index.as_ref()).map_err(|e| anyhow!(e))?;
            if let Some(index) = &index {
                judge_at_destination(&mut explanation, index, &config, &request);
            }
            Ok(explanation)
        }
    }
}

/// Translates `index` for the proxy of `source` and explains `request` through it.
pub fn offline(index: &Index, source: &Source, request: &Request) -> Result<Explanation> {
    let identity = identity(index, source)?;
    let translation = translate(index, &identity);
    let mut explanation = trace::explain(translation.config.clone(), request, Some(index)).map_err(|e| anyhow!(e))?;
    explanation.skipped = translation.skipped.iter().map(ToString::to_string).collect();
    judge_at_destination(&mut explanation, index, &translation.config, request);
    Ok(explanation)
}

/// Adds the destination workload's authorization verdict for a routed HTTP request.
fn judge_at_destination(explanation: &mut Explanation, index: &Index, source: &ProxyConfig, request: &Request) {
    if explanation.outcome == model::Outcome::Routed
        && let Some(cluster) = explanation.clusters.first()
    {
        explanation.authorization = authz::judge(index, source, cluster, request);
    }
}

/// The proxy identity of the workload `source` names, or an error listing the workloads there are.
fn identity(index: &Index, source: &Source) -> Result<ProxyIdentity> {
    for kind in [Kind::WorkloadEntry, Kind::Pod] {
        let key = Key::new(kind, &source.namespace, &source.workload);
        if let Some(identity) = ProxyIdentity::for_workload(index, &key, source.mode) {
            return Ok(identity);
        }
    }
    let name = format!("{}/{}", source.namespace, source.workload);
    let known: Vec<String> = index
        .workloads()
        .filter(|w| w.kind != WorkloadKind::ServiceEntryEndpoint)
        .map(|w| format!("{}/{} ({:?})", w.namespace, w.name, w.kind))
        .collect();
    let mut message = format!("no Pod or WorkloadEntry {name} in the input");
    if source.mode == ProxyMode::Gateway
        && let Some(hint) = gateway_hint(index, &source.namespace, &source.workload)
    {
        message.push_str(&format!("; {hint}"));
    }
    if known.is_empty() {
        message
            .push_str("; the input has no workloads (describe them as Pods, or ServiceEntries with WorkloadEntries)");
    } else {
        message.push_str(&format!("; workloads: {}", known.join(", ")));
    }
    Err(anyhow!(message))
}

/// When `--gateway` names a Gateway object rather than its workload: the workloads that object selects.
fn gateway_hint(index: &Index, namespace: &str, name: &str) -> Option<String> {
    let entry = index.get(&Key::new(Kind::Gateway, namespace, name))?;
    let trellis_controlplane::index::Resource::Config(config) = &entry.resource else { return None };
    let Some(Object::Gateway(gateway)) = config.valid() else { return None };
    let selected: Vec<String> = index
        .workloads()
        .filter(|w| gateway.spec.selector.as_ref().is_none_or(|s| scope::selects(s, &w.labels)))
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .collect();
    Some(format!(
        "--gateway names the gateway's workload, not the Gateway object {namespace}/{name} (it selects: {})",
        if selected.is_empty() { "no workload of the input".to_owned() } else { selected.join(", ") }
    ))
}

/// Every document of the files, folders and stdin named, in one index. A document that cannot be read
/// is an error naming its file and line; Istio objects with validation errors are kept (translate
/// leaves them out and explains why).
pub fn load_index(paths: &[PathBuf]) -> Result<Index> {
    let mut sources = Vec::new();
    for path in paths {
        collect(path, &mut sources)?;
    }
    let mut index = Index::new();
    let mut problems = Vec::new();
    for (name, text) in &sources {
        let loaded = load::yaml(name, text);
        problems.extend(loaded.problems.iter().map(ToString::to_string));
        index.apply_all(loaded.changes);
    }
    if !problems.is_empty() {
        bail!("cannot read the input:\n  {}", problems.join("\n  "));
    }
    Ok(index)
}

/// Reads `path` (a file, a folder read recursively in name order, or `-` for stdin) as `(name, text)`.
fn collect(path: &Path, sources: &mut Vec<(String, String)>) -> Result<()> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
        sources.push(("<stdin>".to_owned(), text));
        return Ok(());
    }
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>())
            .with_context(|| format!("cannot read folder {}", path.display()))?;
        entries.sort();
        for entry in entries {
            let is_yaml = entry.extension().and_then(|e| e.to_str()).is_some_and(|e| YAML_EXTENSIONS.contains(&e));
            if entry.is_dir() || is_yaml {
                collect(&entry, sources)?;
            }
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    sources.push((path.display().to_string(), text));
    Ok(())
}

#[cfg(test)]
mod tests;
