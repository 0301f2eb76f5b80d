//! Building an `aggregate` on differential dataflow, and the `reference` tables it looks up.
//!
//! An aggregate keeps a view (group key, optional event-time window) -> aggregates that is
//! *maintained*, never recomputed: every input row enters a differential collection as a
//! +1 at the timely time (the watermark) it arrives at; a correction (a row whose `identity`
//! was seen before) also retracts the row it replaces; a change of a reference row retracts
//! and re-adds the joined rows it affects. Differential's `reduce` then updates only the
//! groups whose input changed, and emits the change of the view: the old aggregate row with
//! `diff = -1` and the new one with `diff = +1`, at the time the input changed. A `table`
//! reading it holds the sum of these changes (see `sql::catalog`).
//!
//! Event-time windows are part of the group key (`window_start`), so a late row for a window
//! that is still within `allowed_lateness` simply updates that window's row; a row for a
//! window whose end plus the allowed lateness is at or behind the watermark is counted as
//! late and sent to the dead-letter output.
//!
//! A reference is read (on worker 0) from its file when the dataflow starts, at time
//! `EventTime::MIN`, so every row sees it; afterwards the file is checked every `reload`,
//! and a change enters at the aggregate input's current watermark: the rows it joins with
//! move from their old groups to their new ones in one consistent step. An input row with
//! no reference row keeps the reference fields null (a left join), so nothing is dropped
//! silently.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection as Collection;
use edgeflow_connectors::error::chain;
use edgeflow_connectors::file_source::{FileFormat, FileSource, FileSourceOptions};
use edgeflow_operators::schema::EventSchema;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::AggregateSettings;
use super::rows::{Accum, OrdF64, Row, Value, ViewFn, batch_rows, values_to_array};
use crate::error::EngineError;
use crate::kinds::reference::{ReferenceSettings, ReferenceSource};
use crate::metrics::NodeMetrics;
use crate::plan::PlanNode;
use crate::runtime::RunContext;
use crate::runtime::batch::{Batch, EventTime};
use crate::runtime::exchange::exchange_by_key;
use crate::runtime::node::{
    BatchStream, BuildEnv, NodeOutputs, operator_name, rows_as_dead_letters,
};

/// Buckets per group of the first level of the extremes: a change re-scans one bucket's
/// values and the group's bucket extremes, not the whole group.
const EXTREME_BUCKETS: u64 = 128;

/// Per extreme column, the smallest (`want_max == false`) or largest non-null, non-NaN
/// value of `rows` (each a list of such columns) with a positive multiplicity.
fn fold_extremes(kinds: &[bool], rows: &[(&Row, isize)]) -> Row {
    kinds
        .iter()
        .enumerate()
        .map(|(c, want_max)| {
            let values = rows
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, _)| &r[c])
                .filter(|v| {
                    !matches!(v, Value::Null) && !matches!(v, Value::Float(f) if f.0.is_nan())
                });
            let best = if *want_max {
                values.max()
            } else {
                values.min()
            };
            best.cloned().unwrap_or(Value::Null)
        })
        .collect()
}

