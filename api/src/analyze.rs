//! `analyze`: every check Trellis can make on a set of YAML files without a cluster, as
//! `trellis analyze` prints them and as the control plane applies them before accepting policy.
//!
//! Pure: the caller reads the files; this module parses, decodes, validates each object, checks
//! objects against each other (see [`crate::crosscheck`]) and returns findings with file and line.

use std::fmt;

use crate::document::{self, Document};
use crate::object::{self, Object, ObjectId};
use crate::{Error, FieldPath, Issue, Issues, Severity, crosscheck, support};

/// One input: its name as the user gave it and its raw bytes.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    /// The object the problem is in, when the document could be identified.
    pub object: Option<ObjectId>,
    pub issue: Issue,
}

impl fmt::Display for Finding {
    /// `file:line: Kind namespace/name: field.path: severity: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(id) = &self.object {
            write!(f, "{id}: ")?;
        }
        if !self.issue.path.segments().is_empty() {
            write!(f, "{}: ", self.issue.path)?;
        }
        write!(f, "{}: {}", self.issue.severity, self.issue.message)
    }
}

/// A typed object and where it came from.
#[derive(Debug, Clone)]
pub struct Located {
    pub id: ObjectId,
    pub object: Object,
    pub file: String,
    pub document: Document,
}

/// Everything `analyze` learned.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The objects of kinds Trellis serves that decoded into types (they may still have validation
    /// errors, which are among the findings), in input order.
    pub objects: Vec<Located>,
    /// How many documents were read, of any kind.
    pub documents: usize,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.issue.severity == Severity::Error)
    }
}

/// Analyzes `sources` as one set of objects (cross-object checks see all of them).
pub fn analyze(sources: &[Source]) -> Report {
    let mut report = Report::default();
    for source in sources {
        analyze_source(source, &mut report);
    }
    let ids: Vec<(usize, Issue)> = crosscheck::check(&report.objects);
    for (index, issue) in ids {
        let located = &report.objects[index];
        let line = located.document.line_of(&issue.path);
        report.findings.push(Finding { file: located.file.clone(), line, object: Some(located.id.clone()), issue });
    }
    report
}

fn analyze_source(source: &Source, report: &mut Report) {
    let file = source.name.clone();
    let whole_file = |message: String| Finding {
        file: file.clone(),
        line: 1,
        object: None,
        issue: Issue { severity: Severity::Error, path: FieldPath::root(), message },
    };
    let Ok(text) = std::str::from_utf8(&source.bytes) else {
        report.findings.push(whole_file("not UTF-8 text (is it a binary file?)".to_owned()));
        return;
    };
    if text.contains('\0') {
        report.findings.push(whole_file("contains NUL bytes (is it a binary file?)".to_owned()));
        return;
    }
    let documents = match document::parse(text) {
        Ok(documents) => documents,
        Err(Error::Yaml { line, message }) => {
            report.findings.push(Finding { line, ..whole_file(format!("invalid YAML: {message}")) });
            return;
        }
        Err(other) => {
            report.findings.push(whole_file(other.to_string()));
            return;
        }
    };
    if documents.is_empty() {
        let mut finding = whole_file("no Kubernetes objects in this file".to_owned());
        finding.issue.severity = Severity::Warning;
        report.findings.push(finding);
    }
    for document in documents {
        report.documents += 1;
        let decoded = object::decode(&document.value);
        let mut issues = decoded.issues;
        if decoded.object.is_some() {
            let mut warnings = Issues::default();
            support::warn_not_acted_on(&decoded.id.kind, &document.value, &mut warnings);
            issues.extend(warnings);
        }
        let id = (!decoded.id.kind.is_empty() || !decoded.id.name.is_empty()).then(|| decoded.id.clone());
        for issue in issues.into_vec() {
            let line = document.line_of(&issue.path);
            report.findings.push(Finding { file: file.clone(), line, object: id.clone(), issue });
        }
        if let Some(object) = decoded.object {
            report.objects.push(Located { id: decoded.id, object, file: file.clone(), document });
        }
    }
}
