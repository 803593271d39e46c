//! The tutorial's steps as the demo applies them, one file at a time: the YAML built into `trellis` (so
//! the demo runs from any directory) or read from `--tutorial DIR`, the check that follows each, the two
//! adaptations a laptop may need (the Gateway's port 80 served as 8080 where binding port 80 needs
//! root; step 06's `jwksUri` on GitHub pointed at the demo's own key set, so it works offline), and when
//! a step has reached every proxy (from `trellisd`'s status list).

use std::collections::BTreeMap;
use std::path::Path;

use trellis_api::push::ProxyStatus;

/// One step of the tutorial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The file name in `examples/tutorial/`, also the name it gets in the mesh's folder.
    pub file: &'static str,
    /// What the step does, for progress lines.
    pub title: &'static str,
    /// The file as built into `trellis`.
    pub embedded: &'static str,
    /// What the demo checks once every proxy has the step.
    pub check: StepCheck,
}

/// The check that follows a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepCheck {
    /// Every sidecar knows the new Service.
    Discovery,
    /// Bookings reach booking through the gateway.
    Route,
    /// Shipping answers 90% v1, 10% v2.
    Split,
    /// Booking's sidecar rejects the overflow to a slow inventory.
    CircuitBreaking,
    /// Sidecars refuse plain text and still talk to each other.
    Mtls,
    /// Booking requires a valid JWT.
    Jwt,
}

/// The tutorial's steps in order.
pub const STEPS: [Step; 6] = [
    Step {
        file: "01-order-service.yaml",
        title: "order-service's Deployment and Service (the shape inventory and shipping follow)",
        embedded: include_str!("../../../examples/tutorial/01-order-service.yaml"),
        check: StepCheck::Discovery,
    },
    Step {
        file: "02-booking-gateway.yaml",
        title: "the booking API through the ingress gateway",
        embedded: include_str!("../../../examples/tutorial/02-booking-gateway.yaml"),
        check: StepCheck::Route,
    },
    Step {
        file: "03-shipping-split.yaml",
        title: "90% of shipping to v1, 10% to v2",
        embedded: include_str!("../../../examples/tutorial/03-shipping-split.yaml"),
        check: StepCheck::Split,
    },
    Step {
        file: "04-inventory-circuit-breaker.yaml",
        title: "circuit breaking for calls to inventory",
        embedded: include_str!("../../../examples/tutorial/04-inventory-circuit-breaker.yaml"),
        check: StepCheck::CircuitBreaking,
    },
    Step {
        file: "05-strict-mtls.yaml",
        title: "mesh-wide STRICT mutual TLS",
        embedded: include_str!("../../../examples/tutorial/05-strict-mtls.yaml"),
        check: StepCheck::Mtls,
    },
    Step {
        file: "06-require-jwt.yaml",
        title: "a JWT of the tutorial's issuer required to book",
        embedded: include_str!("../../../examples/tutorial/06-require-jwt.yaml"),
        check: StepCheck::Jwt,
    },
];

/// The index in [`STEPS`] of the step that adds the Gateway.
pub const GATEWAY_STEP: usize = 1;
/// The index in [`STEPS`] of the step that requires a JWT (its `jwksUri` may point at the demo's keys).
pub const JWT_STEP: usize = 5;

impl Step {
    /// The step's YAML: from `folder` when given, else the copy built into `trellis`.
    pub fn text(&self, folder: Option<&Path>) -> Result<String, String> {
        match folder {
            None => Ok(self.embedded.to_owned()),
            Some(folder) => {
                let path = folder.join(self.file);
                std::fs::read_to_string(&path).map_err(|e| format!("--tutorial: cannot read {}: {e}", path.display()))
            }
        }
    }
}

/// `text` with the `port.number` of every `Gateway` server on `from` changed to `to`, or `None` when no
/// Gateway server listens on `from`. Documents other than Gateways are kept byte for byte.
pub fn with_gateway_port(text: &str, from: u16, to: u16) -> Option<String> {
    let mut changed = false;
    let documents: Vec<String> = split_documents(text)
        .into_iter()
        .map(|document| {
            if !document.lines().any(|line| line.trim() == "kind: Gateway") {
                return document.to_owned();
            }
            document
                .split_inclusive('\n')
                .map(|line| {
                    let trimmed = line.trim();
                    let value = trimmed.strip_prefix("number:").map(str::trim);
                    if value.and_then(|v| v.parse::<u16>().ok()) == Some(from) {
                        changed = true;
                        let indent = &line[..line.len() - line.trim_start().len()];
                        let end = if line.ends_with('\n') { "\n" } else { "" };
                        format!("{indent}number: {to}{end}")
                    } else {
                        line.to_owned()
                    }
                })
                .collect()
        })
        .collect();
    changed.then(|| documents.concat())
}

/// `text` with every `jwksUri` of every `RequestAuthentication` changed to `uri`, or `None` when no
/// RequestAuthentication names one. Other documents and lines are kept byte for byte.
pub fn with_jwks_uri(text: &str, uri: &str) -> Option<String> {
    const FIELD: &str = "jwksUri:";
    let mut changed = false;
    let documents: Vec<String> = split_documents(text)
        .into_iter()
        .map(|document| {
            if !document.lines().any(|line| line.trim() == "kind: RequestAuthentication") {
                return document.to_owned();
            }
            document
                .split_inclusive('\n')
                .map(|line| {
                    let Some(at) = line.find(FIELD) else { return line.to_owned() };
                    let before = &line[..at];
                    if !before.trim().is_empty() && before.trim() != "-" {
                        return line.to_owned();
                    }
                    changed = true;
                    let end = if line.ends_with('\n') { "\n" } else { "" };
                    format!("{before}{FIELD} {uri}{end}")
                })
                .collect()
        })
        .collect();
    changed.then(|| documents.concat())
}

/// `text` cut before every `---` line, keeping every byte.
fn split_documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" && offset > start {
            out.push(&text[start..offset]);
            start = offset;
        }
        offset += line.len();
    }
    out.push(&text[start..]);
    out
}

/// Where the proxies stand after a change, from `trellisd`'s status list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// Not there yet; says what is missing.
    Waiting(String),
    /// A proxy refused its config (or none could be computed for it): waiting longer will not help.
    Refused(String),
    /// Every expected proxy acknowledged what it was sent; `changed` names those whose config changed
    /// since `before`.
    Synced { changed: Vec<String> },
}

/// Whether every proxy in `expected` is connected and acknowledged its config, and which configs
/// changed since `before` (each proxy's sent version then).
pub fn sync_state(expected: &[String], statuses: &[ProxyStatus], before: &BTreeMap<String, String>) -> Sync {
    let mut changed = Vec::new();
    for id in expected {
        let Some(status) = statuses.iter().find(|s| &s.id == id) else {
            return Sync::Waiting(format!("{id} is not connected to trellisd"));
        };
        if !status.in_sync {
            return match &status.last_error {
                Some(error) => Sync::Refused(format!("{id} refused config version {}: {error}", status.sent_version)),
                None => Sync::Waiting(format!("{id} has not acknowledged config version {}", status.sent_version)),
            };
        }
        if before.get(id) != Some(&status.sent_version) {
            changed.push(id.clone());
        }
    }
    Sync::Synced { changed }
}

/// Each proxy's sent version, to compare against after a change.
pub fn versions(statuses: &[ProxyStatus]) -> BTreeMap<String, String> {
    statuses.iter().map(|s| (s.id.clone(), s.sent_version.clone())).collect()
}
