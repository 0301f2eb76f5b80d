//! Building a `generator`: this worker's share of the synthetic fleet, as a timely source
//! holding its capability at the generator's watermark.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::BooleanArray;
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::record_batch::RecordBatch;
use edgeflow_connectors::generator::{AnomalyShape, Generator, GeneratorOptions};
use edgeflow_operators::control::{ControlAction, Sampler};
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::operator::source;

use super::GeneratorSettings;
use crate::error::EngineError;
use crate::plan::PlanNode;
use crate::runtime::batch::{Batch, EventTime};
use crate::runtime::control::{ControlPort, Controllable, event_times, process_controlled};
use crate::runtime::node::{BATCHES_PER_ACTIVATION, BatchStream, BuildEnv, operator_name};

/// In real-time mode, how much event time one batch covers at most.
const REALTIME_TICK: Duration = Duration::from_millis(50);

/// Event time of the first reading when the pipeline does not say: 2026-01-01T00:00:00Z.
const DEFAULT_START_MS: i64 = 1_767_225_600_000;

fn generator_options(
    settings: &GeneratorSettings,
    realtime: bool,
) -> Result<GeneratorOptions, String> {
    let start_ms = settings.start_ms.unwrap_or_else(|| {
        if realtime {
            // Real time means event time is wall-clock time, so latency is measurable.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(DEFAULT_START_MS, |d| d.as_millis() as i64)
        } else {
            DEFAULT_START_MS
        }
    });
    let shapes = settings
        .anomaly_shapes
        .iter()
        .map(|name| {
            AnomalyShape::from_name(name).ok_or_else(|| format!("unknown anomaly shape {name}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GeneratorOptions {
        seed: settings.seed,
        devices: settings.devices,
        sites: settings.sites,
        sensors: settings.sensors.clone(),
        rate_per_device: settings.rate_per_device,
        start_ms,
        anomaly_rate: settings.anomaly_rate,
        anomaly_shapes: shapes,
        ground_truth: settings.ground_truth,
        disorder_ms: settings.disorder_ms,
        drift_sites: settings.drift_sites.iter().map(|s| s - 1).collect(),
        drift_per_minute: settings.drift_rate,
    })
}

/// The `generator` kind: this worker's share of the synthetic fleet.
pub fn generator<'scope>(
    scope: Scope<'scope, EventTime>,
    node: &PlanNode,
    settings: &GeneratorSettings,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let options =
        generator_options(settings, env.options.realtime).map_err(EngineError::Internal)?;
    // This worker's share of the fleet: with `--shard i/n`, the process is edge i of n and
    // its workers split that edge's share again.
    let (shard, shards) = env.options.shard;
    let (share, shares) = (shard * env.peers + env.worker, shards * env.peers);
    let readings_per_second =
        settings.rate_per_device * f64::from(settings.devices) * settings.sensors.len() as f64
            / shares as f64;
    let mut generator =
        Generator::new(options, share, shares).map_err(|source| EngineError::Connector {
            node: node.id.clone(),
            source,
        })?;
    if let Some(events) = env.options.events.or(settings.events) {
        generator.set_limit(events);
    }
    let realtime = env.options.realtime;
    let batch_rows = if realtime {
        ((readings_per_second * REALTIME_TICK.as_secs_f64()).ceil() as usize)
            .clamp(1, env.options.batch_rows)
    } else {
        env.options.batch_rows
    };
    let metrics = env.metrics(node);
    let ctx = env.ctx.clone();
    let mut control = env
        .ctx
        .control
        .port(&node.id, env.worker)
        .map(|port| SampledSource {
            port: Some(port),
            enabled: true,
            sampler: Sampler::default(),
        });
    Ok(source(
        scope,
        &operator_name(node),
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            let started = Instant::now();
            let first_event = generator.next_event_time();
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                if ctx.stopping() {
                    capability = None;
                    if let Some(control) = control.as_mut() {
                        control.input_ended();
                    }
                    return;
                }
                for _ in 0..BATCHES_PER_ACTIVATION {
                    let next = generator.next_event_time();
                    // `i64::MAX`: exhausted, nothing to wait for (`next_batch` ends the source).
                    if realtime && next != i64::MAX {
                        let due = first_event + started.elapsed().as_millis() as i64;
                        let ahead = next - due;
                        if ahead > 0 {
                            activator.activate_after(Duration::from_millis(ahead as u64));
                            return;
                        }
                    }
                    let Some(batch) = generator.next_batch(batch_rows) else {
                        capability = None;
                        if let Some(control) = control.as_mut() {
                            control.input_ended();
                        }
                        return;
                    };
                    let batch = match control.as_mut() {
                        Some(control) => control.filter(&batch),
                        None => Some(batch),
                    };
                    if let Some(batch) = batch {
                        metrics.events_out.inc_by(batch.num_rows() as u64);
                        output.session(&*cap).give(Batch(batch));
                    }
                    let watermark = generator.watermark();
                    if watermark > *cap.time() {
                        cap.downgrade(&watermark);
                    }
                }
                activator.activate();
            }
        },
    ))
}

/// A controllable generator: its readings pass through a sampler (keep one reading in N per
/// series, from `set_sampling`) and stop while it is disabled; the source keeps advancing
/// its watermark.
struct SampledSource {
    port: Option<ControlPort>,
    enabled: bool,
    sampler: Sampler,
}

impl SampledSource {
    /// The rows of a generated batch that are emitted.
    fn filter(&mut self, batch: &RecordBatch) -> Option<RecordBatch> {
        let times = event_times(batch, "ts");
        let sampler = &mut self.sampler;
        let kept = process_controlled(
            &mut self.port,
            &mut self.enabled,
            sampler,
            batch,
            &times,
            |sampler, rows| {
                let mask: BooleanArray = sampler.keep_rows(rows).into_iter().map(Some).collect();
                Ok(Some(filter_record_batch(rows, &mask)?))
            },
        )
        .ok()?;
        let kept: Vec<RecordBatch> = kept.into_iter().filter(|b| b.num_rows() > 0).collect();
        match kept.len() {
            0 => None,
            1 => kept.into_iter().next(),
            _ => concat_batches(&kept[0].schema(), &kept).ok(),
        }
    }

    fn input_ended(&mut self) {
        if let Some(port) = self.port.as_mut() {
            port.input_ended();
        }
    }
}

impl Controllable for Sampler {
    fn apply(
        &mut self,
        action: &ControlAction,
        _applied_at: i64,
        _base_dir: &Path,
    ) -> Result<String, String> {
        let ControlAction::SetSampling { every } = action else {
            return Err(format!("a generator does not take {}", action.name()));
        };
        self.set_every(*every).map_err(|e| e.to_string())?;
        Ok(format!("keeping 1 reading in {every}"))
    }
}
