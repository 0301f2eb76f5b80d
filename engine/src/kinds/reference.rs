//! The `reference` kind: a keyed table read from a file, re-read when it changes, that
//! `aggregate` nodes join to their input with `lookup:`. It is not a stream of its own: the
//! aggregates that look it up build its reader on their input's clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeflow_connectors::file_source::FileFormat;
use edgeflow_operators::schema::EventSchema;
use timely::dataflow::Scope;

use super::{NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::{duration, list};
use crate::plan::{Placement, PlanNode, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs};
use crate::spec::did_you_mean;
use crate::spec::settings::{Context, Settings};

/// The `reference` kind.
pub struct Reference;

impl NodeKind for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn settings(&self) -> &'static [&'static str] {
        &["path", "format", "header", "schema", "key", "reload"]
    }

    fn read(&self, s: &mut Settings, ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.reference(ctx)
            .map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn example(&self) -> &'static str {
        "{ kind: reference, path: sites.csv, header: true, schema: { device: string, region: string }, key: [device], reload: 5s }"
    }
}

/// Where a `reference` table comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceSource {
    /// A CSV or JSON-lines file, re-read when it changes.
    File {
        /// The file, resolved against the pipeline file's directory.
        path: PathBuf,
        /// CSV or JSON lines.
        format: FileFormat,
        /// Whether a CSV file starts with a header line.
        header: bool,
    },
}

/// Settings of a `reference`: a keyed table that can change while the pipeline runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceSettings {
    /// Where the rows come from.
    pub source: ReferenceSource,
    /// The rows' fields.
    pub schema: EventSchema,
    /// Fields that identify a row (the join key of a `lookup`); a later row with the same
    /// key replaces an earlier one.
    pub key: Vec<String>,
    /// How often the source is checked for changes, ms.
    pub reload_ms: i64,
}

impl NodeSettings for ReferenceSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Reference
    }

    fn input_file(&self) -> Option<&Path> {
        let ReferenceSource::File { path, .. } = &self.source;
        Some(path)
    }

    fn not_a_stream(&self, id: &str) -> Option<(String, String)> {
        Some((
            "is a reference table, which is not a stream".to_owned(),
            format!("read it from an aggregate with `lookup: {id}`"),
        ))
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Cloud
    }

    fn typed(&self, _cx: &mut TypeCx) -> Option<Typed> {
        let mut typed = Typed::new(self.clone(), None);
        typed.schema = Some(self.schema.clone());
        Some(typed)
    }

    fn render(&self) -> String {
        let r = self;
        let ReferenceSource::File { path, .. } = &r.source;
        format!(
            "path={} key={} reload={}",
            path.display(),
            list(&r.key),
            duration(r.reload_ms)
        )
    }

    // Built by the aggregates that look it up, on their input's clock.
    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        _node: &PlanNode,
        _inputs: Vec<BatchStream<'scope>>,
        _env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        Ok(NodeOutputs::default())
    }
}

impl Settings<'_, '_> {
    fn reference(&mut self, ctx: &Context<'_>) -> Option<ReferenceSettings> {
        let path = self.required_path(ctx);
        let format = path
            .as_ref()
            .and_then(|(p, _)| self.file_format(p, &[FileFormat::Csv, FileFormat::JsonLines]));
        let header = self.bool("header", true);
        let reload_ms = match self.duration_ms("reload") {
            None => 1000,
            Some((0, pos)) => {
                self.err(pos, "reload", "must be longer than 0ms", None);
                1000
            }
            Some((ms, _)) => ms,
        };
        let schema = self.required_schema(ctx, "a reference");
        let key = self.field_list("key");
        let schema = schema?;
        if key.is_empty() && !self.positions.contains_key("key") {
            self.missing("key", "add `key: [device]`: the fields a lookup joins on");
        }
        for (i, k) in key.iter().enumerate() {
            if schema.field_type(k).is_none() {
                let pos = self.positions[&format!("key[{i}]")];
                self.err(
                    pos,
                    "key",
                    format!("the schema has no field \"{k}\""),
                    Some(match did_you_mean(k, schema.names()) {
                        Some(m) => format!("did you mean \"{m}\"?"),
                        None => format!(
                            "fields are: {}",
                            schema.names().collect::<Vec<_>>().join(", ")
                        ),
                    }),
                );
            }
        }
        let (_, path) = path?;
        let format = format?;
        Some(ReferenceSettings {
            source: ReferenceSource::File {
                path,
                format,
                header,
            },
            schema,
            key,
            reload_ms,
        })
    }
}
