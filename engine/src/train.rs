//! `edgeflow train`: fits the `infer` kind's autoencoder on normal readings and writes the
//! model file.
//!
//! Readings come from a CSV, JSON-lines or Parquet file, or from the synthetic fleet with
//! anomalies switched off. They must be in event-time order per key, since windows are cut
//! from consecutive readings of a key. Bad CSV / JSON lines are skipped and counted, as a
//! pipeline's file source would send them to its dead letters.

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::parquet_file::ParquetFile;
use edgeflow_connectors::{FileFormat, FileSource, FileSourceOptions, Generator, GeneratorOptions};
use edgeflow_operators::infer::AnomalyModel;
use edgeflow_operators::infer::train::{TrainConfig, TrainReport, TrainingSet, train};
use edgeflow_operators::schema::{EventSchema, FieldType};

use crate::error::EngineError;

/// Where the normal readings come from.
#[derive(Debug, Clone)]
pub enum TrainingInput {
    /// A CSV or JSON-lines file of this schema, or a Parquet file (its own schema).
    File {
        /// The file.
        path: PathBuf,
        /// The schema of a CSV or JSON-lines file (default: the generator's, without labels).
        schema: Option<EventSchema>,
    },
    /// The synthetic fleet with no anomalies.
    Generator {
        /// Devices (each with the default sensors).
        devices: u32,
        /// Readings in total.
        events: u64,
        /// The generator's seed.
        seed: u64,
    },
}

/// A training run's settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The readings.
    pub input: TrainingInput,
    /// Key fields (default: `device` and `sensor`, those the input has).
    pub key: Vec<String>,
    /// The value field.
    pub value: String,
    /// The event-time field.
    pub time_field: String,
    /// Network and optimizer settings.
    pub config: TrainConfig,
}

/// What a training run produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The trained model.
    pub model: AnomalyModel,
    /// Per-epoch losses and counts.
    pub report: TrainReport,
    /// Readings read.
    pub readings: u64,
    /// Records skipped as malformed (files only).
    pub skipped: u64,
    /// The first skipped record's location and reason.
    pub first_skipped: Option<String>,
    /// Wall time of reading and training, seconds.
    pub seconds: f64,
}

/// Parses `name:type,name:type` (types as in pipeline files).
pub fn parse_schema(text: &str) -> Result<EventSchema, String> {
    let mut fields = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, ty) = part
            .split_once(':')
            .ok_or_else(|| format!("expected name:type, got {part:?}"))?;
        let ty = FieldType::from_name(ty.trim()).ok_or_else(|| {
            let names: Vec<&str> = FieldType::ALL.iter().map(|t| t.name()).collect();
            format!(
                "unknown type {:?}; types are {}",
                ty.trim(),
                names.join(", ")
            )
        })?;
        fields.push((name.trim().to_owned(), ty));
    }
    if fields.is_empty() {
        return Err("the schema has no fields".into());
    }
    Ok(EventSchema::new(fields))
}

/// A source of training batches.
enum Batches {
    File(FileSource),
    Parquet(ParquetFile),
    Generator(Generator),
}

fn user(message: String) -> EngineError {
    EngineError::Operator {
        node: "train".into(),
        source: edgeflow_operators::OperatorError::User(message),
    }
}

fn connector(source: edgeflow_connectors::ConnectorError) -> EngineError {
    EngineError::Connector {
        node: "train".into(),
        source,
    }
}

fn open(input: &TrainingInput) -> Result<(EventSchema, Batches), EngineError> {
    match input {
        TrainingInput::Generator {
            devices,
            events,
            seed,
        } => {
            let opts = GeneratorOptions {
                devices: *devices,
                seed: *seed,
                anomaly_rate: 0.0,
                ..GeneratorOptions::default()
            };
            let schema = Generator::schema(&opts);
            let mut generator = Generator::new(opts, 0, 1).map_err(connector)?;
            generator.set_limit(*events);
            Ok((schema, Batches::Generator(generator)))
        }
        TrainingInput::File { path, schema } => match FileFormat::from_path(path) {
            Some(FileFormat::Parquet) => {
                let file = ParquetFile::open(path, 8192).map_err(connector)?;
                Ok((file.schema().clone(), Batches::Parquet(file)))
            }
            Some(format) => {
                let schema = schema.clone().unwrap_or_else(|| {
                    Generator::schema(&GeneratorOptions {
                        ground_truth: false,
                        ..GeneratorOptions::default()
                    })
                });
                let source = FileSource::open(
                    "train",
                    FileSourceOptions::new(path.clone(), format, schema.clone()),
                )
                .map_err(connector)?;
                Ok((schema, Batches::File(source)))
            }
            None => Err(user(format!(
                "{}: cannot tell the format; name it .csv, .jsonl or .parquet",
                path.display()
            ))),
        },
    }
}

