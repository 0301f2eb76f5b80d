//! The typed setting readers every kind uses ([`Settings`]: scalars, numbers, durations,
//! rates, choices, lists, paths, schemas, aggregate lists), with positioned errors. The
//! per-kind readers live with their kinds (`crate::kinds`); reading a node's common keys is
//! [`super::node`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edgeflow_connectors::file_source::FileFormat;
use edgeflow_operators::infer::AnomalyModel;
use edgeflow_operators::schema::{EventSchema, FieldType};

use super::yaml::{Key, Node, Pos, Value};
use super::{Port, Reporter, StreamRef, did_you_mean, resolve, schema_value};

/// Reads and checks a model file written by `edgeflow train`; the error names the file.
pub fn load_model(path: &Path) -> Result<AnomalyModel, String> {
    let bytes = edgeflow_connectors::model_file::read_model_file(path)
        .map_err(|e| edgeflow_connectors::error::chain(&e))?;
    AnomalyModel::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Default of a source's `max_future`: event time more than an hour ahead of the wall clock
/// is a wrong clock, not the future.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 3_600_000;

/// Keys every node may have.
pub const COMMON_KEYS: &[&str] = &["kind", "inputs", "placement", "description", "compress"];

/// What the node readers need besides the node itself.
pub struct Context<'a> {
    /// The pipeline file's directory.
    pub dir: &'a Path,
    /// Top-level schemas.
    pub schemas: &'a BTreeMap<String, EventSchema>,
}

/// One aggregate function call of a `window` or an `aggregate`: `fn` over a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateCall {
    /// Function name.
    pub func: String,
    /// The field it reads.
    pub field: String,
    /// The output column.
    pub output: String,
}

/// Reads one node's settings, reporting problems as `node "id": field "x": ...`.
pub struct Settings<'a, 'r> {
    /// Where problems go.
    pub(crate) r: &'r mut Reporter,
    /// The node id (or [`SECTION`] and a section name).
    pub(crate) node: &'a str,
    /// The map being read.
    pub(crate) entries: &'a [(Key, Node)],
    /// Positions of the settings read, by path.
    pub(crate) positions: BTreeMap<String, Pos>,
    /// Whether a setting was invalid (the node is then not planned).
    pub(crate) broken: bool,
    /// The kind's settings, once the kind is known.
    pub(crate) known: &'static [&'static str],
    /// Path of the map being read inside the node (`rules[0].drift.`), for messages.
    pub(crate) prefix: String,
    /// Where that nested map is written (missing fields are reported there).
    pub(crate) here: Option<Pos>,
    /// Keys a reader asked for that its kind does not list (a bug the registry test and
    /// every debug build catch).
    pub(crate) stray: BTreeSet<String>,
}

/// Prefix of [`Settings::node`] when the settings are a top-level section, not a node.
pub(crate) const SECTION: &str = "section:";

const DURATION_HINT: &str = "expected a duration like \"500ms\", \"1s\" or \"5m\"";

