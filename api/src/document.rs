//! Multi-document YAML into JSON values that remember the line of every field.
//!
//! Validation works on typed structs and names fields by [`FieldPath`]; this module lets every such
//! path be turned back into the line of the file it came from, so messages read `file:line: ...`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

use crate::{Error, FieldPath};

/// One YAML document: its value and where each of its fields is.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document as JSON (what the API server would receive).
    pub value: Value,
    /// The first line of the document's content (1-based).
    pub line: usize,
    lines: BTreeMap<FieldPath, usize>,
}

impl Document {
    /// The line where `path` is written, or that of its closest ancestor that is.
    pub fn line_of(&self, path: &FieldPath) -> usize {
        let mut at = path.clone();
        loop {
            if let Some(line) = self.lines.get(&at) {
                return *line;
            }
            if at.segments().is_empty() {
                return self.line;
            }
            at = at.parent();
        }
    }
}

/// Parses every document of `text`; empty documents are skipped.
pub fn parse(text: &str) -> Result<Vec<Document>, Error> {
    let nodes: Vec<Spanned<Node>> = serde_saphyr::from_multiple(text).map_err(|err| Error::Yaml {
        line: err.location().map_or(1, |l| l.line().max(1) as usize),
        message: first_line(&err.to_string()),
    })?;
    Ok(nodes
        .into_iter()
        .filter(|node| !matches!(node.value, Node::Null))
        .map(|node| {
            let line = line(&node);
            let mut lines = BTreeMap::new();
            let value = into_value(node, &FieldPath::root(), &mut lines);
            Document { value, line, lines }
        })
        .collect())
}

fn first_line(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("malformed YAML");
    // serde-saphyr prefixes positions it also reports separately; keep the message itself.
    line.trim().trim_start_matches("error: ").to_owned()
}

fn line<T>(spanned: &Spanned<T>) -> usize {
    spanned.referenced.line().max(1) as usize
}

fn into_value(node: Spanned<Node>, path: &FieldPath, lines: &mut BTreeMap<FieldPath, usize>) -> Value {
    lines.entry(path.clone()).or_insert_with(|| line(&node));
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Number(n) => Value::Number(n),
        Node::String(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items.into_iter().enumerate().map(|(i, item)| into_value(item, &path.index(i), lines)).collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let at = path.key(&key.value);
                lines.insert(at.clone(), line(&key));
                let value = into_value(value, &at, lines);
                map.insert(key.value, value);
            }
            Value::Object(map)
        }
    }
}

/// A YAML node with the position of every child.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        // JSON has no NaN or infinity; keep such YAML scalars as the text the user wrote.
        Ok(Number::from_f64(v).map_or_else(|| Node::String(v.to_string()), Node::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value()?;
            entries.push((Spanned::new(key.value.0, key.referenced, key.defined), value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text, whatever scalar type YAML gave it (`80:` is a key "80", as in `portLevelMtls`).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Node::deserialize(deserializer)? {
            Node::String(s) => Ok(KeyText(s)),
            Node::Number(n) => Ok(KeyText(n.to_string())),
            Node::Bool(b) => Ok(KeyText(b.to_string())),
            Node::Null => Ok(KeyText("null".to_owned())),
            Node::Seq(_) | Node::Map(_) => Err(de::Error::custom("mapping keys must be scalars")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = "# comment\napiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n    - port: 80\n      name: http\n---\n---\nkind: Other\nspec:\n  x:\n    80: open\n";

    #[test]
    fn every_document_is_parsed_and_empty_ones_are_skipped() {
        let docs = parse(TWO_DOCS).expect("valid YAML");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["spec"]["ports"][0]["port"], 80);
        assert_eq!(docs[1].value["spec"]["x"]["80"], "open");
    }

    #[test]
    fn each_field_path_maps_to_the_line_it_is_written_on() {
        let docs = parse(TWO_DOCS).expect("valid YAML");
        assert_eq!(docs[0].line, 2);
        assert_eq!(docs[0].line_of(&FieldPath::parse("spec.ports[0].name")), 9);
        assert_eq!(docs[0].line_of(&FieldPath::parse("spec.ports[0]")), 8);
        assert_eq!(docs[0].line_of(&FieldPath::parse("spec.ports[0].missing.deeper")), 8);
        assert_eq!(docs[1].line_of(&FieldPath::parse("spec.x")), 14);
    }

    #[test]
    fn malformed_yaml_is_an_error_with_a_line() {
        let err = parse("a: b\nc: [unclosed\n").expect_err("invalid YAML");
        assert!(matches!(err, Error::Yaml { line, .. } if line >= 2), "{err}");
    }
}