/// The view of keyed parts: the adding-up aggregates as an [`Accum`] per group
/// (`count_total` over the parts' accumulators, whose differences differential sums), the
/// extremes (min, max, the latest event time) by a two-level reduce over hash buckets of the
/// parts, joined per group.
fn maintain_view<'scope>(
    keyed: Collection<'scope, EventTime, (Row, Part)>,
    layout: &Layout,
    node: &str,
) -> Collection<'scope, EventTime, (Row, Row)> {
    use differential_dataflow::hashable::Hashable;
    use differential_dataflow::operators::CountTotal;

    let aggregates = layout.aggregates.clone();
    let n = aggregates.len();
    let contributions = keyed
        .clone()
        .explode(|(key, part)| std::iter::once((key, part.accum)));
    let distinct_aggregates: Vec<usize> = aggregates
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, ViewFn::CountDistinct))
        .map(|(i, _)| i)
        .collect();
    let contributions = if distinct_aggregates.is_empty() {
        contributions
    } else {
        let distinct = keyed
            .clone()
            .flat_map(move |(key, part)| {
                let mut values = Vec::new();
                for (slot, i) in distinct_aggregates.iter().enumerate() {
                    for v in &part.distinct[slot] {
                        values.push((key.clone(), *i, v.clone()));
                    }
                }
                values
            })
            .distinct()
            .explode(move |(key, i, _value)| std::iter::once((key, Accum::distinct(n, i))));
        contributions.concat(distinct)
    };
    let totals = contributions.count_total();

    let kinds: Vec<bool> = layout.extremes().iter().map(|(_, max)| *max).collect();
    let (first, second) = (kinds.clone(), kinds);
    let extremes = keyed
        .map(|(key, part)| {
            let bucket = part.extremes.hashed() % EXTREME_BUCKETS;
            ((key, bucket), part.extremes)
        })
        .reduce_named(&format!("extremes[{node}]"), move |_key, rows, output| {
            output.push((fold_extremes(&first, rows), 1isize));
        })
        .map(|((key, _bucket), values)| (key, values))
        .reduce_named(&format!("extremes[{node}]"), move |_key, rows, output| {
            output.push((fold_extremes(&second, rows), 1isize));
        });

    totals.join_map(extremes, move |key, accum, extremes| {
        let mut extremes = extremes.iter();
        let mut values: Row = aggregates
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let count = accum.counts[i];
                match f {
                    ViewFn::Count | ViewFn::CountDistinct => Value::Int(count),
                    _ if count == 0 && f.is_abelian() => Value::Null,
                    ViewFn::Sum { integer: true } => Value::Int(accum.ints[i]),
                    ViewFn::Sum { integer: false } => Value::Float(accum.sums[i]),
                    ViewFn::Mean => Value::Float(OrdF64(accum.sums[i].0 / count as f64)),
                    ViewFn::Min | ViewFn::Max => extremes.next().cloned().unwrap_or(Value::Null),
                }
            })
            .collect();
        values.push(extremes.next().cloned().unwrap_or(Value::Null));
        (key.clone(), values)
    })
}

/// Where every part of an aggregate's parts comes from.
struct Layout {
    /// Input fields of a part's row, in order: the lookup's key, the input's group fields,
    /// then the time field (whose slot holds the window start, or null for running totals).
    row_fields: Vec<String>,
    /// Reference fields appended to a part's row after a lookup (its non-key fields).
    reference_fields: Vec<String>,
    /// Positions of the group key fields in the joined row.
    group: Vec<usize>,
    /// Position of the time slot (the window start) in the row.
    time: usize,
    /// Input fields the aggregates read, one per aggregate, then the time field.
    value_fields: Vec<String>,
    /// The aggregate functions, in output order.
    aggregates: Vec<ViewFn>,
    /// Number of lookup key fields (the first fields of a row).
    lookup_key: usize,
}