/// Reads the input and trains; see the module docs.
pub fn train_model(opts: &TrainOptions) -> Result<TrainOutcome, EngineError> {
    let started = Instant::now();
    let (schema, mut batches) = open(&opts.input)?;
    let key = if opts.key.is_empty() {
        let key: Vec<String> = ["device", "sensor"]
            .into_iter()
            .filter(|k| schema.field_type(k).is_some())
            .map(str::to_owned)
            .collect();
        if key.is_empty() {
            return Err(user(format!(
                "the input {schema} has no device or sensor field: name the key fields with --key"
            )));
        }
        key
    } else {
        opts.key.clone()
    };
    let mut set = TrainingSet::new(&schema, &key, &opts.value, &opts.time_field, &opts.config)
        .map_err(|source| EngineError::Operator {
            node: "train".into(),
            source,
        })?;
    let mut readings = 0u64;
    let mut skipped = 0u64;
    let mut first_skipped = None;
    loop {
        let batch: Option<RecordBatch> = match &mut batches {
            Batches::Generator(g) => g.next_batch(8192),
            Batches::Parquet(p) => p.next_batch().map_err(connector)?,
            Batches::File(f) => match f.next_batch().map_err(connector)? {
                None => None,
                Some((batch, letters)) => {
                    skipped += letters.len() as u64;
                    if first_skipped.is_none()
                        && let Some(l) = letters.first()
                    {
                        first_skipped = Some(format!("{}: {}", l.location, l.reason));
                    }
                    Some(batch)
                }
            },
        };
        let Some(batch) = batch else { break };
        readings += batch.num_rows() as u64;
        set.push(&batch).map_err(|source| EngineError::Operator {
            node: "train".into(),
            source,
        })?;
    }
    let (model, report) = train(&set, &opts.config).map_err(|source| EngineError::Operator {
        node: "train".into(),
        source,
    })?;
    Ok(TrainOutcome {
        model,
        report,
        readings,
        skipped,
        first_skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the model file (creating its directory); returns its size in bytes.
pub fn write_model(model: &AnomalyModel, path: &Path) -> Result<usize, EngineError> {
    let bytes = model.to_bytes().map_err(|source| EngineError::Operator {
        node: "train".into(),
        source,
    })?;
    let io = |what: &str, source| EngineError::Io {
        what: format!("cannot {what} {}", path.display()),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    std::fs::write(path, &bytes).map_err(|e| io("write", e))?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use edgeflow_connectors::FileSink;

    use super::*;

    fn options(input: TrainingInput) -> TrainOptions {
        let config = TrainConfig {
            epochs: 2,
            ..TrainConfig::default()
        };
        TrainOptions {
            input,
            key: Vec::new(),
            value: "value".into(),
            time_field: "ts".into(),
            config,
        }
    }

    #[test]
    fn the_same_readings_from_parquet_csv_or_the_generator_give_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let (devices, events, seed) = (4, 40_000, 3);
        let from_generator = train_model(&options(TrainingInput::Generator {
            devices,
            events,
            seed,
        }))
        .unwrap();
        assert_eq!(from_generator.readings, events);

        // The same readings written to files by the file sink.
        let gen_opts = GeneratorOptions {
            devices,
            seed,
            anomaly_rate: 0.0,
            ..GeneratorOptions::default()
        };
        let schema = Generator::schema(&gen_opts).to_arrow();
        let mut outcomes = Vec::new();
        for name in ["readings.parquet", "readings.csv"] {
            let path = dir.path().join(name);
            let format = FileFormat::from_path(&path).unwrap();
            let mut sink = FileSink::create(&path, format, schema.clone()).unwrap();
            let mut generator = Generator::new(gen_opts.clone(), 0, 1).unwrap();
            generator.set_limit(events);
            while let Some(batch) = generator.next_batch(5000) {
                sink.write(&batch).unwrap();
            }
            sink.finish().unwrap();
            outcomes
                .push(train_model(&options(TrainingInput::File { path, schema: None })).unwrap());
        }
        let expected = from_generator.model.to_bytes().unwrap();
        for outcome in &outcomes {
            assert_eq!(outcome.readings, events);
            assert_eq!(outcome.report.windows, from_generator.report.windows);
            assert!(outcome.model.to_bytes().unwrap() == expected);
        }
        // 4 devices x 2 sensors x (5000 readings / 32 = 156 windows - 16 warm-up).
        assert_eq!(from_generator.report.windows, 8 * (156 - 16));
    }

    #[test]
    fn schemas_parse_with_clear_errors() {
        let s = parse_schema("ts:timestamp_ms, device:string,value:f64").unwrap();
        assert_eq!(s.names().collect::<Vec<_>>(), ["ts", "device", "value"]);
        assert!(parse_schema("ts").unwrap_err().contains("name:type"));
        assert!(parse_schema("v:float").unwrap_err().contains("types are"));
        assert!(parse_schema("").unwrap_err().contains("no fields"));
        let err = train_model(&options(TrainingInput::File {
            path: PathBuf::from("readings.txt"),
            schema: None,
        }))
        .unwrap_err();
        assert!(
            format!("{err:?}").contains("cannot tell the format"),
            "{err:?}"
        );
    }
}
