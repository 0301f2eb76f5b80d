//! Reading one node from YAML: its kind (through the registry), the keys every node has
//! (inputs, placement, description, compress), the role check, unknown settings, then the
//! kind's own reader. Also the `transport:` section.

use std::collections::{BTreeMap, BTreeSet};

use super::settings::{COMMON_KEYS, Context, Settings};
use super::yaml::{Key, Node, Pos, Value};
use super::{
    NodeSpec, Placement, Reporter, StreamRef, TransportSpec, did_you_mean, is_name, show,
    unknown_key,
};
use crate::kinds::{self, KINDS, Role};

/// How a node's output is encoded where it crosses the edge -> cloud cut.
#[derive(Clone, Debug, PartialEq)]
pub struct Compression {
    /// Which codec.
    pub mode: CompressMode,
    /// Lossy columns: `(f64 field, absolute error bound)`.
    pub error_bounds: Vec<(String, f64)>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            mode: CompressMode::Auto,
            error_bounds: Vec::new(),
        }
    }
}

/// The `compress` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressMode {
    /// The content-aware codec, smallest encoding per column (the default).
    Auto,
    /// The content-aware codec with lz4 only: faster, a little larger.
    Fast,
    /// Plain Arrow IPC.
    Off,
}

impl CompressMode {
    /// The name in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            CompressMode::Auto => "auto",
            CompressMode::Fast => "fast",
            CompressMode::Off => "off",
        }
    }
}

/// Reads one node. `Err` holds the inputs of a node too broken to be planned (its errors are
/// reported), so that the planner can still check them.
pub(crate) fn build_node(
    r: &mut Reporter,
    ctx: &Context<'_>,
    key: &Key,
    value: &Node,
) -> Result<NodeSpec, Vec<(StreamRef, Pos)>> {
    let id = key.name.as_str();
    if !is_name(id, false) {
        r.error(
            key.pos,
            format!("invalid node id \"{id}\""),
            Some("use lowercase letters, digits and '_'".into()),
        );
    }
    let Value::Map(entries) = &value.value else {
        r.error(
            value.pos,
            format!(
                "node \"{id}\": a node is a map with a `kind`, not {}",
                value.shape()
            ),
            None,
        );
        return Err(Vec::new());
    };
    let mut s = Settings {
        r,
        node: id,
        entries,
        positions: BTreeMap::new(),
        broken: false,
        known: &[],
        prefix: String::new(),
        here: None,
        stray: BTreeSet::new(),
    };

    // kind
    let kind_node = s
        .entries
        .iter()
        .find(|(k, _)| k.name == "kind")
        .map(|(_, v)| v);
    let info = match kind_node {
        None => {
            s.r.error(
                key.pos,
                format!("node \"{id}\": missing required field \"kind\""),
                Some(format!("kinds are: {}", kind_names())),
            );
            None
        }
        Some(k) if k.value == Value::Poisoned => None,
        Some(k) => {
            let name = k.as_scalar().unwrap_or_default();
            match kinds::kind(name) {
                Some(info) => Some(info),
                None => {
                    let msg = format!("node \"{id}\": unknown kind {}", show(k));
                    match did_you_mean(name, KINDS.iter().map(|k| k.name())) {
                        Some(m) => s.r.error(
                            k.pos,
                            format!("{msg}; did you mean \"{m}\"?"),
                            Some(format!("kinds are: {}", kind_names())),
                        ),
                        None => {
                            s.r.error(k.pos, msg, Some(format!("kinds are: {}", kind_names())))
                        }
                    }
                    None
                }
            }
        }
    };

    // inputs
    let has_inputs_key = s.entries.iter().any(|(k, _)| k.name == "inputs");
    let inputs = s.inputs();
    let placement = s.choice("placement", &["edge", "cloud"]).map(|p| {
        if p == "edge" {
            Placement::Edge
        } else {
            Placement::Cloud
        }
    });
    let description = s.string("description");
    let compress = s.compress();
    let Some(info) = info else {
        return Err(inputs);
    };
    s.known = info.settings();

    let role = match info.role() {
        Role::SourceOrSink if has_inputs_key => Role::Sink,
        Role::SourceOrSink => Role::Source,
        other => other,
    };
    let inputs_pos = s.positions.get("inputs").copied().unwrap_or(key.pos);
    match role {
        Role::Source if has_inputs_key => s.r.error(
            inputs_pos,
            format!("node \"{id}\": a {} source takes no inputs", info.name()),
            None,
        ),
        Role::Transform | Role::Sink if inputs.is_empty() && !s.broken => s.r.error(
            inputs_pos,
            format!(
                "node \"{id}\": a {} node needs at least one input",
                info.name()
            ),
            Some("add `inputs: [<node id>]`".into()),
        ),
        _ => {}
    }

    // unknown settings
    for (k, _) in s.entries {
        if COMMON_KEYS.contains(&k.name.as_str()) || info.settings().contains(&k.name.as_str()) {
            continue;
        }
        let valid: Vec<&str> = info.settings().iter().chain(COMMON_KEYS).copied().collect();
        let msg = format!(
            "node \"{id}\": unknown field \"{}\" for kind {}",
            k.name,
            info.name()
        );
        unknown_key(s.r, k, &msg, &valid);
        s.broken = true;
    }

    let errors_before = s.r.len();
    let settings = info.read(&mut s, ctx, role);
    if settings.is_none() && s.r.len() == errors_before && !s.broken {
        // A reader that gives up must say why; never drop a node (and everything downstream
        // of it) without a word.
        s.r.error(
            key.pos,
            format!(
                "node \"{id}\": its {} settings could not be read (a bug in edgeflow: the reader gave no reason)",
                info.name()
            ),
            Some(format!("compare with: {}", info.example())),
        );
    }
    debug_assert!(
        s.stray.is_empty(),
        "kind {} read settings it does not list: {:?}",
        info.name(),
        s.stray
    );
    let Some(settings) = settings.filter(|_| !s.broken) else {
        return Err(inputs);
    };
    Ok(NodeSpec {
        id: id.to_owned(),
        pos: key.pos,
        kind: info.name(),
        inputs,
        placement,
        description,
        compress,
        settings,
        positions: s.positions,
    })
}