impl Layout {
    fn new(
        settings: &AggregateSettings,
        input: &EventSchema,
        reference: Option<&ReferenceSettings>,
    ) -> Result<Layout, String> {
        let mut row_fields: Vec<String> = Vec::new();
        let add = |name: &str, fields: &mut Vec<String>| {
            if !fields.iter().any(|f| f == name) {
                fields.push(name.to_owned());
            }
        };
        let reference_fields: Vec<String> = reference
            .map(|r| {
                r.schema
                    .names()
                    .filter(|n| !r.key.iter().any(|k| k == n))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(r) = reference {
            for k in &r.key {
                add(k, &mut row_fields);
            }
        }
        for name in &settings.key {
            if input.field_type(name).is_some() && *name != settings.time_field {
                add(name, &mut row_fields);
            }
        }
        let time = row_fields.len();
        row_fields.push(settings.time_field.clone());
        let position = |name: &str| {
            row_fields
                .iter()
                .chain(&reference_fields)
                .position(|f| f == name)
                .ok_or_else(|| format!("field {name} is neither in the input nor the lookup"))
        };
        let aggregates = settings
            .aggregates
            .iter()
            .map(|a| {
                let input_type = input
                    .field_type(&a.field)
                    .ok_or_else(|| format!("aggregate field {} is not an input field", a.field))?;
                ViewFn::parse(&a.func, input_type)
                    .ok_or_else(|| format!("unknown aggregate function {}", a.func))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut value_fields: Vec<String> = settings
            .aggregates
            .iter()
            .map(|a| a.field.clone())
            .collect();
        value_fields.push(settings.time_field.clone());
        Ok(Layout {
            group: settings
                .key
                .iter()
                .map(|k| position(k))
                .collect::<Result<_, _>>()?,
            time,
            value_fields,
            aggregates,
            lookup_key: reference.map_or(0, |r| r.key.len()),
            row_fields,
            reference_fields,
        })
    }

    /// Per extreme column of a part: whether it keeps the largest value (max, the latest
    /// event time) rather than the smallest; with, for each, its index in the values.
    fn extremes(&self) -> Vec<(usize, bool)> {
        let mut columns: Vec<(usize, bool)> = self
            .aggregates
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.is_abelian())
            .map(|(i, f)| (i, matches!(f, ViewFn::Max)))
            .collect();
        columns.push((self.aggregates.len(), true));
        columns
    }
}

/// Some input rows of one group, summarized: the unit the view is maintained in. A row
/// with an `identity` is a part of its own (it may be retracted exactly); rows without one
/// are folded per batch into one part per (lookup key, group, window), which is what keeps
/// the differential arrangements small.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Part {
    /// The fields of [`Layout::row_fields`] (then, after a lookup, the reference's).
    row: Row,
    /// The adding-up aggregates of the rows.
    accum: Accum,
    /// Per extreme column, the rows' extreme value.
    extremes: Row,
    /// Per `count_distinct` aggregate, the rows' distinct non-null values, sorted.
    distinct: Vec<Row>,
}

impl Part {
    fn of_row(row: Row, values: &Row, aggregates: &[ViewFn], extremes: &[(usize, bool)]) -> Self {
        Part {
            row,
            accum: Accum::of_values(values, aggregates),
            extremes: extremes.iter().map(|(i, _)| values[*i].clone()).collect(),
            distinct: aggregates
                .iter()
                .enumerate()
                .filter(|(_, f)| matches!(f, ViewFn::CountDistinct))
                .map(|(i, _)| match &values[i] {
                    Value::Null => Vec::new(),
                    v => vec![v.clone()],
                })
                .collect(),
        }
    }

    /// Adds the rows of `other` (same row fields).
    fn merge(&mut self, other: Part, want_max: &[bool]) {
        use differential_dataflow::difference::Semigroup;
        self.accum.plus_equals(&other.accum);
        self.extremes = fold_extremes(want_max, &[(&self.extremes, 1), (&other.extremes, 1)]);
        for (mine, theirs) in self.distinct.iter_mut().zip(other.distinct) {
            mine.extend(theirs);
            mine.sort_unstable();
            mine.dedup();
        }
    }
}

/// Builds an aggregate node: its output is the changelog of the view.
pub fn aggregate<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &AggregateSettings,
    env: &BuildEnv,
) -> Result<NodeOutputs<'scope>, EngineError> {
    let internal = |m: String| EngineError::Internal(format!("node {}: {m}", node.id));
    let input = env.input_schema(node)?;
    let reference = match &settings.lookup {
        None => None,
        Some(id) => match env
            .plan
            .node(id)
            .map(|n| (n, n.settings_as::<ReferenceSettings>()))
        {
            Some((n, Some(r))) => Some((n, r)),
            _ => return Err(internal(format!("lookup {id} is not a reference node"))),
        },
    };
    let layout = Layout::new(settings, &input, reference.map(|(_, r)| r)).map_err(internal)?;
    let metrics = env.metrics(node);

