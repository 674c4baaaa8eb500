//! A YAML 1.2 (core schema) reader that keeps the line and column of every node.
//!
//! JSON is YAML 1.2, so JSON runbooks go through the same reader and get the same positions
//! (their syntax errors are reported by `serde_json`, whose messages are clearer for JSON).
//! Tags other than the core ones (`!GetAtt`, `!Sub`, `!Ref`: CloudFormation's) are reported with
//! their position; duplicate keys are errors, as YAML says.
//!
//! The tree is bounded while it is read, before anything is copied: at most [`MAX_DEPTH`]
//! levels of nesting, [`MAX_NODES`] nodes once aliases are expanded (each `*alias` counts every
//! node it copies), and [`MAX_ALIAS_BYTES`] bytes of text copied by aliases **(ours)**. A few
//! hundred bytes of nested aliases (a "billion laughs") are refused, not expanded.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

/// The deepest nesting of lists and maps a document may have (a runbook needs a handful of
/// levels; an InputPayload at most `step::MAX_PAYLOAD_DEPTH`).
pub const MAX_DEPTH: usize = 128;

/// The most nodes (scalars, lists and maps) a document may hold once its aliases are expanded.
pub const MAX_NODES: usize = 250_000;

/// The most bytes of text that aliases (`*name`) may copy into a document, in all.
pub const MAX_ALIAS_BYTES: usize = 4 * 1024 * 1024;

/// A position in the source: line and column, both 1-based. Line 0 means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    /// True when the position is known.
    pub fn known(&self) -> bool {
        self.line > 0
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.col)
    }
}

/// A node of the document with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it is.
    pub kind: Kind,
}

/// The kinds of node.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order: key, the key's position, the value.
    Map(Vec<(String, Pos, Node)>),
}

impl Node {
    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// The string of a string node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// What the node is, in words, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number with decimals",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    /// The node as JSON (positions dropped).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => {
                let mut m = Map::new();
                for (k, _, v) in entries {
                    m.insert(k.clone(), v.to_json());
                }
                Value::Object(m)
            }
        }
    }

    /// A node from JSON, every position unknown (used when only serde_json could read it).
    pub fn from_json(v: &Value) -> Node {
        let kind = match v {
            Value::Null => Kind::Null,
            Value::Bool(b) => Kind::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Kind::Int(i),
                None => Kind::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Kind::Str(s.clone()),
            Value::Array(items) => Kind::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(m) => Kind::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Pos::default(), Node::from_json(v)))
                    .collect(),
            ),
        };
        Node {
            pos: Pos::default(),
            kind,
        }
    }
}

/// A problem found while reading the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadProblem {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
    /// True for a tag scriptbox cannot evaluate (a CloudFormation intrinsic function).
    pub unsupported_tag: Option<String>,
}

/// The format of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// Decides the format from the file name and the first non-blank character.
    pub fn detect(file_name: &str, text: &str) -> Format {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            return Format::Json;
        }
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            return Format::Yaml;
        }
        match text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .chars()
            .next()
        {
            Some('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads a document. Returns the tree when the text could be read (possibly with problems
/// such as unsupported tags or duplicate keys), and every problem found.
pub fn read(text: &str, format: Format) -> (Option<Node>, Vec<ReadProblem>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if format == Format::Json {
        let value = match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(e) => {
                return (
                    None,
                    vec![ReadProblem {
                        pos: Pos {
                            line: e.line(),
                            col: e.column(),
                        },
                        message: format!("not valid JSON: {e}"),
                        unsupported_tag: None,
                    }],
                );
            }
        };
        // Positions come from the YAML reader; should it disagree with serde_json on a valid
        // JSON text (it should not), the tree from serde_json is used, without positions.
        let (node, problems, over_bound) = read_yaml(text);
        return match node {
            Some(n) if problems.is_empty() => (Some(n), problems),
            // A bound holds for JSON too: serde_json's tree is not a way around it.
            _ if over_bound => (None, problems),
            _ => (Some(Node::from_json(&value)), Vec::new()),
        };
    }
    let (node, problems, _) = read_yaml(text);
    (node, problems)
}

/// Reads YAML; the flag is true when a bound (depth, values, alias bytes) refused the text.
fn read_yaml(text: &str) -> (Option<Node>, Vec<ReadProblem>, bool) {
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
        nodes: 0,
        bytes: 0,
        alias_bytes: 0,
        over_bound: false,
    };
    match reader.stream() {
        Ok(node) => (node, reader.problems, false),
        Err(p) => {
            let mut problems = vec![p];
            problems.extend(reader.problems);
            (None, problems, reader.over_bound)
        }
    }
}

