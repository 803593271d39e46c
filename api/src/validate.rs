//! Validation that needs no API server: the rules Istio enforces (and the ones our CRD states as
//! CEL), written in Rust so that files in local mode are held to the same standard as applied objects.

use std::collections::BTreeMap;

use crate::{FieldPath, duration};

/// How serious an [`Issue`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object is rejected: it must not reach any proxy.
    Error,
    /// The object is accepted, but something in it does not do what its author may expect.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found in one field of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub path: FieldPath,
    pub message: String,
}

/// The problems found so far, in the order they were found.
#[derive(Debug, Default, Clone)]
pub struct Issues(Vec<Issue>);

impl Issues {
    /// Records an error at `path`.
    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    fn push(&mut self, severity: Severity, path: &FieldPath, message: impl Into<String>) {
        self.0.push(Issue { severity, path: path.clone(), message: message.into() });
    }

    /// Whether any recorded issue is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|issue| issue.severity == Severity::Error)
    }

    /// The recorded issues.
    pub fn iter(&self) -> impl Iterator<Item = &Issue> {
        self.0.iter()
    }

    /// Takes the recorded issues.
    pub fn into_vec(self) -> Vec<Issue> {
        self.0
    }

    /// Adds every issue of `other`.
    pub fn extend(&mut self, other: Issues) {
        self.0.extend(other.0);
    }

    /// Checks an optional duration field: Go syntax and at least 1ms, as Istio requires.
    pub fn duration(&mut self, path: &FieldPath, value: Option<&str>) {
        let Some(text) = value else { return };
        match duration::parse(text) {
            Ok(d) if d < std::time::Duration::from_millis(1) => {
                self.error(path, format!("duration {text:?} must be at least 1ms"))
            }
            Ok(_) => {}
            Err(err) => self.error(path, err.to_string()),
        }
    }

    /// Checks an optional regular expression field: it must compile (RE2 syntax, as Envoy uses).
    pub fn regex(&mut self, path: &FieldPath, value: Option<&str>) {
        let Some(pattern) = value else { return };
        if let Err(err) = regex::Regex::new(pattern) {
            let reason = err.to_string();
            let last = reason.lines().last().unwrap_or("invalid").trim().to_owned();
            self.error(path, format!("invalid regular expression {pattern:?}: {last}"));
        }
    }

    /// Checks that a port number is in 1..=65535.
    pub fn port(&mut self, path: &FieldPath, value: Option<u32>) {
        if let Some(port) = value
            && !(1..=65535).contains(&port)
        {
            self.error(path, format!("port {port} is out of range 1-65535"));
        }
    }

    /// Checks a label selector map: no wildcards and no empty keys.
    pub fn selector_labels(&mut self, path: &FieldPath, labels: Option<&BTreeMap<String, String>>) {
        for (key, value) in labels.into_iter().flatten() {
            let at = path.key(key);
            if key.is_empty() {
                self.error(&at, "label key must not be empty");
            }
            if key.contains('*') {
                self.error(&at, "wildcard is not allowed in a label key");
            }
            if value.contains('*') {
                self.error(&at, "wildcard is not allowed in a label value");
            }
            if value.len() > 63 {
                self.error(&at, "label value must be at most 63 characters");
            }
        }
    }

    /// Warns that a field is accepted but not acted on yet.
    pub fn not_yet_supported<T>(&mut self, path: &FieldPath, value: Option<&T>) {
        if value.is_some() {
            self.warn(path, crate::support::NOT_ACTED_ON_MESSAGE);
        }
    }
}

/// Semantic validation of one object (or part of one), with no knowledge of other objects.
pub trait Validate {
    /// Records every problem of `self`, whose location is `path`, in `issues`.
    fn validate(&self, path: &FieldPath, issues: &mut Issues);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        if let Some(value) = self {
            value.validate(path, issues);
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        for (i, value) in self.iter().enumerate() {
            value.validate(&path.index(i), issues);
        }
    }
}

impl<T: Validate> Validate for BTreeMap<String, T> {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        for (key, value) in self {
            value.validate(&path.key(key), issues);
        }
    }
}
