//! The `generator` kind: synthetic sensor readings (a source), controllable at the edge
//! (`set_sampling`, `enable`, `disable`).

mod build;

use std::sync::Arc;

use edgeflow_operators::schema::{EventSchema, FieldType};
use timely::dataflow::Scope;

use super::{Counted, NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::{duration, list};
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs};
use crate::spec::did_you_mean;
use crate::spec::schema_value;
use crate::spec::settings::{Context, Settings};

/// The `generator` kind.
pub struct Generator;

impl NodeKind for Generator {
    fn name(&self) -> &'static str {
        "generator"
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "seed",
            "devices",
            "sites",
            "sensors",
            "rate_per_device",
            "start",
            "anomaly_rate",
            "anomaly_shapes",
            "ground_truth",
            "disorder",
            "events",
            "drift_sites",
            "drift_rate",
            "schema",
        ]
    }

    fn counted(&self) -> Option<Counted> {
        Some(Counted::SourceEvents)
    }

    fn read(&self, s: &mut Settings, ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.generator(ctx)
            .map(|g| Arc::new(g) as Arc<dyn NodeSettings>)
    }

    fn example(&self) -> &'static str {
        "{ kind: generator, devices: 4, sites: 2, sensors: [vibration], rate_per_device: 10/s, seed: 7, events: 100, drift_sites: [1], drift_rate: 0.5, schema: reading }"
    }
}

/// The anomaly shapes the generator can inject.
pub const ANOMALY_SHAPES: &[&str] = &["spike", "level_shift", "stuck", "drift"];

/// Settings of a `generator` source.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorSettings {
    /// Random seed.
    pub seed: u64,
    /// Number of devices.
    pub devices: u32,
    /// Number of sites devices are spread over.
    pub sites: u32,
    /// Sensor names; each device has each sensor.
    pub sensors: Vec<String>,
    /// Readings per second per device (and sensor).
    pub rate_per_device: f64,
    /// Event time of the first reading, ms since the epoch; `None`: 2026-01-01T00:00:00Z
    /// when running as fast as possible, the wall clock at start with `--realtime`.
    pub start_ms: Option<i64>,
    /// Probability that a reading starts an anomaly.
    pub anomaly_rate: f64,
    /// Which anomaly shapes to inject.
    pub anomaly_shapes: Vec<String>,
    /// Whether to add the `anomaly` ground-truth column.
    pub ground_truth: bool,
    /// Maximum event-time disorder, ms.
    pub disorder_ms: i64,
    /// Stop after this many readings in total (`None`: run until stopped).
    pub events: Option<u64>,
    /// Sites (numbered from 1, as in `site-01`) whose devices drift slowly upward.
    pub drift_sites: Vec<u32>,
    /// How fast they drift, in standard deviations of the noise per minute.
    pub drift_rate: f64,
}

impl GeneratorSettings {
    /// The generator's output schema.
    pub fn schema(&self) -> EventSchema {
        let mut fields = vec![
            ("ts".to_owned(), FieldType::TimestampMs),
            ("device".to_owned(), FieldType::String),
            ("site".to_owned(), FieldType::String),
            ("sensor".to_owned(), FieldType::String),
            ("value".to_owned(), FieldType::F64),
        ];
        if self.ground_truth {
            fields.push(("anomaly".to_owned(), FieldType::String));
        }
        EventSchema::new(fields)
    }
}

impl NodeSettings for GeneratorSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Generator
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Edge
    }

    fn typed(&self, _cx: &mut TypeCx) -> Option<Typed> {
        let output = StreamInfo {
            schema: self.schema(),
            time_field: "ts".to_owned(),
        };
        Some(Typed::new(self.clone(), Some(output)))
    }

    fn control_actions(&self) -> &'static [&'static str] {
        &["set_sampling", "enable", "disable"]
    }

    fn render(&self) -> String {
        let g = self;

        let mut text = format!(
            "seed={} devices={} sites={} sensors={} rate_per_device={}/s start_ms={} anomaly_rate={} anomaly_shapes={} ground_truth={} disorder={} events={}",
            g.seed,
            g.devices,
            g.sites,
            list(&g.sensors),
            g.rate_per_device,
            g.start_ms
                .map_or_else(|| "default".to_string(), |ms| ms.to_string()),
            g.anomaly_rate,
            list(&g.anomaly_shapes),
            g.ground_truth,
            duration(g.disorder_ms),
            g.events
                .map_or_else(|| "unbounded".to_string(), |n| n.to_string()),
        );
        if !g.drift_sites.is_empty() {
            let sites: Vec<String> = g.drift_sites.iter().map(u32::to_string).collect();
            text.push_str(&format!(
                " drift_sites={} drift_rate={}",
                list(&sites),
                g.drift_rate
            ));
        }
        text
    }

    fn build<'scope>(
        &self,
        scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        _inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::generator(scope, node, self, env).map(NodeOutputs::main)
    }
}