    let references = reference.map(|(ref_node, ref_settings)| {
        reference_collection(stream.clone(), ref_node, ref_settings, env)
    });
    let parts = input_parts(
        stream,
        node,
        settings,
        &input,
        &layout,
        metrics.clone(),
        env,
    );
    let parts: Collection<'scope, EventTime, Part> = match references {
        None => parts,
        Some(references) => {
            let key_len = layout.lookup_key;
            let padding = layout.reference_fields.len();
            let keyed = parts.map(move |part| (part.row[..key_len].to_vec(), part));
            let matched = keyed
                .clone()
                .join_map(references.clone(), |_key, part, rest| {
                    let mut wide = part.clone();
                    wide.row.extend(rest.iter().cloned());
                    wide
                });
            let unmatched =
                keyed
                    .antijoin(references.map(|(key, _)| key))
                    .map(move |(_key, mut part)| {
                        part.row.extend(std::iter::repeat_n(Value::Null, padding));
                        part
                    });
            matched.concat(unmatched)
        }
    };
    let group = layout.group.clone();
    let time = layout.time;
    let windowed = settings.size_ms.is_some();
    let keyed = parts.map(move |part| {
        let mut key: Row = group.iter().map(|&i| part.row[i].clone()).collect();
        if windowed {
            key.push(part.row[time].clone());
        }
        (key, part)
    });
    let view = maintain_view(keyed, &layout, &node.id);
    Ok(NodeOutputs {
        main: Some(changes_to_batches(view, node, settings.size_ms, metrics)),
        late: None,
        control: None,
    })
}

