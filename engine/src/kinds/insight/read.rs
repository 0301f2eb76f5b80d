//! The settings of the `insight` kind and their reader: its `rules:` (correlated, drift, silence, sql) and the
//! `control:` actions sent to edge nodes when a rule fires. Names of inputs, fields and
//! control targets are checked by the planner, which knows the graph and the schemas.

use std::collections::BTreeMap;

use edgeflow_operators::control::{ControlAction, ModelSource};
use edgeflow_operators::insight::{RuleKind, Severity};

use crate::spec::settings::{Context, Settings};
use crate::spec::yaml::{Node, Pos, Value};
use crate::spec::{Port, StreamRef, did_you_mean, is_name, load_model, resolve, unknown_key};

/// Settings of an `insight` node.
#[derive(Clone, Debug, PartialEq)]
pub struct InsightSettings {
    /// The rules, in file order.
    pub rules: Vec<InsightRule>,
    /// What to send to the edge when a rule fires.
    pub control: Vec<ControlRule>,
}

/// One rule of an insight.
#[derive(Clone, Debug, PartialEq)]
pub struct InsightRule {
    /// Its name (unique in the node).
    pub name: String,
    /// Severity of its incidents.
    pub severity: Severity,
    /// The input stream it reads (none for `sql`; the planner fills it in when the node has
    /// one input and the rule names none).
    pub input: Option<StreamRef>,
    /// The input's event-time field (filled by the planner).
    pub time_field: String,
    /// What it watches.
    pub condition: RuleCondition,
}

/// What a rule watches for.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleCondition {
    /// `devices` or more distinct devices of one `by` group with rows within `within_ms`.
    Correlated {
        /// Group fields (empty: the fleet).
        by: Vec<String>,
        /// The field naming a device.
        device: String,
        /// Distinct devices needed.
        devices: u32,
        /// Tumbling window length, ms.
        within_ms: i64,
    },
    /// A key's value against its own baseline.
    Drift {
        /// Series key (the planner fills in `device` and `sensor`, those the input has).
        key: Vec<String>,
        /// Watched field (the planner fills in `mean`, else `value`).
        value: String,
        /// Event time over which a key's baseline is learned, ms.
        baseline_ms: i64,
        /// Baseline standard deviations that count as drift.
        shift: f64,
        /// Values needed before the baseline is used.
        min_samples: u64,
    },
    /// A key that stops reporting.
    Silence {
        /// Reporter key (the planner fills in `device` when the input has it).
        key: Vec<String>,
        /// Event time without rows that counts as silence, ms.
        after_ms: i64,
    },
    /// An SQL query over the catalog that fires when it returns rows.
    Sql {
        /// The query.
        query: String,
        /// Evaluated each time event time passes a multiple of this, ms.
        every_ms: i64,
        /// The result column naming each row's key (default: the whole row).
        key: Option<String>,
    },
}

impl RuleCondition {
    /// The rule type.
    pub fn kind(&self) -> RuleKind {
        match self {
            RuleCondition::Correlated { .. } => RuleKind::Correlated,
            RuleCondition::Drift { .. } => RuleKind::Drift,
            RuleCondition::Silence { .. } => RuleKind::Silence,
            RuleCondition::Sql { .. } => RuleKind::Sql,
        }
    }
}

/// A control action of an insight: when rule `on` raises an incident, send `action` to edge
/// node `node`.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlRule {
    /// The rule's name.
    pub on: String,
    /// The edge node.
    pub node: String,
    /// What to change.
    pub action: ControlAction,
}

const RULE_KEYS: &[&str] = &["name", "severity", "correlated", "drift", "silence", "sql"];
const CORRELATED_KEYS: &[&str] = &["input", "by", "device", "devices", "within"];
const DRIFT_KEYS: &[&str] = &["input", "key", "value", "baseline", "shift", "min_samples"];
const SILENCE_KEYS: &[&str] = &["input", "key", "after"];
const SQL_KEYS: &[&str] = &["query", "every", "key"];
/// The control actions, by their YAML key.
pub const CONTROL_ACTIONS: &[&str] = &[
    "set_threshold",
    "window_size",
    "sampling",
    "swap_model",
    "enable",
    "disable",
];
const CONTROL_KEYS: &[&str] = &[
    "on",
    "node",
    "set_threshold",
    "window_size",
    "sampling",
    "swap_model",
    "enable",
    "disable",
];