/// An anchored node with its expanded size, so an alias is measured before it is copied.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

struct Reader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Anchored>,
    problems: Vec<ReadProblem>,
    /// Nodes in the tree so far, aliases expanded.
    nodes: usize,
    /// Bytes of scalar text in the tree so far, aliases expanded.
    bytes: usize,
    /// Bytes of scalar text copied by aliases so far.
    alias_bytes: usize,
    /// Set when a bound refused the text.
    over_bound: bool,
}

fn too_large(pos: Pos, message: String) -> ReadProblem {
    ReadProblem {
        pos,
        message,
        unsupported_tag: None,
    }
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), ReadProblem> {
        match self.parser.next_event() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(ReadProblem {
                pos: Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                message: format!("YAML syntax error: {}", e.info()),
                unsupported_tag: None,
            }),
            None => Err(ReadProblem {
                pos: Pos::default(),
                message: "unexpected end of the document".into(),
                unsupported_tag: None,
            }),
        }
    }

    /// Counts `nodes` more nodes holding `bytes` bytes of text, refusing past [`MAX_NODES`].
    fn grow(&mut self, pos: Pos, nodes: usize, bytes: usize) -> Result<(), ReadProblem> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            self.over_bound = true;
            return Err(too_large(
                pos,
                format!(
                    "the document holds more than {MAX_NODES} values once its aliases are expanded (each *alias counts every value it copies); it is refused before it is expanded"
                ),
            ));
        }
        Ok(())
    }

    /// Keeps an anchored node with the size it added to the tree since `start` (nodes, bytes).
    /// The kept copy counts against the bounds too: anchors nested in anchors would otherwise
    /// copy a large subtree once per level.
    fn anchor(
        &mut self,
        anchor: usize,
        node: &Node,
        start: (usize, usize),
    ) -> Result<(), ReadProblem> {
        if anchor > 0 {
            let (nodes, bytes) = (self.nodes - start.0, self.bytes - start.1);
            self.grow(node.pos, nodes, bytes)?;
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    bytes,
                },
            );
        }
        Ok(())
    }

    fn stream(&mut self) -> Result<Option<Node>, ReadProblem> {
        let mut doc = None;
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(doc),
                Event::DocumentStart(_) => {
                    let (event, span2) = self.next()?;
                    let node = self.node(event, span2, 0)?;
                    if doc.is_some() {
                        return Err(ReadProblem {
                            pos: Pos::of(&span),
                            message: "the file holds several YAML documents (`---`); a runbook is one document".into(),
                            unsupported_tag: None,
                        });
                    }
                    doc = Some(node);
                }
                other => {
                    return Err(ReadProblem {
                        pos: Pos::of(&span),
                        message: format!("unexpected YAML event {other:?}"),
                        unsupported_tag: None,
                    });
                }
            }
        }
    }

    fn check_tag(&mut self, tag: &Option<std::borrow::Cow<'a, Tag>>, pos: Pos) -> Option<String> {
        let tag = tag.as_ref()?;
        if tag.is_yaml_core_schema() {
            return Some(tag.suffix.clone());
        }
        if tag.handle == "!" && tag.suffix.is_empty() {
            // The non-specific tag `!`: a plain string.
            return Some("str".into());
        }
        let shown = format!("{}{}", tag.handle, tag.suffix);
        let cfn = [
            "Ref",
            "GetAtt",
            "Sub",
            "Join",
            "Select",
            "Split",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "FindInMap",
            "ImportValue",
            "GetAZs",
            "Base64",
            "Cidr",
            "Condition",
            "Transform",
        ];
        let what = if tag.handle == "!" && cfn.contains(&tag.suffix.as_str()) {
            format!(
                "CloudFormation tag {shown} is not supported: this is a CloudFormation template fragment, not a runbook; resolve the intrinsic function to a plain value first"
            )
        } else {
            format!("YAML tag {shown} is not supported (only the YAML core schema tags are)")
        };
        self.problems.push(ReadProblem {
            pos,
            message: what,
            unsupported_tag: Some(shown),
        });
        None
    }

    fn node(&mut self, event: Event<'a>, span: Span, depth: usize) -> Result<Node, ReadProblem> {
        let pos = Pos::of(&span);
        if depth > MAX_DEPTH {
            self.over_bound = true;
            return Err(too_large(
                pos,
                format!("the document nests lists and maps more than {MAX_DEPTH} levels deep"),
            ));
        }
        let start = (self.nodes, self.bytes);
        match event {
            Event::Alias(id) => self.alias(id, pos),
            Event::Scalar(value, style, anchor, tag) => {
                self.grow(pos, 1, value.len())?;
                let tag = self.check_tag(&tag, pos);
                let kind = resolve_scalar(&value, style, tag.as_deref()).map_err(|message| {
                    ReadProblem {
                        pos,
                        message: message.to_string(),
                        unsupported_tag: None,
                    }
                })?;
                let node = Node { pos, kind };
                self.anchor(anchor, &node, start)?;
                Ok(node)
            }
            Event::SequenceStart(anchor, tag) => {
                self.grow(pos, 1, 0)?;
                self.check_tag(&tag, pos);
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, span, depth + 1)?);
                }
                let node = Node {
                    pos,
                    kind: Kind::Seq(items),
                };
                self.anchor(anchor, &node, start)?;
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                self.grow(pos, 1, 0)?;
                self.check_tag(&tag, pos);
                let entries = self.map_entries(depth)?;
                let node = Node {
                    pos,
                    kind: Kind::Map(entries),
                };
                self.anchor(anchor, &node, start)?;
                Ok(node)
            }
            other => Err(ReadProblem {
                pos,
                message: format!("unexpected YAML event {other:?}"),
                unsupported_tag: None,
            }),
        }
    }

    /// A copy of an anchored node, bounded before it is made.
    fn alias(&mut self, id: usize, pos: Pos) -> Result<Node, ReadProblem> {
        let Some(a) = self.anchors.get(&id) else {
            return Err(too_large(pos, "alias to an unknown anchor".into()));
        };
        let (nodes, bytes) = (a.nodes, a.bytes);
        // Measured before it is copied: an alias of an alias of ... is refused here.
        self.alias_bytes = self.alias_bytes.saturating_add(bytes);
        if self.alias_bytes > MAX_ALIAS_BYTES {
            self.over_bound = true;
            return Err(too_large(
                pos,
                format!(
                    "aliases (*name) copy more than {MAX_ALIAS_BYTES} bytes of text into the document; it is refused before it is expanded"
                ),
            ));
        }
        self.grow(pos, nodes, bytes)?;
        Ok(self.anchors[&id].node.clone())
    }

    /// A map's entries up to its end; a duplicate key is reported and its later value dropped.
    fn map_entries(&mut self, depth: usize) -> Result<Vec<(String, Pos, Node)>, ReadProblem> {
        let mut entries: Vec<(String, Pos, Node)> = Vec::new();
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let key = self.node(event, span, depth + 1)?;
            let key_text = self.key_text(&key);
            let (event, span) = self.next()?;
            let value = self.node(event, span, depth + 1)?;
            if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == key_text) {
                self.problems.push(ReadProblem {
                    pos: key.pos,
                    message: format!(
                        "duplicate key {key_text:?} (first at {first}); check the indentation"
                    ),
                    unsupported_tag: None,
                });
                continue;
            }
            entries.push((key_text, key.pos, value));
        }
        Ok(entries)
    }

    /// A mapping key as text (a list or a map as a key is reported).
    fn key_text(&mut self, key: &Node) -> String {
        match &key.kind {
            Kind::Str(s) => s.clone(),
            Kind::Null => String::new(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Seq(_) | Kind::Map(_) => {
                self.problems.push(ReadProblem {
                    pos: key.pos,
                    message: "a mapping key must be a plain value, not a list or a map".into(),
                    unsupported_tag: None,
                });
                String::new()
            }
        }
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: only plain scalars are typed; `yes`/`no`/`on`
/// are strings (YAML 1.1's booleans are not); quoted and block scalars are strings.
/// A tagged scalar that is not of its tag's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScalarError {
    /// `!!bool` of something else.
    #[error("!!bool {0:?} is not true or false")]
    NotBool(String),
    /// `!!int` of something else.
    #[error("!!int {0:?} is not an integer")]
    NotInt(String),
    /// `!!float` of something else.
    #[error("!!float {0:?} is not a number")]
    NotFloat(String),
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Kind, ScalarError> {
    match tag {
        Some("str") => return Ok(Kind::Str(text.to_string())),
        Some("null") => return Ok(Kind::Null),
        Some("bool") => {
            return match text {
                "true" | "True" | "TRUE" => Ok(Kind::Bool(true)),
                "false" | "False" | "FALSE" => Ok(Kind::Bool(false)),
                _ => Err(ScalarError::NotBool(text.to_string())),
            };
        }
        Some("int") => {
            return plain_int(text)
                .map(Kind::Int)
                .ok_or_else(|| ScalarError::NotInt(text.to_string()));
        }
        Some("float") => {
            return plain_float(text)
                // An integer written as a float: its decimal text parses to the nearest f64.
                .or_else(|| plain_int(text).and_then(|i| i.to_string().parse::<f64>().ok()))
                .map(Kind::Float)
                .ok_or_else(|| ScalarError::NotFloat(text.to_string()));
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(Kind::Str(text.to_string()));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Kind::Null,
        "true" | "True" | "TRUE" => Kind::Bool(true),
        "false" | "False" | "FALSE" => Kind::Bool(false),
        _ => {
            if let Some(i) = plain_int(text) {
                Kind::Int(i)
            } else if let Some(f) = plain_float(text) {
                Kind::Float(f)
            } else {
                Kind::Str(text.to_string())
            }
        }
    })
}

fn plain_int(text: &str) -> Option<i64> {
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn plain_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let b = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return None;
        }
        i += exp;
    }
    if i != b.len() {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(t: &str) -> Node {
        let (n, p) = read(t, Format::Yaml);
        assert!(p.is_empty(), "{p:?}");
        n.unwrap()
    }

    #[test]
    fn core_schema_scalars() {
        let n = yaml(
            "a: '0.3'\nb: 0.3\nc: yes\nd: true\ne: 12\nf: ~\ng: \"1\"\nh: 0x1f\ni: 1e3\nj: on\nk: |\n  text\n",
        );
        assert_eq!(
            n.to_json(),
            json!({"a": "0.3", "b": 0.3, "c": "yes", "d": true, "e": 12, "f": null, "g": "1",
                   "h": 31, "i": 1000.0, "j": "on", "k": "text\n"})
        );
    }

    #[test]
    fn positions_are_one_based() {
        let n = yaml("top:\n  - name: x\n    action: y\n");
        let step = match &n.get("top").unwrap().kind {
            Kind::Seq(items) => items[0].clone(),
            _ => panic!(),
        };
        assert_eq!(step.get("action").unwrap().pos, Pos { line: 3, col: 13 });
        match &step.kind {
            Kind::Map(e) => assert_eq!(e[1].1, Pos { line: 3, col: 5 }),
            _ => panic!(),
        }
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (n, p) = read("a: b\n  c: d\n", Format::Yaml);
        assert!(n.is_none());
        assert_eq!(p[0].pos.line, 2, "{p:?}");
        assert!(p[0].message.starts_with("YAML syntax error"));
    }

    #[test]
    fn duplicate_keys_and_cloudformation_tags_are_reported() {
        let (n, p) = read("a: 1\nb: !GetAtt Role.Arn\na: 2\n", Format::Yaml);
        assert!(n.is_some());
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].unsupported_tag.as_deref(), Some("!GetAtt"));
        assert_eq!(p[0].pos, Pos { line: 2, col: 4 });
        assert!(p[0].message.contains("CloudFormation tag !GetAtt"));
        assert!(p[1].message.contains("duplicate key \"a\""));
        assert_eq!(p[1].pos.line, 3);
    }

    #[test]
    fn json_goes_through_the_same_reader_and_errors_use_serde_json() {
        let (n, p) = read(
            "{\n  \"a\": [1, \"x\", true],\n  \"b\": {\"c\": null}\n}",
            Format::Json,
        );
        assert!(p.is_empty());
        let n = n.unwrap();
        assert_eq!(n.to_json(), json!({"a": [1, "x", true], "b": {"c": null}}));
        assert_eq!(n.get("b").unwrap().pos.line, 3);
        let (n, p) = read("{\n  \"a\": 1,\n}", Format::Json);
        assert!(n.is_none());
        assert_eq!(p[0].pos.line, 3);
        assert!(p[0].message.starts_with("not valid JSON"));
    }

    #[test]
    fn anchors_and_format_detection() {
        let n = yaml("a: &x {k: v}\nb: *x\n");
        assert_eq!(n.get("b").unwrap().to_json(), json!({"k": "v"}));
        assert_eq!(Format::detect("x.txt", "  {\"a\":1}"), Format::Json);
        assert_eq!(Format::detect("x.JSON", "a: 1"), Format::Json);
        assert_eq!(Format::detect("x", "a: 1"), Format::Yaml);
    }

    /// Seven levels of ten aliases each: 10^7 values from a few hundred bytes.
    fn alias_bomb(levels: usize) -> String {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            t.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        t
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_is_expanded() {
        let text = alias_bomb(7);
        assert!(text.len() < 600, "{}", text.len());
        let began = std::time::Instant::now();
        let (n, p) = read(&text, Format::Yaml);
        assert!(began.elapsed() < std::time::Duration::from_secs(2));
        assert!(n.is_none());
        assert!(
            p[0].message
                .contains("more than 250000 values once its aliases are expanded"),
            "{p:?}"
        );
        assert_eq!(p[0].pos.line, 6, "{p:?}");
        // A few levels are fine (10^4 values).
        let (n, p) = read(&alias_bomb(4), Format::Yaml);
        assert!(p.is_empty() && n.is_some(), "{p:?}");
    }

    #[test]
    fn aliases_of_long_text_are_bounded_by_bytes() {
        let long = "x".repeat(1024 * 1024);
        let text = format!("a: &a '{long}'\nb: [*a, *a, *a, *a, *a]\n");
        let (n, p) = read(&text, Format::Yaml);
        assert!(n.is_none());
        assert!(
            p[0].message
                .contains("aliases (*name) copy more than 4194304 bytes"),
            "{p:?}"
        );
        let text = format!("a: &a '{long}'\nb: [*a, *a, *a]\n");
        assert!(read(&text, Format::Yaml).0.is_some());
    }

    #[test]
    fn nesting_is_bounded_without_overflowing_the_stack() {
        // Block style: saphyr-parser does not limit its depth; the reader does.
        let deep: String = (0..20_000)
            .map(|i| format!("{}- \n", " ".repeat(i)))
            .collect();
        let (n, p) = read(&format!("a:\n{deep}"), Format::Yaml);
        assert!(n.is_none());
        assert!(p[0].message.contains("more than 128 levels deep"), "{p:?}");
        let ok: String = (0..100).map(|i| format!("{}- \n", " ".repeat(i))).collect();
        assert!(read(&format!("a:\n{ok}"), Format::Yaml).0.is_some());
    }

    #[test]
    fn anchors_nested_in_anchors_count_their_copies() {
        // 120 anchored levels around 2500 values: each level's anchor keeps a copy (300,000).
        let mut t = format!("[{}]", vec!["1"; 2500].join(","));
        for i in 0..120 {
            t = format!("{{k: &l{i} {t}}}");
        }
        let (n, p) = read(&format!("a: {t}\n"), Format::Yaml);
        assert!(n.is_none());
        assert!(p[0].message.contains("more than 250000 values"), "{p:?}");
    }

    #[test]
    fn plain_documents_are_bounded_too() {
        let many = format!("[{}]", vec!["1"; MAX_NODES + 1].join(","));
        for format in [Format::Yaml, Format::Json] {
            let (n, p) = read(&many, format);
            assert!(n.is_none());
            assert!(p[0].message.contains("more than 250000 values"), "{p:?}");
        }
    }
}