/// Input rows as a collection of parts, each +1 at the time its batch arrives: without an
/// `identity`, a batch's rows folded per (lookup key, group, window); with one, a part per
/// row, and a row whose identity was seen before also retracts the part it replaces. Rows of
/// windows already closed (beyond the allowed lateness) and rows without an event time go to
/// the dead-letter output.
fn input_parts<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &AggregateSettings,
    input: &EventSchema,
    layout: &Layout,
    metrics: NodeMetrics,
    env: &BuildEnv,
) -> Collection<'scope, EventTime, Part> {
    let keyed = if settings.identity.is_empty() {
        stream
    } else {
        exchange_by_key(stream, &settings.identity, &node.id, env)
    };
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    let input = input.clone();
    let row_fields = layout.row_fields.clone();
    let value_fields = layout.value_fields.clone();
    let aggregates = layout.aggregates.clone();
    let extremes = layout.extremes();
    let want_max: Vec<bool> = extremes.iter().map(|(_, max)| *max).collect();
    let identity = settings.identity.clone();
    let time_slot = layout.time;
    let time_value = layout.aggregates.len();
    let window = settings.size_ms.map(|s| (s, settings.allowed_lateness_ms));
    // Identity -> (the part it stands for, the end of its window plus the allowed lateness).
    let mut latest: HashMap<Row, (Part, EventTime)> = HashMap::new();
    let mut last_frontier = EventTime::MIN;
    keyed
        .unary_frontier::<CapacityContainerBuilder<Vec<(Part, EventTime, isize)>>, _, _, _>(
            Pipeline,
            &format!("rows[{}]", node.id),
            move |_cap, _info| {
                move |(input_handle, frontier), output| {
                    input_handle.for_each(|cap, data| {
                        let now = cap.least().copied().unwrap_or(EventTime::MIN);
                        let mut session = output.session(&cap);
                        for batch in data.drain(..) {
                            metrics.batches_in.inc();
                            metrics.events_in.inc_by(batch.num_rows() as u64);
                            let read = batch_rows(&batch, &input, &row_fields).and_then(|rows| {
                                Ok((
                                    rows,
                                    batch_rows(&batch, &input, &value_fields)?,
                                    batch_rows(&batch, &input, &identity)?,
                                ))
                            });
                            let (rows, values, ids) = match read {
                                Ok(read) => read,
                                Err(e) => {
                                    metrics.errors.inc();
                                    ctx.dead_letter(
                                        &metrics,
                                        &rows_as_dead_letters(&node_id, &batch, &e),
                                    );
                                    continue;
                                }
                            };
                            let mut rejected: Vec<(u32, &str)> = Vec::new();
                            let mut folded: HashMap<Row, Part> = HashMap::new();
                            for (i, ((mut row, values), id)) in
                                rows.into_iter().zip(values).zip(ids).enumerate()
                            {
                                let Value::Time(t) = values[time_value] else {
                                    rejected.push((i as u32, "no event time"));
                                    continue;
                                };
                                let closes = match window {
                                    Some((size, lateness)) => {
                                        let start = window_start(t, size);
                                        row[time_slot] = Value::Time(start);
                                        start.saturating_add(size).saturating_add(lateness)
                                    }
                                    None => {
                                        row[time_slot] = Value::Null;
                                        EventTime::MAX
                                    }
                                };
                                if closes <= now {
                                    metrics.late_events.inc();
                                    rejected.push((i as u32, LATE_ROW));
                                    continue;
                                }
                                let part = Part::of_row(row, &values, &aggregates, &extremes);
                                if identity.is_empty() {
                                    match folded.get_mut(&part.row) {
                                        Some(existing) => existing.merge(part, &want_max),
                                        None => {
                                            folded.insert(part.row.clone(), part);
                                        }
                                    }
                                    continue;
                                }
                                if let Some((old, _)) = latest.insert(id, (part.clone(), closes)) {
                                    session.give((old, now, -1));
                                }
                                session.give((part, now, 1));
                            }
                            for part in folded.into_values() {
                                session.give((part, now, 1));
                            }
                            dead_letter_rows(&ctx, &metrics, &node_id, &batch, &rejected);
                        }
                    });
                    let frontier = frontier
                        .frontier()
                        .first()
                        .copied()
                        .unwrap_or(EventTime::MAX);
                    if frontier > last_frontier {
                        last_frontier = frontier;
                        metrics.watermark.set(frontier);
                        // A correction for these could only be late now.
                        latest.retain(|_, (_, closes)| *closes > frontier);
                    }
                }
            },
        )
        .as_collection()
}

/// Why a row of a closed window is a dead letter.
const LATE_ROW: &str =
    "late row: its aggregate window had closed (see the aggregate's allowed_lateness)";

fn dead_letter_rows(
    ctx: &RunContext,
    metrics: &NodeMetrics,
    node: &str,
    batch: &RecordBatch,
    rejected: &[(u32, &str)],
) {
    if rejected.is_empty() {
        return;
    }
    let mut by_reason: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (row, reason) in rejected {
        by_reason.entry(reason).or_default().push(*row);
    }
    for (reason, rows) in by_reason {
        let indices = arrow::array::UInt32Array::from(rows);
        match arrow::compute::take_record_batch(batch, &indices) {
            Ok(rows) => ctx.dead_letter(metrics, &rows_as_dead_letters(node, &rows, reason)),
            Err(e) => tracing::error!(node, error = %e, "cannot select dead-letter rows"),
        }
    }
}

/// The start of the `size`-long event-time window holding `t`: the multiple of `size` at or
/// before it, saturated at `i64::MIN` when that multiple is below it (an event time near
/// `i64::MIN` written by a hostile or broken producer must not overflow).
fn window_start(t: i64, size: i64) -> i64 {
    let start = i128::from(t).div_euclid(i128::from(size)) * i128::from(size);
    i64::try_from(start).unwrap_or(i64::MIN)
}

