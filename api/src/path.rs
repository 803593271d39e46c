//! Field paths such as `spec.http[0].match[1].uri`, the address every validation message carries.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A struct field or a map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A path from the root of an object to one of its fields.
///
/// Displayed the way `kubectl` and the API server name fields: keys joined by `.`, list indices in
/// brackets, and map keys that contain a `.` or `/` quoted in brackets (`labels["app.kubernetes.io/name"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The empty path: the object itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// A path of one key, such as `spec`.
    pub fn of(key: &str) -> Self {
        Self(vec![Segment::Key(key.to_owned())])
    }

    /// This path extended by a field or map key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// The steps of this path.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// This path without its last step; the root stays the root.
    pub fn parent(&self) -> Self {
        let mut parent = self.clone();
        parent.0.pop();
        parent
    }

    /// Parses a dotted path as the API server and kube-cel write it (`spec.http[0].route`).
    pub fn parse(text: &str) -> Self {
        let mut path = Self::root();
        let mut rest = text.trim_start_matches('.');
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').unwrap_or(after.len());
                let inner = &after[..end];
                path = match inner.parse::<usize>() {
                    Ok(index) => path.index(index),
                    Err(_) => path.key(inner.trim_matches(|c| c == '"' || c == '\'')),
                };
                rest = after.get(end + 1..).unwrap_or("");
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                path = path.key(&rest[..end]);
                rest = &rest[end..];
            }
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
        path
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if key.contains(['.', '/', '[', ']', ' ']) || key.is_empty() => {
                    write!(f, "[{key:?}]")?
                }
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_like_the_api_server_names_fields() {
        let path = FieldPath::of("spec").key("http").index(0).key("match").index(2).key("uri");
        assert_eq!(path.to_string(), "spec.http[0].match[2].uri");
        let labels = FieldPath::of("metadata").key("labels").key("app.kubernetes.io/name");
        assert_eq!(labels.to_string(), r#"metadata.labels["app.kubernetes.io/name"]"#);
    }

    #[test]
    fn a_displayed_path_parses_back_to_the_same_path() {
        for text in ["spec.http[0].match[2].uri", r#"metadata.labels["app.kubernetes.io/name"]"#, "spec"] {
            assert_eq!(FieldPath::parse(text).to_string(), text);
        }
    }
}