impl<'a> Settings<'a, '_> {
    /// The value of `name`, if present and not null; records its position. A null value
    /// (`size:`, `size: ~`) is the same as leaving the setting out: an optional setting takes
    /// its default and a required one is reported missing (at the null), never silently
    /// dropped.
    pub(crate) fn get(&mut self, name: &str) -> Option<&'a Node> {
        if !self.known.is_empty() && !self.known.contains(&name) && !COMMON_KEYS.contains(&name) {
            self.stray.insert(name.to_owned());
        }
        let (_, v) = self.entries.iter().find(|(k, _)| k.name == name)?;
        if v.value == Value::Null {
            return None;
        }
        self.positions.insert(name.to_owned(), v.pos);
        match v.value {
            Value::Poisoned => {
                self.broken = true;
                None
            }
            _ => Some(v),
        }
    }

    /// How messages name what is being read: `node "id"`, or a top-level section.
    pub(crate) fn subject(&self) -> String {
        match self.node.strip_prefix(SECTION) {
            Some(section) => format!("\"{section}\""),
            None => format!("node \"{}\"", self.node),
        }
    }

    pub(crate) fn err(
        &mut self,
        pos: Pos,
        field: &str,
        message: impl std::fmt::Display,
        hint: Option<String>,
    ) {
        self.broken = true;
        self.r.error(
            pos,
            format!(
                "{}: field \"{}{field}\": {message}",
                self.subject(),
                self.prefix
            ),
            hint,
        );
    }

    pub(crate) fn missing(&mut self, field: &str, hint: &str) {
        self.broken = true;
        let poisoned = self
            .entries
            .iter()
            .any(|(k, v)| k.name == field && v.value == Value::Poisoned);
        // A misspelt key (`wher:`) is reported as unknown with "did you mean"; saying the
        // field is missing too would be noise.
        let misspelt = self.entries.iter().any(|(k, _)| {
            let name = k.name.as_str();
            !self.known.contains(&name)
                && !COMMON_KEYS.contains(&name)
                && did_you_mean(name, [field]).is_some()
        });
        if poisoned || misspelt {
            return;
        }
        let null = self
            .entries
            .iter()
            .find(|(k, v)| k.name == field && v.value == Value::Null)
            .map(|(_, v)| v.pos);
        if let Some(pos) = null {
            self.r.error(
                pos,
                format!(
                    "{}: required field \"{}{field}\" is empty (null)",
                    self.subject(),
                    self.prefix
                ),
                Some(hint.to_owned()),
            );
            return;
        }
        let pos = self.here.unwrap_or_else(|| {
            self.entries
                .iter()
                .find(|(k, _)| k.name == "kind")
                .map(|(k, _)| k.pos)
                .unwrap_or_default()
        });
        self.broken = true;
        self.r.error(
            pos,
            format!(
                "node \"{}\": missing required field \"{}{field}\"",
                self.node, self.prefix
            ),
            Some(hint.to_owned()),
        );
    }

    /// A scalar's text; reports non-scalars.
    pub(crate) fn scalar(&mut self, name: &str) -> Option<(&'a str, Pos)> {
        let v = self.get(name)?;
        match v.as_scalar() {
            Some(s) => Some((s, v.pos)),
            None => {
                self.err(
                    v.pos,
                    name,
                    format!("expected a scalar, not {}", v.shape()),
                    None,
                );
                None
            }
        }
    }

    pub(crate) fn string(&mut self, name: &str) -> Option<String> {
        self.scalar(name).map(|(s, _)| s.to_owned())
    }

    pub(crate) fn parsed<T: std::str::FromStr>(
        &mut self,
        name: &str,
        what: &str,
    ) -> Option<(T, Pos)> {
        let (text, pos) = self.scalar(name)?;
        match text.trim().parse::<T>() {
            Ok(v) => Some((v, pos)),
            Err(_) => {
                self.err(pos, name, format!("expected {what}, got \"{text}\""), None);
                None
            }
        }
    }

    pub(crate) fn u64(&mut self, name: &str, default: u64) -> u64 {
        self.parsed(name, "a non-negative integer")
            .map_or(default, |(v, _)| v)
    }

    pub(crate) fn count(&mut self, name: &str, default: u32) -> u32 {
        match self.parsed::<u32>(name, "a positive integer") {
            None => default,
            Some((0, pos)) => {
                self.err(pos, name, "must be at least 1, got \"0\"", None);
                default
            }
            Some((v, _)) => v,
        }
    }

    pub(crate) fn f64(&mut self, name: &str) -> Option<f64> {
        let (v, pos) = self.parsed::<f64>(name, "a number")?;
        if !v.is_finite() {
            self.err(
                pos,
                name,
                format!("expected a finite number, got \"{v}\""),
                None,
            );
            return None;
        }
        Some(v)
    }

    pub(crate) fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some((text, pos)) = self.scalar(name) else {
            return default;
        };
        match text {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            _ => {
                self.err(
                    pos,
                    name,
                    format!("expected true or false, got \"{text}\""),
                    None,
                );
                default
            }
        }
    }

    pub(crate) fn choice(&mut self, name: &str, choices: &[&'static str]) -> Option<&'static str> {
        let (text, pos) = self.scalar(name)?;
        if let Some(c) = choices.iter().find(|c| **c == text) {
            return Some(c);
        }
        let hint = format!("expected one of: {}", choices.join(", "));
        match did_you_mean(text, choices.iter().copied()) {
            Some(m) => self.err(
                pos,
                name,
                format!("invalid value \"{text}\"; did you mean \"{m}\"?"),
                Some(hint),
            ),
            None => self.err(pos, name, format!("invalid value \"{text}\""), Some(hint)),
        }
        None
    }

    pub(crate) fn duration_ms(&mut self, name: &str) -> Option<(i64, Pos)> {
        let (text, pos) = self.scalar(name)?;
        match parse_duration_ms(text) {
            Ok(ms) => Some((ms, pos)),
            Err(hint) => {
                self.err(
                    pos,
                    name,
                    format!("invalid duration \"{text}\""),
                    Some(hint),
                );
                None
            }
        }
    }

    pub(crate) fn rate(&mut self, name: &str) -> Option<f64> {
        let (text, pos) = self.scalar(name)?;
        match parse_rate(text) {
            Some(r) => Some(r),
            None => {
                self.err(
                    pos,
                    name,
                    format!("invalid rate \"{text}\""),
                    Some("expected a positive rate like \"100/s\", \"600/m\" or \"0.5\" (per second)".into()),
                );
                None
            }
        }
    }

    /// A list of scalars, each recorded at `name[i]`.
    pub(crate) fn list(&mut self, name: &str) -> Option<Vec<(String, Pos)>> {
        let v = self.get(name)?;
        let Value::Seq(items) = &v.value else {
            self.err(
                v.pos,
                name,
                format!("expected a list, not {}", v.shape()),
                Some(format!("write `{name}: [a, b]`")),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_scalar() {
                Some(s) => {
                    self.positions.insert(format!("{name}[{i}]"), item.pos);
                    out.push((s.to_owned(), item.pos));
                }
                None if item.value == Value::Poisoned => self.broken = true,
                None => self.err(
                    item.pos,
                    name,
                    format!("list items must be scalars, not {}", item.shape()),
                    None,
                ),
            }
        }
        Some(out)
    }

    /// A list of field names (no duplicates).
    pub(crate) fn field_list(&mut self, name: &str) -> Vec<String> {
        let items = self.list(name).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for (s, pos) in items {
            if out.contains(&s) {
                self.err(pos, name, format!("\"{s}\" is listed twice"), None);
            } else {
                out.push(s);
            }
        }
        out
    }

    pub(crate) fn inputs(&mut self) -> Vec<(StreamRef, Pos)> {
        let Some(items) = self.list("inputs") else {
            return Vec::new();
        };
        let mut out: Vec<(StreamRef, Pos)> = Vec::new();
        for (text, pos) in items {
            let stream = match text.split_once('.') {
                None => Some(StreamRef::main(&text)),
                Some((node, "late")) => Some(StreamRef {
                    node: node.to_owned(),
                    port: Port::Late,
                }),
                Some((node, "control")) => Some(StreamRef {
                    node: node.to_owned(),
                    port: Port::Control,
                }),
                Some((_, port)) => {
                    self.err(
                        pos,
                        "inputs",
                        format!("unknown output \"{port}\" in \"{text}\""),
                        Some("an input is `node`, `node.late` (a window's late events) or `node.control` (an insight's control records)".into()),
                    );
                    None
                }
            };
            if let Some(stream) = stream {
                if out.iter().any(|(s, _)| *s == stream) {
                    self.err(pos, "inputs", format!("\"{text}\" is listed twice"), None);
                } else {
                    out.push((stream, pos));
                }
            }
        }
        out
    }

    pub(crate) fn file_format(&mut self, path: &str, formats: &[FileFormat]) -> Option<FileFormat> {
        let names: Vec<&'static str> = formats.iter().map(|f| f.name()).collect();
        if self.get("format").is_some() {
            return self
                .choice("format", &names)
                .and_then(FileFormat::from_name);
        }
        match FileFormat::from_path(Path::new(path)).filter(|f| formats.contains(f)) {
            Some(f) => Some(f),
            None => {
                let pos = self.positions["path"];
                self.err(
                    pos,
                    "path",
                    format!("cannot tell the format of \"{path}\" from its extension"),
                    Some(format!("set `format:` to one of: {}", names.join(", "))),
                );
                None
            }
        }
    }

    pub(crate) fn required_path(&mut self, ctx: &Context<'_>) -> Option<(String, PathBuf)> {
        match self.string("path") {
            Some(p) if !p.is_empty() => {
                let resolved = resolve(ctx.dir, &p);
                Some((p, resolved))
            }
            Some(_) => {
                let pos = self.positions["path"];
                self.err(pos, "path", "must not be empty", None);
                None
            }
            None => {
                self.missing("path", "add `path: <file>`");
                None
            }
        }
    }

    /// The `schema` setting (a schema name or an inline map), which `what` needs.
    pub(crate) fn required_schema(&mut self, ctx: &Context<'_>, what: &str) -> Option<EventSchema> {
        match self.get("schema") {
            Some(node) => {
                let field = format!("node \"{}\": field \"schema\"", self.node);
                let s = schema_value(self.r, node, ctx.schemas, &field);
                if s.is_none() {
                    self.broken = true;
                }
                s
            }
            None => {
                self.missing(
                    "schema",
                    &format!("{what} needs `schema:` (a schema name or an inline map)"),
                );
                None
            }
        }
    }

    /// A source's `max_future` (default one hour): how far ahead of the wall clock an event
    /// time may be before the row is a dead letter.
    pub(crate) fn max_future_ms(&mut self) -> i64 {
        self.duration_ms("max_future")
            .map_or(DEFAULT_MAX_FUTURE_MS, |(ms, _)| ms)
    }

    /// The `schema` and `time_field` (default `ts`, a `timestamp_ms` field) of a source that
    /// reads records (`what`: "a file source", ...).
    pub(crate) fn source_schema(
        &mut self,
        ctx: &Context<'_>,
        what: &str,
    ) -> Option<(EventSchema, String)> {
        let time_field = self.string("time_field").unwrap_or_else(|| "ts".to_owned());
        let schema = self.required_schema(ctx, what);
        let schema = schema?;
        match schema.field_type(&time_field) {
            Some(FieldType::TimestampMs) => {}
            Some(t) => {
                let pos = self
                    .positions
                    .get("time_field")
                    .copied()
                    .unwrap_or(self.positions["schema"]);
                self.err(
                    pos,
                    "time_field",
                    format!("\"{time_field}\" has type {t}, not timestamp_ms"),
                    None,
                );
            }
            None => {
                let pos = self
                    .positions
                    .get("time_field")
                    .copied()
                    .unwrap_or(self.positions["schema"]);
                let hint = match did_you_mean(&time_field, schema.names()) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => format!(
                        "the schema's fields are: {}",
                        schema.names().collect::<Vec<_>>().join(", ")
                    ),
                };
                self.err(
                    pos,
                    "time_field",
                    format!("the schema has no field \"{time_field}\""),
                    Some(hint),
                );
            }
        }
        Some((schema, time_field))
    }

    /// Reports each of `names` that is set, with `why` it does not apply to this node.
    pub(crate) fn reject_settings(&mut self, names: &[&str], why: &str) {
        for &name in names {
            if let Some((k, _)) = self.entries.iter().find(|(k, _)| k.name == name) {
                let pos = k.pos;
                self.err(pos, name, why, None);
            }
        }
    }

    /// The required `aggregates` list: each `fn` (over `value`) or `fn(field)`, `fn` one of
    /// `functions`, no output column twice.
    pub(crate) fn aggregates(
        &mut self,
        value: &str,
        functions: &[&str],
        example: &str,
    ) -> Vec<AggregateCall> {
        let mut aggregates: Vec<AggregateCall> = Vec::new();
        match self.list("aggregates") {
            None if !self.positions.contains_key("aggregates") => {
                self.missing("aggregates", &format!("add {example}"))
            }
            None => {}
            Some(items) if items.is_empty() => {
                let pos = self.positions["aggregates"];
                self.err(
                    pos,
                    "aggregates",
                    "needs at least one aggregate",
                    Some(example.to_owned()),
                );
            }
            Some(items) => {
                for (text, pos) in items {
                    match parse_function(&text, value, functions) {
                        Ok(a) if aggregates.iter().any(|b| b.output == a.output) => self.err(
                            pos,
                            "aggregates",
                            format!(
                                "\"{text}\" is listed twice (output column \"{}\")",
                                a.output
                            ),
                            None,
                        ),
                        Ok(a) => aggregates.push(a),
                        Err((msg, hint)) => self.err(pos, "aggregates", msg, hint),
                    }
                }
            }
        }
        aggregates
    }
}
/// Parses `fn` (over `value`) or `fn(field)`.
/// Parses `fn` (over `value`) or `fn(field)`, `fn` one of `functions`.
pub(crate) fn parse_function(
    text: &str,
    value: &str,
    functions: &[&str],
) -> Result<AggregateCall, (String, Option<String>)> {
    let text = text.trim();
    let (func, field, explicit) = match text.split_once('(') {
        None => (text, value, false),
        Some((f, rest)) => match rest.strip_suffix(')') {
            Some(field) if !field.trim().is_empty() => (f.trim(), field.trim(), true),
            _ => {
                return Err((
                    format!("invalid aggregate \"{text}\""),
                    Some("write `fn` or `fn(field)`, e.g. `max(value)`".into()),
                ));
            }
        },
    };
    if !functions.contains(&func) {
        let hint = Some(format!("functions are: {}", functions.join(", ")));
        return Err(match did_you_mean(func, functions.iter().copied()) {
            Some(m) => (
                format!("unknown aggregate function \"{func}\"; did you mean \"{m}\"?"),
                hint,
            ),
            None => (format!("unknown aggregate function \"{func}\""), hint),
        });
    }
    Ok(AggregateCall {
        func: func.to_owned(),
        field: field.to_owned(),
        output: if explicit {
            format!("{func}_{field}")
        } else {
            func.to_owned()
        },
    })
}

/// Parses `<integer><ms|s|m|h|d>` into milliseconds; the error is a hint.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let factor: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" if !num.is_empty() => {
            return Err(format!(
                "{DURATION_HINT}; a plain number has no unit: write \"{num}ms\" or \"{num}s\""
            ));
        }
        _ => return Err(DURATION_HINT.to_owned()),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| DURATION_HINT.to_owned())
}

/// Parses `<number>/s|/m|/h` or a bare number (per second) into events per second.
pub fn parse_rate(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, per) = match t.split_once('/') {
        None => (t, 1.0),
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((n, "h")) => (n, 3600.0),
        Some(_) => return None,
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some(n / per)
}