/// The view's changes as batches of the node's output schema, each at its own time.
fn changes_to_batches<'scope>(
    view: Collection<'scope, EventTime, (Row, Row)>,
    node: &PlanNode,
    size_ms: Option<i64>,
    metrics: NodeMetrics,
) -> BatchStream<'scope> {
    let schema = node.schema.clone();
    let arrow_schema = schema.to_arrow();
    let node_id = node.id.clone();
    view.inner
        .unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
            Pipeline,
            &operator_name(node),
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut by_time: BTreeMap<EventTime, Vec<(Row, isize)>> = BTreeMap::new();
                        for ((key, values), time, diff) in data.drain(..) {
                            let mut row = key;
                            if let Some(size) = size_ms
                                && let Some(Value::Time(start)) = row.last()
                            {
                                let end = start.saturating_add(size);
                                row.push(Value::Time(end));
                            }
                            row.extend(values);
                            by_time.entry(time).or_default().push((row, diff));
                        }
                        for (time, changes) in by_time {
                            let mut columns: Vec<ArrayRef> = schema
                                .fields()
                                .iter()
                                .take(schema.fields().len() - 1)
                                .enumerate()
                                .map(|(i, (_, t))| {
                                    values_to_array(changes.iter().map(|(r, _)| &r[i]), *t)
                                })
                                .collect();
                            columns.push(Arc::new(Int64Array::from_iter_values(
                                changes.iter().map(|(_, d)| *d as i64),
                            )));
                            match RecordBatch::try_new(arrow_schema.clone(), columns) {
                                Ok(batch) => {
                                    metrics.events_out.inc_by(batch.num_rows() as u64);
                                    output.session(&cap.delayed(&time, 0)).give(Batch(batch));
                                }
                                Err(e) => {
                                    metrics.errors.inc();
                                    tracing::error!(node = %node_id, error = %e, "cannot build the view's changes");
                                }
                            }
                        }
                    });
                }
            },
        )
}

