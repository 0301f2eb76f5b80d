//! The `file` kind: without `inputs` a source reading a CSV or JSON-lines file, with them a
//! sink writing CSV, JSON lines or Parquet.

mod build;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeflow_connectors::file_source::FileFormat;
use edgeflow_operators::schema::EventSchema;
use timely::dataflow::Scope;

use super::{Counted, NodeKind, NodeSettings, Role, follow_inputs};
use crate::error::EngineError;
use crate::plan::render::{duration, max_future_note};
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, require_input};
use crate::spec::settings::{Context, Settings};

/// The `file` kind.
pub struct File;

impl NodeKind for File {
    fn name(&self) -> &'static str {
        "file"
    }

    fn role(&self) -> Role {
        Role::SourceOrSink
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "path",
            "format",
            "schema",
            "time_field",
            "header",
            "disorder",
            "max_future",
        ]
    }

    fn counted(&self) -> Option<Counted> {
        Some(Counted::SourceEvents)
    }

    fn read(&self, s: &mut Settings, ctx: &Context, role: Role) -> Option<Arc<dyn NodeSettings>> {
        if role == Role::Source {
            s.file_source(ctx)
                .map(|f| Arc::new(f) as Arc<dyn NodeSettings>)
        } else {
            s.file_sink(ctx)
                .map(|f| Arc::new(f) as Arc<dyn NodeSettings>)
        }
    }

    fn example(&self) -> &'static str {
        "{ kind: file, inputs: [src], path: out.jsonl }"
    }
}

/// Settings of a `file` source.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSourceSettings {
    /// The file, resolved against the pipeline file's directory.
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormat,
    /// Whether a CSV file starts with a header line.
    pub header: bool,
    /// Maximum event-time disorder, ms.
    pub disorder_ms: i64,
    /// How far ahead of the wall clock an event time may be, ms (further: a dead letter).
    pub max_future_ms: i64,
    /// The schema of the file's records.
    pub schema: EventSchema,
    /// The event-time field (a `timestamp_ms` field of `schema`).
    pub time_field: String,
}

/// Settings of a `file` sink.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSinkSettings {
    /// The file, resolved against the pipeline file's directory.
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormat,
}

impl NodeSettings for FileSourceSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &File
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Edge
    }

    fn typed(&self, _cx: &mut TypeCx) -> Option<Typed> {
        let output = StreamInfo {
            schema: self.schema.clone(),
            time_field: self.time_field.clone(),
        };
        Some(Typed::new(self.clone(), Some(output)))
    }

    fn input_file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn render(&self) -> String {
        let f = self;
        format!(
            "path={} format={} header={} time_field={} disorder={}",
            f.path.display(),
            f.format.name(),
            f.header,
            f.time_field,
            duration(f.disorder_ms)
        ) + &max_future_note(f.max_future_ms)
    }

    fn build<'scope>(
        &self,
        scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        _inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::source(scope, node, self, env).map(NodeOutputs::main)
    }
}

impl NodeSettings for FileSinkSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &File
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn default_placement(&self, inputs: &[Placement]) -> Placement {
        follow_inputs(inputs)
    }

    fn typed(&self, _cx: &mut TypeCx) -> Option<Typed> {
        Some(Typed::new(self.clone(), None))
    }

    fn render(&self) -> String {
        format!("path={} format={}", self.path.display(), self.format.name())
    }

    fn output_file(&self) -> Option<(&Path, FileFormat)> {
        Some((&self.path, self.format))
    }

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::sink(require_input(node, inputs)?, node, env);
        Ok(NodeOutputs::default())
    }
}

impl Settings<'_, '_> {
    fn file_source(&mut self, ctx: &Context<'_>) -> Option<FileSourceSettings> {
        let path = self.required_path(ctx);
        let format = path
            .as_ref()
            .and_then(|(p, _)| self.file_format(p, &[FileFormat::Csv, FileFormat::JsonLines]));
        let header_given = self.get("header").is_some();
        let header = self.bool("header", true);
        if header_given && format == Some(FileFormat::JsonLines) {
            let pos = self.positions["header"];
            self.err(pos, "header", "only applies to CSV files", None);
        }
        let disorder_ms = self.duration_ms("disorder").map_or(0, |(v, _)| v);
        let max_future_ms = self.max_future_ms();
        let (schema, time_field) = self.source_schema(ctx, "a file source")?;
        let (_, path) = path?;
        Some(FileSourceSettings {
            path,
            format: format?,
            header,
            disorder_ms,
            max_future_ms,
            schema,
            time_field,
        })
    }

    fn file_sink(&mut self, ctx: &Context<'_>) -> Option<FileSinkSettings> {
        self.reject_settings(
            &["schema", "time_field", "header", "disorder", "max_future"],
            "only applies to a file source (a file node without inputs)",
        );
        let (p, path) = self.required_path(ctx)?;
        let format = self.file_format(&p, &FileFormat::ALL)?;
        Some(FileSinkSettings { path, format })
    }
}