impl Settings<'_, '_> {
    fn generator(&mut self, ctx: &Context<'_>) -> Option<GeneratorSettings> {
        let seed = self.u64("seed", 1);
        let devices = self.count("devices", 100);
        let sites = self.count("sites", 10);
        let sensors = match self.list("sensors") {
            None => vec!["vibration".to_owned(), "temperature".to_owned()],
            Some(items) => {
                if items.is_empty() {
                    let pos = self.positions["sensors"];
                    self.err(pos, "sensors", "needs at least one sensor", None);
                }
                items.into_iter().map(|(s, _)| s).collect()
            }
        };
        let rate_per_device = self.rate("rate_per_device").unwrap_or(10.0);
        let start_ms = match self.scalar("start") {
            None => None,
            Some((text, pos)) => match parse_start(text) {
                Some(ms) => Some(ms),
                None => {
                    self.err(
                        pos,
                        "start",
                        format!("invalid start time \"{text}\""),
                        Some("expected RFC 3339 text like \"2026-01-01T00:00:00Z\" or milliseconds since the epoch".into()),
                    );
                    None
                }
            },
        };
        let anomaly_rate = match self.f64("anomaly_rate") {
            None => 0.0005,
            Some(v) if (0.0..=1.0).contains(&v) => v,
            Some(v) => {
                let pos = self.positions["anomaly_rate"];
                self.err(
                    pos,
                    "anomaly_rate",
                    format!("must be between 0 and 1, got {v}"),
                    None,
                );
                0.0
            }
        };
        let anomaly_shapes = match self.list("anomaly_shapes") {
            None => ANOMALY_SHAPES.iter().map(|s| (*s).to_owned()).collect(),
            Some(items) => {
                let mut out = Vec::new();
                for (s, pos) in items {
                    if ANOMALY_SHAPES.contains(&s.as_str()) {
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    } else {
                        let hint = Some(format!("shapes are: {}", ANOMALY_SHAPES.join(", ")));
                        match did_you_mean(&s, ANOMALY_SHAPES.iter().copied()) {
                            Some(m) => self.err(
                                pos,
                                "anomaly_shapes",
                                format!("unknown shape \"{s}\"; did you mean \"{m}\"?"),
                                hint,
                            ),
                            None => self.err(
                                pos,
                                "anomaly_shapes",
                                format!("unknown shape \"{s}\""),
                                hint,
                            ),
                        }
                    }
                }
                out
            }
        };
        let ground_truth = self.bool("ground_truth", false);
        let disorder_ms = self.duration_ms("disorder").map_or(0, |(v, _)| v);
        let events = self.get("events").is_some().then(|| self.u64("events", 0));
        let mut drift_sites = Vec::new();
        for (text, pos) in self.list("drift_sites").unwrap_or_default() {
            match text.trim().parse::<u32>() {
                Ok(site) if (1..=sites).contains(&site) => drift_sites.push(site),
                _ => self.err(
                    pos,
                    "drift_sites",
                    format!("\"{text}\" is not a site number between 1 and {sites}"),
                    Some("sites are numbered from 1, as in `site-01`".into()),
                ),
            }
        }
        let drift_rate = match self.f64("drift_rate") {
            None => 0.1,
            Some(v) if v >= 0.0 => v,
            Some(v) => {
                let pos = self.positions["drift_rate"];
                self.err(
                    pos,
                    "drift_rate",
                    format!("must be at least 0, got {v}"),
                    None,
                );
                0.1
            }
        };
        let settings = GeneratorSettings {
            seed,
            devices,
            sites,
            sensors,
            rate_per_device,
            start_ms,
            anomaly_rate,
            anomaly_shapes,
            ground_truth,
            disorder_ms,
            events,
            drift_sites,
            drift_rate,
        };
        if let Some(node) = self.get("schema") {
            let what = format!("node \"{}\": field \"schema\"", self.node);
            match schema_value(self.r, node, ctx.schemas, &what) {
                Some(s) if s == settings.schema() => {}
                Some(s) => self.err(
                    node.pos,
                    "schema",
                    format!("{s} is not the generator's output schema"),
                    Some(format!("a generator produces {}", settings.schema())),
                ),
                None => self.broken = true,
            }
        }
        Some(settings)
    }
}

/// Parses RFC 3339 text or integer milliseconds.
fn parse_start(text: &str) -> Option<i64> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Some(ms);
    }
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text.trim())
        .ok()
        .map(|ns| ns.div_euclid(1_000_000))
}