fn kind_names() -> String {
    KINDS
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys of the `transport:` section.
pub(crate) const TRANSPORT_KEYS: &[&str] = &[
    "brokers",
    "partitions",
    "idle_timeout",
    "spool_max_bytes",
    "spool_when_full",
];

/// Reads the `transport:` section: how `edgeflow edge` and `edgeflow cloud` reach Kafka.
/// Flags and `EDGEFLOW_*` variables override each setting.
pub(crate) fn build_transport(r: &mut Reporter, value: &Node) -> TransportSpec {
    let Value::Map(entries) = &value.value else {
        r.error(
            value.pos,
            format!("\"transport\" must be a map, not {}", value.shape()),
            Some(format!("keys are: {}", TRANSPORT_KEYS.join(", "))),
        );
        return TransportSpec::default();
    };
    for (k, _) in entries {
        if !TRANSPORT_KEYS.contains(&k.name.as_str()) {
            let msg = format!("\"transport\": unknown key \"{}\"", k.name);
            unknown_key(r, k, &msg, TRANSPORT_KEYS);
        }
    }
    let mut s = Settings {
        r,
        node: "section:transport",
        entries,
        positions: BTreeMap::new(),
        broken: false,
        known: TRANSPORT_KEYS,
        prefix: String::new(),
        here: None,
        stray: BTreeSet::new(),
    };
    let partitions = s.get("partitions").map(|_| s.count("partitions", 1));
    let spool_max_bytes = s
        .get("spool_max_bytes")
        .map(|_| s.u64("spool_max_bytes", 0));
    TransportSpec {
        brokers: s.string("brokers"),
        partitions,
        idle_timeout_ms: s.duration_ms("idle_timeout").map(|(ms, _)| ms),
        spool_max_bytes,
        spool_when_full: s.choice("spool_when_full", &["block", "drop_oldest_summaries"]),
    }
}

impl Settings<'_, '_> {
    /// `compress: auto|fast|off`, or `compress: { codec: ..., error_bounds: { field: e } }`.
    pub(crate) fn compress(&mut self) -> Compression {
        let mut out = Compression::default();
        let Some(v) = self.get("compress") else {
            return out;
        };
        let mode = |s: &mut Self, text: &str, pos: Pos| match text {
            "auto" => Some(CompressMode::Auto),
            "fast" => Some(CompressMode::Fast),
            "off" => Some(CompressMode::Off),
            _ => {
                s.err(
                    pos,
                    "compress",
                    format!("invalid codec \"{text}\""),
                    Some("expected one of: auto, fast, off".into()),
                );
                None
            }
        };
        match &v.value {
            Value::Scalar(text) => {
                if let Some(m) = mode(self, text, v.pos) {
                    out.mode = m;
                }
            }
            Value::Map(entries) => {
                for (k, value) in entries {
                    match k.name.as_str() {
                        "codec" => match value.as_scalar() {
                            Some(text) => {
                                if let Some(m) = mode(self, text, value.pos) {
                                    out.mode = m;
                                }
                            }
                            None => self.err(
                                value.pos,
                                "compress.codec",
                                "expected auto, fast or off",
                                None,
                            ),
                        },
                        "error_bounds" => {
                            let Value::Map(bounds) = &value.value else {
                                self.err(
                                    value.pos,
                                    "compress.error_bounds",
                                    format!(
                                        "expected a map of f64 field -> absolute error, not {}",
                                        value.shape()
                                    ),
                                    None,
                                );
                                continue;
                            };
                            for (field, bound) in bounds {
                                let parsed =
                                    bound.as_scalar().and_then(|t| t.trim().parse::<f64>().ok());
                                match parsed {
                                    Some(e) if e.is_finite() && e > 0.0 => {
                                        self.positions.insert(
                                            format!("compress.error_bounds.{}", field.name),
                                            field.pos,
                                        );
                                        out.error_bounds.push((field.name.clone(), e));
                                    }
                                    _ => self.err(
                                        bound.pos,
                                        "compress.error_bounds",
                                        format!(
                                            "field \"{}\": expected a positive number, got {}",
                                            field.name,
                                            show(bound)
                                        ),
                                        None,
                                    ),
                                }
                            }
                        }
                        other => {
                            let msg = format!(
                                "node \"{}\": field \"compress\": unknown key \"{other}\"",
                                self.node
                            );
                            unknown_key(self.r, k, &msg, &["codec", "error_bounds"]);
                            self.broken = true;
                        }
                    }
                }
            }
            _ => self.err(
                v.pos,
                "compress",
                format!("expected auto, fast, off or a map, not {}", v.shape()),
                None,
            ),
        }
        out
    }
}