/// A reference table as a collection of (key, other fields), read on worker 0 and re-read
/// when its file changes; changes enter at the current frontier of `clock`.
fn reference_collection<'scope>(
    clock: BatchStream<'scope>,
    node: &PlanNode,
    settings: &ReferenceSettings,
    env: &BuildEnv,
) -> Collection<'scope, EventTime, (Row, Row)> {
    let metrics = env.metrics(node);
    let ctx = env.ctx.clone();
    let reads = env.worker == 0;
    let mut reader = ReferenceReader::new(node, settings);
    let reload = Duration::from_millis(settings.reload_ms.max(1) as u64);
    let scope = clock.scope();
    clock
        .unary_frontier::<CapacityContainerBuilder<Vec<((Row, Row), EventTime, isize)>>, _, _, _>(
            Pipeline,
            &operator_name(node),
            move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = reads.then_some(cap);
                let mut loaded = false;
                let mut last_check = Instant::now();
                move |(input, frontier), output| {
                    input.for_each(|_, data| data.clear());
                    let Some(held) = cap.as_mut() else { return };
                    if !loaded || last_check.elapsed() >= reload {
                        last_check = Instant::now();
                        match reader.changes(!loaded) {
                            Ok((changes, letters)) => {
                                loaded = true;
                                ctx.dead_letter(&metrics, &letters);
                                if !changes.is_empty() {
                                    metrics.events_out.inc_by(changes.len() as u64);
                                    let time = *held.time();
                                    let mut session = output.session(&*held);
                                    for (row, diff) in changes {
                                        session.give((row, time, diff));
                                    }
                                }
                            }
                            Err(e) if !loaded => {
                                ctx.fail(format!("node \"{}\": {e}", reader.node));
                                cap = None;
                                return;
                            }
                            Err(e) => {
                                metrics.errors.inc();
                                tracing::warn!(node = %reader.node, error = %e, "reference not reloaded; keeping its last contents");
                            }
                        }
                    }
                    match frontier.frontier().first() {
                        None => cap = None,
                        Some(frontier) => {
                            if *frontier > *held.time() {
                                held.downgrade(frontier);
                            }
                            activator.activate_after(reload);
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// Reads a reference file and turns each change of its contents into retractions and
/// additions.
struct ReferenceReader {
    node: String,
    path: std::path::PathBuf,
    format: FileFormat,
    header: bool,
    schema: EventSchema,
    key: Vec<String>,
    others: Vec<String>,
    /// The file's modification time and length when last read.
    seen: Option<(SystemTime, u64)>,
    rows: BTreeMap<Row, Row>,
}

type ReferenceChanges = (
    Vec<((Row, Row), isize)>,
    Vec<edgeflow_connectors::file_source::DeadLetter>,
);

impl ReferenceReader {
    fn new(node: &PlanNode, settings: &ReferenceSettings) -> Self {
        let ReferenceSource::File {
            path,
            format,
            header,
        } = &settings.source;
        ReferenceReader {
            node: node.id.clone(),
            path: path.clone(),
            format: *format,
            header: *header,
            schema: settings.schema.clone(),
            key: settings.key.clone(),
            others: settings
                .schema
                .names()
                .filter(|n| !settings.key.iter().any(|k| k == n))
                .map(str::to_owned)
                .collect(),
            seen: None,
            rows: BTreeMap::new(),
        }
    }

    /// What changed since the last read (everything on the first); nothing when the file's
    /// modification time and length are unchanged, unless `force`.
    fn changes(&mut self, force: bool) -> Result<ReferenceChanges, String> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| format!("reading reference {}: {e}", self.path.display()))?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if !force && self.seen == Some(stamp) {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut options = FileSourceOptions::new(&self.path, self.format, self.schema.clone());
        options.has_header = self.header;
        let mut source = FileSource::open(&self.node, options).map_err(|e| chain(&e))?;
        let mut rows = BTreeMap::new();
        let mut letters = Vec::new();
        while let Some((batch, rejected)) = source.next_batch().map_err(|e| chain(&e))? {
            letters.extend(rejected);
            let keys = batch_rows(&batch, &self.schema, &self.key)?;
            let others = batch_rows(&batch, &self.schema, &self.others)?;
            // A later row with the same key replaces an earlier one.
            rows.extend(keys.into_iter().zip(others));
        }
        self.seen = Some(stamp);
        let mut changes = Vec::new();
        for (key, old) in &self.rows {
            if rows.get(key) != Some(old) {
                changes.push(((key.clone(), old.clone()), -1));
            }
        }
        for (key, new) in &rows {
            if self.rows.get(key) != Some(new) {
                changes.push(((key.clone(), new.clone()), 1));
            }
        }
        self.rows = rows;
        Ok((changes, letters))
    }
}

#[cfg(test)]
mod tests {
    use super::window_start;

    /// Regression: `t.div_euclid(size) * size` overflowed (a panic in debug builds, a wrong
    /// window in release) for event times near `i64::MIN`.
    #[test]
    fn window_start_saturates_on_extreme_event_times() {
        for size in [1, 7, 1_000, 60_000, 86_400_000] {
            for t in [
                i64::MIN,
                i64::MIN + 1,
                -1,
                0,
                1,
                59_999,
                i64::MAX - 1,
                i64::MAX,
            ] {
                // Naive: walk down from t to the first multiple of size, in i128.
                let naive = i128::from(t) - i128::from(t).rem_euclid(i128::from(size));
                let expected = naive.max(i128::from(i64::MIN)) as i64;
                assert_eq!(window_start(t, size), expected, "t {t} size {size}");
                assert!(window_start(t, size) <= t);
            }
        }
        assert_eq!(window_start(i64::MIN, 1_000), i64::MIN);
        assert_eq!(window_start(i64::MAX, 1_000), i64::MAX - i64::MAX % 1_000);
        assert_eq!(window_start(-1, 1_000), -1_000);
    }
}