impl<'a> Settings<'a, '_> {
    /// Reads `rules:` and `control:`.
    pub(super) fn insight(&mut self, ctx: &Context<'_>) -> Option<InsightSettings> {
        let rules = match self.get("rules") {
            None => {
                self.missing(
                    "rules",
                    "add `rules:` with a list of rules, e.g. `- name: quiet\n    silence: { after: 30s }`",
                );
                return None;
            }
            Some(node) => self.rules(node),
        };
        let control = match self.get("control") {
            None => Vec::new(),
            Some(node) => self.control(ctx, node, &rules),
        };
        Some(InsightSettings { rules, control })
    }

    /// Runs `read` over the map `node` written at path `path` (`rules[0]`), which may only
    /// hold `known` keys; its positions are kept under `path.`.
    fn nested<T>(
        &mut self,
        node: &'a Node,
        path: &str,
        known: &'static [&'static str],
        read: impl FnOnce(&mut Settings<'a, '_>) -> T,
    ) -> Option<T> {
        self.positions.insert(path.to_owned(), node.pos);
        let Value::Map(entries) = &node.value else {
            self.err(
                node.pos,
                path,
                format!("expected a map, not {}", node.shape()),
                Some(format!("keys are: {}", known.join(", "))),
            );
            return None;
        };
        let mut sub = Settings {
            r: &mut *self.r,
            node: self.node,
            entries,
            positions: BTreeMap::new(),
            broken: false,
            known,
            prefix: format!("{}{path}.", self.prefix),
            here: Some(node.pos),
            stray: std::collections::BTreeSet::new(),
        };
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let msg = format!(
                    "node \"{}\": field \"{}{path}\": unknown key \"{}\"",
                    sub.node, self.prefix, k.name
                );
                unknown_key(sub.r, k, &msg, known);
                sub.broken = true;
            }
        }
        let out = read(&mut sub);
        let (positions, broken) = (sub.positions, sub.broken);
        for (k, pos) in positions {
            self.positions.insert(format!("{path}.{k}"), pos);
        }
        self.broken |= broken;
        Some(out)
    }

    fn rules(&mut self, node: &'a Node) -> Vec<InsightRule> {
        let Value::Seq(items) = &node.value else {
            self.err(
                node.pos,
                "rules",
                format!("expected a list of rules, not {}", node.shape()),
                Some("write `rules:` then one `- name: ...` item per rule".into()),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.err(node.pos, "rules", "needs at least one rule", None);
        }
        let mut out: Vec<InsightRule> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("rules[{i}]");
            let rule = self.nested(item, &path, RULE_KEYS, |s| s.rule()).flatten();
            if let Some(rule) = rule {
                if out.iter().any(|r| r.name == rule.name) {
                    let pos = self.pos_at(&format!("{path}.name"), item.pos);
                    self.err(
                        pos,
                        "rules",
                        format!("rule name \"{}\" is used twice", rule.name),
                        Some("give every rule of a node its own name".into()),
                    );
                } else {
                    out.push(rule);
                }
            }
        }
        out
    }

    /// Reports that the nested map being read lacks its one required choice.
    fn no_choice(&mut self, message: &str, hint: String) {
        self.broken = true;
        let path = self.prefix.trim_end_matches('.');
        self.r.error(
            self.here.unwrap_or_default(),
            format!("node \"{}\": field \"{path}\": {message}", self.node),
            Some(hint),
        );
    }

    fn pos_at(&self, path: &str, fallback: Pos) -> Pos {
        self.positions.get(path).copied().unwrap_or(fallback)
    }

    /// One rule map: `name`, `severity` and one condition.
    fn rule(&mut self) -> Option<InsightRule> {
        let name = match self.scalar("name") {
            None => {
                self.missing("name", "name the rule: `name: site_outbreak`");
                None
            }
            Some((n, pos)) if !is_name(n, false) => {
                self.err(
                    pos,
                    "name",
                    format!("invalid rule name \"{n}\""),
                    Some("use lowercase letters, digits and '_'".into()),
                );
                None
            }
            Some((n, _)) => Some(n.to_owned()),
        };
        let severity = self.choice("severity", Severity::NAMES);
        let present: Vec<(&'static str, &'a Node)> = RuleKind::NAMES
            .iter()
            .filter_map(|k| {
                self.entries
                    .iter()
                    .find(|(key, _)| key.name == *k)
                    .map(|(_, v)| (*k, v))
            })
            .collect();
        let (kind, body) = match present.as_slice() {
            [] => {
                // An unknown (misspelt) key is already reported with "did you mean".
                if !self.broken {
                    self.no_choice(
                        "the rule has no condition",
                        format!(
                            "give it one of: {} (e.g. `silence: {{ after: 30s }}`)",
                            RuleKind::NAMES.join(", ")
                        ),
                    );
                }
                return None;
            }
            [one] => *one,
            [_, (second, node), ..] => {
                self.err(
                    node.pos,
                    second,
                    "a rule has exactly one condition",
                    Some("split it into two rules".into()),
                );
                return None;
            }
        };
        let condition = match kind {
            "correlated" => self.nested(body, kind, CORRELATED_KEYS, |s| s.correlated()),
            "drift" => self.nested(body, kind, DRIFT_KEYS, |s| s.drift()),
            "silence" => self.nested(body, kind, SILENCE_KEYS, |s| s.silence()),
            _ => self.nested(body, kind, SQL_KEYS, |s| s.sql()),
        }
        .flatten();
        let default_severity = if kind == "correlated" {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let (input, condition) = condition?;
        Some(InsightRule {
            name: name?,
            severity: severity
                .and_then(Severity::from_name)
                .unwrap_or(default_severity),
            input,
            time_field: String::new(),
            condition,
        })
    }

    /// The optional `input: node` of a rule body.
    fn rule_input(&mut self) -> Option<StreamRef> {
        let (text, pos) = self.scalar("input")?;
        match text.split_once('.') {
            None => Some(StreamRef::main(text)),
            Some((node, "late")) => Some(StreamRef {
                node: node.to_owned(),
                port: Port::Late,
            }),
            Some(_) => {
                self.err(
                    pos,
                    "input",
                    format!("\"{text}\" is not a stream"),
                    Some("name one of the node's `inputs`".into()),
                );
                None
            }
        }
    }

    fn required_duration(&mut self, name: &str, hint: &str) -> Option<i64> {
        match self.duration_ms(name) {
            Some((ms, pos)) if ms <= 0 => {
                self.err(pos, name, "must be longer than 0ms", None);
                None
            }
            Some((ms, _)) => Some(ms),
            None => {
                if !self.positions.contains_key(name) {
                    self.missing(name, hint);
                }
                None
            }
        }
    }

    fn correlated(&mut self) -> Option<(Option<StreamRef>, RuleCondition)> {
        let input = self.rule_input();
        let by = self.field_list("by");
        let device = self.string("device").unwrap_or_else(|| "device".into());
        let devices = match self.get("devices") {
            Some(_) => Some(self.count("devices", 1)),
            None => {
                self.missing("devices", "add `devices: 3` (distinct devices needed)");
                None
            }
        };
        let within_ms = self.required_duration("within", "add `within: 1m` (the window)");
        Some((
            input,
            RuleCondition::Correlated {
                by,
                device,
                devices: devices?,
                within_ms: within_ms?,
            },
        ))
    }

    fn drift(&mut self) -> Option<(Option<StreamRef>, RuleCondition)> {
        let input = self.rule_input();
        let key = self.field_list("key");
        let value = self.string("value").unwrap_or_default();
        let baseline_ms = self.required_duration(
            "baseline",
            "add `baseline: 10m` (event time over which each key's baseline is learned)",
        );
        let shift = match self.f64("shift") {
            None => 4.0,
            Some(v) if v > 0.0 => v,
            Some(v) => {
                let pos = self.positions["shift"];
                self.err(
                    pos,
                    "shift",
                    format!("must be greater than 0, got {v}"),
                    None,
                );
                v
            }
        };
        let min_samples = self.u64("min_samples", 10);
        Some((
            input,
            RuleCondition::Drift {
                key,
                value,
                baseline_ms: baseline_ms?,
                shift,
                min_samples,
            },
        ))
    }

    fn silence(&mut self) -> Option<(Option<StreamRef>, RuleCondition)> {
        let input = self.rule_input();
        let key = self.field_list("key");
        let after_ms = self.required_duration("after", "add `after: 30s`");
        Some((
            input,
            RuleCondition::Silence {
                key,
                after_ms: after_ms?,
            },
        ))
    }

    fn sql(&mut self) -> Option<(Option<StreamRef>, RuleCondition)> {
        let query = match self.scalar("query") {
            Some((q, _)) if !q.trim().is_empty() => Some(q.to_owned()),
            Some((_, pos)) => {
                self.err(pos, "query", "must not be empty", None);
                None
            }
            None => {
                self.missing(
                    "query",
                    "add `query: \"SELECT ... FROM <table> WHERE ...\"`",
                );
                None
            }
        };
        let every_ms = self.required_duration(
            "every",
            "add `every: 10s` (how often, in event time, the query runs)",
        );
        let key = self.string("key");
        Some((
            None,
            RuleCondition::Sql {
                query: query?,
                every_ms: every_ms?,
                key,
            },
        ))
    }

    fn control(
        &mut self,
        ctx: &Context<'_>,
        node: &'a Node,
        rules: &[InsightRule],
    ) -> Vec<ControlRule> {
        let Value::Seq(items) = &node.value else {
            self.err(
                node.pos,
                "control",
                format!("expected a list of actions, not {}", node.shape()),
                Some("write `control:` then `- { on: <rule>, node: <edge node>, set_threshold: 6.0 }`".into()),
            );
            return Vec::new();
        };
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("control[{i}]");
            let action = self
                .nested(item, &path, CONTROL_KEYS, |s| s.control_action(ctx, &names))
                .flatten();
            out.extend(action);
        }
        out
    }

    fn control_action(&mut self, ctx: &Context<'_>, rules: &[&str]) -> Option<ControlRule> {
        let on = match self.scalar("on") {
            None => {
                self.missing("on", "name the rule that triggers it: `on: <rule name>`");
                None
            }
            Some((on, pos)) if !rules.contains(&on) => {
                let hint = match did_you_mean(on, rules.iter().copied()) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => format!("the node's rules are: {}", rules.join(", ")),
                };
                self.err(pos, "on", format!("no rule is named \"{on}\""), Some(hint));
                None
            }
            Some((on, _)) => Some(on.to_owned()),
        };
        let target = match self.string("node") {
            None => {
                self.missing("node", "name the edge node to change: `node: scored`");
                None
            }
            some => some,
        };
        let present: Vec<(&'static str, Pos)> = CONTROL_ACTIONS
            .iter()
            .filter_map(|a| {
                self.entries
                    .iter()
                    .find(|(k, _)| k.name == *a)
                    .map(|(k, _)| (*a, k.pos))
            })
            .collect();
        let action_name = match present.as_slice() {
            [] => {
                if !self.broken {
                    self.no_choice(
                        "the control item has no action",
                        format!("give it one of: {}", CONTROL_ACTIONS.join(", ")),
                    );
                }
                return None;
            }
            [(one, _)] => *one,
            [_, (second, pos), ..] => {
                self.err(
                    *pos,
                    second,
                    "a control item has exactly one action",
                    Some("write one `- on: ...` item per action".into()),
                );
                return None;
            }
        };
        let action = match action_name {
            "set_threshold" => match self.f64("set_threshold") {
                Some(v) if v > 0.0 => Some(ControlAction::SetThreshold { value: v }),
                Some(v) => {
                    let pos = self.positions["set_threshold"];
                    self.err(
                        pos,
                        "set_threshold",
                        format!("must be greater than 0, got {v}"),
                        None,
                    );
                    None
                }
                None => None,
            },
            "window_size" => match self.duration_ms("window_size") {
                Some((ms, _)) if ms > 0 => Some(ControlAction::SetWindowSize { size_ms: ms }),
                Some((_, pos)) => {
                    self.err(pos, "window_size", "must be longer than 0ms", None);
                    None
                }
                None => None,
            },
            "sampling" => self.get("sampling").map(|_| ControlAction::SetSampling {
                every: self.count("sampling", 1),
            }),
            "swap_model" => match self.scalar("swap_model") {
                Some((text, pos)) => {
                    let path = resolve(ctx.dir, text);
                    match load_model(&path) {
                        Ok(_) => Some(ControlAction::SwapModel {
                            model: ModelSource::Path(path.display().to_string()),
                        }),
                        Err(message) => {
                            self.err(
                                pos,
                                "swap_model",
                                message,
                                Some("train one with `edgeflow train` (see the README)".into()),
                            );
                            None
                        }
                    }
                }
                None => None,
            },
            flag => match self.scalar(flag) {
                Some(("true", _)) => Some(if flag == "enable" {
                    ControlAction::Enable
                } else {
                    ControlAction::Disable
                }),
                Some((text, pos)) => {
                    self.err(
                        pos,
                        flag,
                        format!("expected true, got \"{text}\""),
                        Some(format!("write `{flag}: true`")),
                    );
                    None
                }
                None => None,
            },
        };
        Some(ControlRule {
            on: on?,
            node: target?,
            action: action?,
        })
    }
}
