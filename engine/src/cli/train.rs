//! `edgeflow train`: trains the anomaly autoencoder of `infer` nodes and writes the model file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Normal readings: a .csv, .jsonl or .parquet file, in event-time order per device.
    /// Without it, the synthetic fleet with anomalies switched off.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Schema of a CSV or JSON-lines input, `name:type,...` (default: the generator's
    /// `ts:timestamp_ms,device:string,site:string,sensor:string,value:f64`).
    #[arg(long)]
    schema: Option<String>,
    /// The model file to write (burn record, conventionally `.bpk`).
    #[arg(long, short)]
    out: PathBuf,
    /// Fields that identify a device's signal (default: device and sensor, those present).
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// The numeric field to model.
    #[arg(long, default_value = "value")]
    value: String,
    /// The event-time field.
    #[arg(long, default_value = "ts")]
    time_field: String,
    /// Readings per window (the model's input width).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Width of the hidden layers.
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    /// Width of the bottleneck.
    #[arg(long, default_value_t = 4)]
    latent: usize,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Windows per gradient step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 3e-3)]
    learning_rate: f64,
    /// Seed of the initial weights and the batch order (and of the generator).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Windows per device that only build its baseline before scoring.
    #[arg(long, default_value_t = 16)]
    warmup: u32,
    /// Generator input: number of devices.
    #[arg(long, default_value_t = 50)]
    devices: u32,
    /// Generator input: readings in total.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
}

/// Trains a model as `args` say and prints what it read, the loss and the model written.
pub fn train(args: TrainArgs) -> Result<ExitCode> {
    use edgeflow::train::{TrainOptions, TrainingInput, parse_schema, train_model, write_model};
    use edgeflow_operators::infer::model::ModelShape;
    use edgeflow_operators::infer::train::TrainConfig;

    let input = match args.input {
        Some(path) => TrainingInput::File {
            path,
            schema: args
                .schema
                .as_deref()
                .map(parse_schema)
                .transpose()
                .map_err(|e| anyhow!("--schema: {e}"))?,
        },
        None => TrainingInput::Generator {
            devices: args.devices,
            events: args.events,
            seed: args.seed,
        },
    };
    let options = TrainOptions {
        input,
        key: args.key,
        value: args.value,
        time_field: args.time_field,
        config: TrainConfig {
            shape: ModelShape {
                window: args.window,
                hidden: args.hidden,
                latent: args.latent,
            },
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            seed: args.seed,
            warmup_windows: args.warmup,
            ..TrainConfig::default()
        },
    };
    let outcome = train_model(&options)?;
    let size = write_model(&outcome.model, &args.out)?;
    let report = &outcome.report;
    let calibration = outcome.model.calibration();
    println!(
        "read {} readings ({} skipped as malformed) -> {} windows of {} from {} keys",
        outcome.readings, outcome.skipped, report.windows, options.config.shape.window, report.keys
    );
    if let Some(first) = &outcome.first_skipped {
        println!("first skipped record: {first}");
    }
    println!(
        "loss (mean squared reconstruction error, standardized units) per epoch: {}",
        report
            .epoch_loss
            .iter()
            .map(|l| format!("{l:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "wrote {} ({size} bytes, {} parameters): reference error {:.4}, default threshold {:.3}, {:.1}s",
        args.out.display(),
        outcome.model.parameters(),
        calibration.reference_error,
        calibration.threshold,
        outcome.seconds
    );
    Ok(ExitCode::SUCCESS)
}
