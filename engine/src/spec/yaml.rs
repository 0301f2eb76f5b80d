//! A YAML value tree in which every node keeps its 1-based line and column, built from
//! yaml-rust2's event parser, with `${NAME}` / `${NAME:-default}` interpolation in scalars.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based position in the pipeline file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 lines are 1-based and columns 0-based.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// Any scalar, as text (after interpolation); typing happens later.
    Scalar(String),
    /// A scalar whose interpolation failed (already reported): readers skip it silently.
    Poisoned,
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order. Keys are scalars.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key starts.
    pub pos: Pos,
}

/// A value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub pos: Pos,
}

impl Node {
    /// A short name of the value's shape for messages.
    pub fn shape(&self) -> &'static str {
        match self.value {
            Value::Null | Value::Poisoned => "nothing",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// A problem found while reading YAML.
#[derive(Clone, Debug, PartialEq)]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

#[derive(Default)]
struct Collector {
    events: Vec<(Event, Marker)>,
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.events.push((ev, mark));
    }
}

/// Parses `text` into a tree. A syntax error stops parsing (returned alone); interpolation
/// and duplicate-key problems are collected and returned with the tree.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Node, Vec<YamlError>), YamlError> {
    let mut collector = Collector::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut collector, false).map_err(|e| YamlError {
        pos: Pos::from_marker(e.marker()),
        message: format!("invalid YAML: {}", e.info()),
        hint: None,
    })?;
    let mut builder = Builder {
        events: collector.events,
        next: 0,
        anchors: HashMap::new(),
        errors: Vec::new(),
        env,
    };
    // Skip StreamStart / DocumentStart.
    while let Some((ev, _)) = builder.events.get(builder.next) {
        if matches!(ev, Event::StreamStart | Event::DocumentStart) {
            builder.next += 1;
        } else {
            break;
        }
    }
    let root = match builder.events.get(builder.next) {
        Some((Event::StreamEnd, m)) | Some((Event::DocumentEnd, m)) => Node {
            value: Value::Null,
            pos: Pos::from_marker(m),
        },
        Some(_) => builder.node(),
        None => Node {
            value: Value::Null,
            pos: Pos { line: 1, column: 1 },
        },
    };
    Ok((root, builder.errors))
}

struct Builder<'e> {
    events: Vec<(Event, Marker)>,
    next: usize,
    anchors: HashMap<usize, Node>,
    errors: Vec<YamlError>,
    env: &'e dyn Fn(&str) -> Option<String>,
}

impl Builder<'_> {
    fn node(&mut self) -> Node {
        let Some((event, mark)) = self.events.get(self.next).cloned() else {
            return Node {
                value: Value::Null,
                pos: Pos::default(),
            };
        };
        self.next += 1;
        let pos = Pos::from_marker(&mark);
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    match self.interpolate(&text, pos) {
                        Some(text) => Value::Scalar(text),
                        None => Value::Poisoned,
                    }
                };
                (Node { value, pos }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                while !matches!(self.peek(), Some(Event::SequenceEnd) | None) {
                    items.push(self.node());
                }
                self.next += 1;
                (
                    Node {
                        value: Value::Seq(items),
                        pos,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                // Index of each key in `entries`: a map of n keys is checked for duplicates
                // in O(n), not O(n^2) (a pipeline of 90k nodes took a minute to validate).
                let mut seen: HashMap<String, usize> = HashMap::new();
                while !matches!(self.peek(), Some(Event::MappingEnd) | None) {
                    let key_node = self.node();
                    let value = self.node();
                    let name = match key_node.value {
                        Value::Scalar(s) => s,
                        Value::Poisoned => continue,
                        Value::Null => String::new(),
                        _ => {
                            self.errors.push(YamlError {
                                pos: key_node.pos,
                                message: format!(
                                    "a mapping key must be a scalar, not {}",
                                    key_node.shape()
                                ),
                                hint: None,
                            });
                            continue;
                        }
                    };
                    if let Some((first, _)) = seen.get(&name).map(|&i| &entries[i]) {
                        self.errors.push(YamlError {
                            pos: key_node.pos,
                            message: format!("duplicate key \"{name}\""),
                            hint: Some(format!(
                                "first defined at line {}, column {}",
                                first.pos.line, first.pos.column
                            )),
                        });
                        continue;
                    }
                    seen.insert(name.clone(), entries.len());
                    entries.push((
                        Key {
                            name,
                            pos: key_node.pos,
                        },
                        value,
                    ));
                }
                self.next += 1;
                (
                    Node {
                        value: Value::Map(entries),
                        pos,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let value = self
                    .anchors
                    .get(&id)
                    .map(|n| n.value.clone())
                    .unwrap_or(Value::Null);
                (Node { value, pos }, 0)
            }
            _ => (
                Node {
                    value: Value::Null,
                    pos,
                },
                0,
            ),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        node
    }

    fn peek(&self) -> Option<&Event> {
        self.events.get(self.next).map(|(e, _)| e)
    }

    fn interpolate(&mut self, text: &str, pos: Pos) -> Option<String> {
        match interpolate(text, self.env) {
            Ok(s) => Some(s),
            Err(message) => {
                self.errors.push(YamlError {
                    pos,
                    message,
                    hint: Some(
                        "set it in the environment or give a default: ${NAME:-default}".into(),
                    ),
                });
                None
            }
        }
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` in `text` using `env`. `$$` is a literal `$`.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("unterminated \"${{\" in \"{text}\""));
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable name \"{name}\" in \"{text}\""));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable \"{name}\" is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "RATE" => Some("50/s".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn interpolation_replaces_set_and_defaulted_variables() {
        assert_eq!(interpolate("${RATE}", &env).unwrap(), "50/s");
        assert_eq!(interpolate("a ${NOPE:-7} b", &env).unwrap(), "a 7 b");
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "");
        assert_eq!(
            interpolate("cost $5 and $${RATE}", &env).unwrap(),
            "cost $5 and ${RATE}"
        );
        assert!(
            interpolate("${NOPE}", &env)
                .unwrap_err()
                .contains("\"NOPE\" is not set")
        );
        assert!(interpolate("${RATE", &env).is_err());
    }

    #[test]
    fn positions_are_one_based_for_keys_and_values() {
        let (root, errors) = parse("a: 1\nb:\n  - x\n  - { c: \"q\" }\n", &env).unwrap();
        assert!(errors.is_empty());
        let Value::Map(entries) = root.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, column: 5 });
        let Value::Map(inner) = &items[1].value else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 4, column: 7 });
        assert_eq!(
            inner[0].1.pos,
            Pos {
                line: 4,
                column: 10
            }
        );
        assert_eq!(inner[0].1.value, Value::Scalar("q".into()));
    }

    #[test]
    fn duplicate_keys_and_unset_variables_are_collected() {
        let (_, errors) = parse("a: ${NOPE}\na: 2\nb: ${X}\n", &env).unwrap();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0].pos, Pos { line: 1, column: 4 });
        assert_eq!(errors[1].message, "duplicate key \"a\"");
        assert_eq!(errors[1].pos, Pos { line: 2, column: 1 });
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let err = parse("a: [1, 2\nb: 3\n", &env).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
        assert!(err.pos.line >= 1);
    }

    #[test]
    fn null_forms_and_quoted_null() {
        let (root, _) = parse("a: ~\nb:\nc: 'null'\n", &env).unwrap();
        let Value::Map(e) = root.value else { panic!() };
        assert_eq!(e[0].1.value, Value::Null);
        assert_eq!(e[1].1.value, Value::Null);
        assert_eq!(e[2].1.value, Value::Scalar("null".into()));
    }
}
