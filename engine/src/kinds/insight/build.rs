//! The `insight` kind on timely: every rule is an operator over the input it names, exchanged
//! by the rule's key so each key's state lives on one worker; the incidents of all rules meet
//! on worker 0, where a sequencer numbers them in event-time order, writes them to the
//! `incidents` table and turns those of rules with `control:` actions into control records.
//!
//! Every rule operator holds its output capability at its input's watermark (or earlier, at a
//! silence deadline not yet decided), and emits each incident at the incident's event time,
//! so the sequencer's frontier tells it when every incident up to a time is in: the numbering
//! is the same whatever the batching or the number of workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::error::chain;
use edgeflow_operators::OperatorError;
use edgeflow_operators::control::{ControlAction, ControlRecord, records_to_batch};
use edgeflow_operators::insight::{
    Correlated, CorrelatedSettings, Drift, DriftSettings, Incident, Rejected, RuleInfo, RuleKind,
    Silence, SilenceSettings, cell_text, incidents_to_batch,
};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concatenate, Exchange, Operator};

use super::{INCIDENTS_TABLE, InsightSettings, RuleCondition, words_of};
use crate::error::EngineError;
use crate::metrics::NodeMetrics;
use crate::plan::PlanNode;
use crate::runtime::batch::{Batch, EventTime};
use crate::runtime::context::RunContext;
use crate::runtime::exchange::exchange_by_key;
use crate::runtime::node::{
    BatchStream, BuildEnv, NodeOutputs, operator_name, rows_as_dead_letters,
};
use crate::sql::{Catalog, MaterializedTable, QueryEngine, QueryResult};

/// A stream of incidents, each at its event time.
type IncidentStream<'scope> = Stream<'scope, EventTime, Vec<Incident>>;

/// Why a rule's late rows are dead letters.
const RULE_LATE_REASON: &str =
    "late event: the insight rule's watermark had already passed its event time";

/// How long a SQL rule waits before looking again at tables not yet complete up to its tick.
const SQL_RETRY: Duration = Duration::from_millis(20);

/// Builds an insight node: its incident stream (main) and its control stream.
pub fn insight<'scope>(
    inputs: Vec<BatchStream<'scope>>,
    node: &PlanNode,
    settings: &InsightSettings,
    env: &BuildEnv,
) -> Result<NodeOutputs<'scope>, EngineError> {
    let internal = |what: String| EngineError::Internal(format!("insight {}: {what}", node.id));
    let first = inputs
        .first()
        .cloned()
        .ok_or_else(|| internal("no input".into()))?;
    let scope = first.scope();
    let metrics = env.metrics(node);
    let mut streams = Vec::new();
    for rule in &settings.rules {
        let input = || -> Result<BatchStream<'scope>, EngineError> {
            let wanted = rule
                .input
                .as_ref()
                .ok_or_else(|| internal(format!("rule {} has no input", rule.name)))?;
            let index = node
                .inputs
                .iter()
                .position(|i| i == wanted)
                .ok_or_else(|| internal(format!("rule {} reads {wanted}", rule.name)))?;
            Ok(inputs[index].clone())
        };
        let info = RuleInfo {
            name: rule.name.clone(),
            severity: rule.severity,
        };
        let name = format!("{}[{}.{}]", node.kind, node.id, rule.name);
        let stream = match &rule.condition {
            RuleCondition::Correlated {
                by,
                device,
                devices,
                within_ms,
            } => {
                let state = Correlated::new(
                    info,
                    CorrelatedSettings {
                        by: by.clone(),
                        device: device.clone(),
                        devices: *devices,
                        within_ms: *within_ms,
                        time_field: rule.time_field.clone(),
                    },
                );
                keyed_rule(input()?, by, None, state, &name, node, env)
            }
            RuleCondition::Drift {
                key,
                value,
                baseline_ms,
                shift,
                min_samples,
            } => {
                let state = Drift::new(
                    info,
                    DriftSettings {
                        key: key.clone(),
                        value: value.clone(),
                        baseline_ms: *baseline_ms,
                        shift: *shift,
                        min_samples: *min_samples,
                        per_device: key.iter().any(|k| k == "device"),
                        time_field: rule.time_field.clone(),
                    },
                );
                keyed_rule(input()?, key, None, state, &name, node, env)
            }
            RuleCondition::Silence { key, after_ms } => {
                let stream = input()?;
                let clock = latest_times(stream.clone(), rule.time_field.clone(), &name);
                let state = Silence::new(
                    info,
                    SilenceSettings {
                        key: key.clone(),
                        after_ms: *after_ms,
                        per_device: key.iter().any(|k| k == "device"),
                        time_field: rule.time_field.clone(),
                    },
                );
                keyed_rule(stream, key, Some(clock), state, &name, node, env)
            }
            RuleCondition::Sql {
                query,
                every_ms,
                key,
            } => {
                let clock = scope.concatenate(inputs.clone());
                let sql = SqlRule {
                    info,
                    query: query.clone(),
                    every_ms: *every_ms,
                    key: key.clone(),
                };
                sql_rule(clock, sql, &name, node, env)
            }
        };
        streams.push(stream);
    }
    let incidents = scope.concatenate(streams).exchange(|_| 0);
    let (main, control) = sequence(incidents, node, settings, env, metrics)?;
    Ok(NodeOutputs {
        main: Some(main),
        late: None,
        control: Some(control),
    })
}

/// What the runtime needs of a keyed rule's state.
trait RuleState: 'static {
    fn push(&mut self, batch: &RecordBatch) -> Result<Rejected, OperatorError>;
    fn advance(&mut self, watermark: EventTime) -> Vec<Incident>;
    /// The earliest time the rule may still raise an incident at, given its watermark.
    fn hold(&self, watermark: EventTime) -> EventTime {
        watermark
    }
    /// The input holds a row at `time` (somewhere).
    fn observe(&mut self, _time: EventTime) {}
}

impl RuleState for Correlated {
    fn push(&mut self, batch: &RecordBatch) -> Result<Rejected, OperatorError> {
        Correlated::push(self, batch)
    }
    fn advance(&mut self, watermark: EventTime) -> Vec<Incident> {
        Correlated::advance(self, watermark)
    }
}

impl RuleState for Drift {
    fn push(&mut self, batch: &RecordBatch) -> Result<Rejected, OperatorError> {
        Drift::push(self, batch)
    }
    fn advance(&mut self, watermark: EventTime) -> Vec<Incident> {
        Drift::advance(self, watermark)
    }
}

impl RuleState for Silence {
    fn push(&mut self, batch: &RecordBatch) -> Result<Rejected, OperatorError> {
        Silence::push(self, batch)
    }
    fn advance(&mut self, watermark: EventTime) -> Vec<Incident> {
        Silence::advance(self, watermark)
    }
    fn hold(&self, watermark: EventTime) -> EventTime {
        self.earliest_undecided(watermark)
            .map_or(watermark, |d| d.min(watermark))
    }
    fn observe(&mut self, time: EventTime) {
        Silence::observe(self, time)
    }
}

/// The latest row time of every batch, sent to every worker (a silence rule's evidence that
/// its input went on past a deadline).
fn latest_times<'scope>(
    stream: BatchStream<'scope>,
    time_field: String,
    name: &str,
) -> Stream<'scope, EventTime, Vec<EventTime>> {
    stream
        .unary::<CapacityContainerBuilder<Vec<EventTime>>, _, _, _>(
            Pipeline,
            &format!("clock:{name}"),
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let latest = data
                            .iter()
                            .filter_map(|b| Silence::latest_time(b, &time_field))
                            .max();
                        if let Some(t) = latest {
                            output.session(&cap).give(t);
                        }
                    });
                }
            },
        )
        .broadcast()
}

/// One keyed rule: rows exchanged by `key`, fed to `state`, incidents emitted at their time
/// as the watermark passes.
fn keyed_rule<'scope, S: RuleState>(
    stream: BatchStream<'scope>,
    key: &[String],
    clock: Option<Stream<'scope, EventTime, Vec<EventTime>>>,
    mut state: S,
    name: &str,
    node: &PlanNode,
    env: &BuildEnv,
) -> IncidentStream<'scope> {
    let keyed = exchange_by_key(stream, key, name, env);
    let metrics = env.metrics(node);
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    let mut builder = OperatorBuilder::new(name.to_owned(), keyed.scope());
    let mut input = builder.new_input(keyed, Pipeline);
    let mut clock_input = clock.map(|c| builder.new_input(c, Pipeline));
    let (output, stream) = builder.new_output::<Vec<Incident>>();
    let mut output = OutputBuilder::from(output);
    builder.build(move |mut capabilities| {
        let mut held = capabilities.pop();
        move |frontiers| {
            let mut output = output.activate();
            if let Some(clock) = clock_input.as_mut() {
                clock.for_each(|_cap, data| {
                    for t in data.drain(..) {
                        state.observe(t);
                    }
                });
            }
            input.for_each(|_cap, data| {
                for batch in data.drain(..) {
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    match state.push(&batch) {
                        Ok(rejected) => dead_letter_rejected(&ctx, &metrics, &node_id, rejected),
                        Err(e) => {
                            metrics.errors.inc();
                            ctx.dead_letter(
                                &metrics,
                                &rows_as_dead_letters(&node_id, &batch, &chain(&e)),
                            );
                        }
                    }
                }
            });
            let watermark = frontiers
                .iter()
                .map(|f| f.frontier().first().copied().unwrap_or(EventTime::MAX))
                .min()
                .unwrap_or(EventTime::MAX);
            let Some(cap) = held.as_mut() else { return };
            let incidents = state.advance(watermark);
            if !incidents.is_empty() {
                let mut by_time: BTreeMap<EventTime, Vec<Incident>> = BTreeMap::new();
                for incident in incidents {
                    by_time
                        .entry(incident.time.max(*cap.time()))
                        .or_default()
                        .push(incident);
                }
                for (time, incidents) in by_time {
                    output
                        .session(&cap.delayed(&time))
                        .give_iterator(incidents.into_iter());
                }
            }
            if watermark == EventTime::MAX {
                held = None;
            } else {
                let hold = state.hold(watermark);
                if hold > *cap.time() {
                    cap.downgrade(&hold);
                }
            }
        }
    });
    stream
}

fn dead_letter_rejected(ctx: &RunContext, metrics: &NodeMetrics, node: &str, rejected: Rejected) {
    if let Some(late) = rejected.late {
        metrics.late_events.inc_by(late.num_rows() as u64);
        ctx.dead_letter(
            metrics,
            &rows_as_dead_letters(node, &late, RULE_LATE_REASON),
        );
    }
    if let Some((rows, reason)) = rejected.invalid {
        metrics.errors.inc();
        ctx.dead_letter(metrics, &rows_as_dead_letters(node, &rows, &reason));
    }
}

/// The catalog tables a query names, but the incidents table, which the insight writes.
fn tables_named(query: &str, engine: &QueryEngine) -> Vec<Arc<MaterializedTable>> {
    let words = words_of(query);
    engine
        .catalog()
        .tables()
        .filter(|t| t.name() != INCIDENTS_TABLE && words.contains(&t.name().to_ascii_lowercase()))
        .cloned()
        .collect()
}

/// Runs one SQL rule's queries on a thread of its own, so that worker 0 keeps stepping its
/// dataflows while a query runs; the rule's operator sends the tables as they are when the
/// query is due (see [`frozen`]) and picks the result up on a later activation, so the result
/// is the one a query run on the worker at that moment would give. Dropping it ends the
/// thread and joins it.
struct QueryThread {
    requests: Option<std::sync::mpsc::Sender<Arc<Catalog>>>,
    results: std::sync::mpsc::Receiver<Result<QueryResult, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QueryThread {
    /// A thread running `query` once per request, over the tables requested.
    fn start(query: String, rule: &str) -> Result<Self, String> {
        let (requests, requested) = std::sync::mpsc::channel::<Arc<Catalog>>();
        let (answers, results) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| format!("cannot start a query runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name(format!("sql-rule-{rule}"))
            .spawn(move || {
                while let Ok(tables) = requested.recv() {
                    let result = runtime
                        .block_on(QueryEngine::new(tables).query(&query))
                        .map_err(|e| e.to_string());
                    if answers.send(result).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start a query thread: {e}"))?;
        Ok(QueryThread {
            requests: Some(requests),
            results,
            thread: Some(thread),
        })
    }

    /// Asks for one run of the query over `tables`.
    fn request(&self, tables: Arc<Catalog>) -> Result<(), String> {
        self.requests
            .as_ref()
            .and_then(|r| r.send(tables).ok())
            .ok_or_else(|| "the query thread has stopped".to_owned())
    }

    /// The result of the run requested, if it is done.
    fn poll(&self) -> Option<Result<QueryResult, String>> {
        match self.results.try_recv() {
            Ok(result) => Some(result),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Some(Err("the query thread has stopped".to_owned()))
            }
        }
    }
}

impl Drop for QueryThread {
    fn drop(&mut self) {
        // Closing the request channel ends the thread's loop.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The tables of `catalog` as they are now: each one's visible rows, complete.
fn frozen(catalog: &Catalog) -> Catalog {
    let mut out = Catalog::new();
    for table in catalog.tables() {
        let copy = MaterializedTable::new(table.name(), table.schema(), 1);
        for batch in table.snapshot().batches {
            copy.append(EventTime::MIN, batch);
        }
        copy.advance(0, EventTime::MAX);
        out.insert(Arc::new(copy));
    }
    out
}

/// A SQL rule: on worker 0, each time the watermark of the insight's inputs passes a multiple
/// of `every` (the tick), and once the tables the query names are complete up to the tick,
/// runs the query (on its own thread, see [`QueryThread`]); rows (by key) not returned by the
/// previous run are incidents, at the tick. At the end of the input it runs once more over
/// the complete tables.
fn sql_rule<'scope>(
    clock: BatchStream<'scope>,
    rule: SqlRule,
    name: &str,
    node: &PlanNode,
    env: &BuildEnv,
) -> IncidentStream<'scope> {
    let SqlRule {
        info,
        query,
        every_ms: every,
        key,
    } = rule;
    let engine = QueryEngine::new(env.ctx.catalog.clone());
    let waits_for = tables_named(&query, &engine);
    let metrics = env.metrics(node);
    let active = env.worker == 0;
    let scope = clock.scope();
    clock.unary_frontier::<CapacityContainerBuilder<Vec<Incident>>, _, _, _>(
        Pipeline,
        name,
        move |cap, op_info| {
            let activator = scope.activator_for(Rc::from(op_info.address.to_vec()));
            let mut held = active.then_some(cap);
            let mut next_tick: Option<EventTime> = None;
            let mut previous: BTreeSet<String> = BTreeSet::new();
            let queries = active.then(|| QueryThread::start(query, &info.name));
            // The tick and end flag of the query running, and when it was asked for.
            let mut running: Option<(EventTime, bool, Instant)> = None;
            move |(input, frontier), output| {
                input.for_each(|_cap, data| data.clear());
                let Some(cap) = held.as_mut() else { return };
                if running.is_none() {
                    let watermark = frontier
                        .frontier()
                        .first()
                        .copied()
                        .unwrap_or(EventTime::MAX);
                    if watermark == EventTime::MIN {
                        return;
                    }
                    let next = *next_tick.get_or_insert_with(|| first_tick(watermark, every));
                    let done = watermark == EventTime::MAX;
                    if !done && watermark <= next {
                        return;
                    }
                    let tick = if done {
                        next
                    } else {
                        (watermark - 1).div_euclid(every) * every
                    };
                    let needed = if done { EventTime::MAX } else { tick + 1 };
                    if waits_for.iter().any(|t| t.snapshot().frontier < needed) {
                        if tick > *cap.time() {
                            cap.downgrade(&tick);
                        }
                        activator.activate_after(SQL_RETRY);
                        return;
                    }
                    running = Some((tick, done, Instant::now()));
                    if let Some(Ok(thread)) = &queries
                        && thread.request(Arc::new(frozen(engine.catalog()))).is_ok()
                    {
                        activator.activate_after(SQL_RETRY);
                        return;
                    }
                }
                let Some((tick, done, started)) = running else {
                    return;
                };
                let result = match &queries {
                    Some(Ok(thread)) => match thread.poll() {
                        Some(result) => result,
                        None => {
                            activator.activate_after(SQL_RETRY);
                            return;
                        }
                    },
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("a sql rule runs on worker 0 only".to_owned()),
                };
                running = None;
                metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(result) => {
                        let mut rows = BTreeSet::new();
                        for batch in &result.batches {
                            for row in 0..batch.num_rows() {
                                rows.insert(row_key(batch, row, key.as_deref()));
                            }
                        }
                        let fresh: Vec<Incident> = rows
                            .difference(&previous)
                            .map(|k| Incident {
                                time: tick,
                                rule: info.name.clone(),
                                kind: RuleKind::Sql,
                                key: k.clone(),
                                severity: info.severity,
                                devices: 0,
                                value: None,
                                message: format!("query returned {k}"),
                            })
                            .collect();
                        if !fresh.is_empty() {
                            let time = tick.max(*cap.time());
                            output
                                .session(&cap.delayed(&time))
                                .give_iterator(fresh.into_iter());
                        }
                        previous = rows;
                    }
                    Err(message) => {
                        metrics.errors.inc();
                        tracing::warn!(rule = %info.name, %message, "sql rule failed");
                    }
                }
                if done {
                    held = None;
                } else {
                    let following = tick.saturating_add(every);
                    next_tick = Some(following);
                    if following > *cap.time() {
                        cap.downgrade(&following);
                    }
                }
            }
        },
    )
}

/// A SQL rule's settings.
struct SqlRule {
    info: RuleInfo,
    query: String,
    every_ms: EventTime,
    key: Option<String>,
}

/// The first multiple of `every` at or after `time`.
fn first_tick(time: EventTime, every: EventTime) -> EventTime {
    let floor = time.div_euclid(every).saturating_mul(every);
    if floor == time {
        floor
    } else {
        floor.saturating_add(every)
    }
}

/// A result row's key: its `key` column, or every column as `name=value` pairs.
fn row_key(batch: &RecordBatch, row: usize, key: Option<&str>) -> String {
    if let Some(column) = key.and_then(|k| batch.column_by_name(k)) {
        return cell_text(column, row);
    }
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| format!("{}={}", f.name(), cell_text(c, row)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Worker 0's sequencer: numbers incidents in (time, rule, key) order once the watermark has
/// passed them, writes them to the `incidents` table and emits them, with the control
/// records of rules that have `control:` actions (an action is not sent again to a node that
/// was last sent the same action).
fn sequence<'scope>(
    incidents: IncidentStream<'scope>,
    node: &PlanNode,
    settings: &InsightSettings,
    env: &BuildEnv,
    metrics: NodeMetrics,
) -> Result<(BatchStream<'scope>, BatchStream<'scope>), EngineError> {
    let table = env
        .ctx
        .catalog
        .get(INCIDENTS_TABLE)
        .cloned()
        .ok_or_else(|| {
            EngineError::Internal(format!("table {INCIDENTS_TABLE} is not in the catalog"))
        })?;
    let writer = incident_writer(env, &node.id);
    let ctx = env.ctx.clone();
    let insight = node.id.clone();
    let control = settings.control.clone();
    let mut builder = OperatorBuilder::new(operator_name(node), incidents.scope());
    let mut input = builder.new_input(incidents, Pipeline);
    let (main, main_stream) = builder.new_output::<Vec<Batch>>();
    let (records, records_stream) = builder.new_output::<Vec<Batch>>();
    let mut main = OutputBuilder::from(main);
    let mut records = OutputBuilder::from(records);
    builder.build(move |capabilities| {
        let mut held = Some(capabilities);
        let mut pending: BTreeMap<EventTime, Vec<Incident>> = BTreeMap::new();
        let (mut incident_count, mut record_count) = (0u64, 0u64);
        let mut sent: HashMap<String, ControlAction> = HashMap::new();
        move |frontiers| {
            let mut main = main.activate();
            let mut records = records.activate();
            input.for_each(|_cap, data| {
                for incident in data.drain(..) {
                    pending.entry(incident.time).or_default().push(incident);
                }
            });
            let watermark = frontiers[0]
                .frontier()
                .first()
                .copied()
                .unwrap_or(EventTime::MAX);
            let Some(caps) = held.as_mut() else { return };
            while let Some(entry) = pending.first_entry() {
                if *entry.key() >= watermark {
                    break;
                }
                let time = (*entry.key()).max(*caps[0].time());
                let mut ready = entry.remove();
                ready.sort_by(|a, b| {
                    a.order_key()
                        .cmp(&b.order_key())
                        .then_with(|| a.message.cmp(&b.message))
                });
                let mut numbered = Vec::with_capacity(ready.len());
                let mut outgoing = Vec::new();
                for incident in ready {
                    incident_count += 1;
                    let id = format!("{insight}#{incident_count}");
                    for c in control.iter().filter(|c| c.on == incident.rule) {
                        // An action the node was already sent (and nothing else since) is
                        // not sent again: a drift at fifty devices is one new threshold.
                        if sent.get(&c.node) == Some(&c.action) {
                            continue;
                        }
                        sent.insert(c.node.clone(), c.action.clone());
                        record_count += 1;
                        outgoing.push(ControlRecord {
                            id: format!("{insight}-{record_count}"),
                            node: c.node.clone(),
                            action: c.action.clone(),
                            apply_at: incident.time,
                            issued_by: insight.clone(),
                            reason: format!("{id}: {}", incident.message),
                        });
                    }
                    numbered.push((id, incident));
                }
                metrics.events_out.inc_by(numbered.len() as u64);
                match incidents_to_batch(&insight, &numbered) {
                    Ok(batch) => {
                        table.append(time, batch.clone());
                        main.session(&caps[0].delayed(&time)).give(Batch(batch));
                    }
                    Err(e) => ctx.fail(format!("node \"{insight}\": incidents: {}", chain(&e))),
                }
                if !outgoing.is_empty() {
                    match records_to_batch(&outgoing) {
                        Ok(batch) => records.session(&caps[1].delayed(&time)).give(Batch(batch)),
                        Err(e) => ctx.fail(format!(
                            "node \"{insight}\": control records: {}",
                            chain(&e)
                        )),
                    }
                }
            }
            metrics.watermark.set(watermark);
            table.advance(writer, watermark);
            if watermark == EventTime::MAX {
                held = None;
            } else {
                for cap in caps.iter_mut() {
                    if watermark > *cap.time() {
                        cap.downgrade(&watermark);
                    }
                }
            }
        }
    });
    Ok((main_stream, records_stream))
}

/// The insight nodes of a plan, in plan order: each worker of each is one writer of the
/// `incidents` table.
pub fn insight_count(nodes: &[PlanNode]) -> usize {
    nodes
        .iter()
        .filter(|n| n.settings_as::<InsightSettings>().is_some())
        .count()
}

/// This worker's writer index in the `incidents` table for insight `id`.
fn incident_writer(env: &BuildEnv, id: &str) -> usize {
    let ordinal = env
        .plan
        .nodes
        .iter()
        .filter(|n| n.settings_as::<InsightSettings>().is_some())
        .position(|n| n.id == id)
        .unwrap_or(0);
    ordinal * env.peers + env.worker
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::{QueryThread, frozen};
    use crate::sql::{Catalog, MaterializedTable};

    fn readings(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_new(schema, vec![column]).expect("one i64 column")
    }

    fn catalog_with(table: &Arc<MaterializedTable>) -> Catalog {
        let mut catalog = Catalog::new();
        catalog.insert(table.clone());
        catalog
    }

    fn wait_for(thread: &QueryThread) -> Result<crate::sql::QueryResult, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(result) = thread.poll() {
                return result;
            }
            assert!(Instant::now() < deadline, "the query never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A sql rule's query runs over the tables as they were when it was due, on its own
    /// thread: rows made visible while it waits are not in its result (worker 0 no longer
    /// blocks while the query runs, so tables may move on meanwhile).
    #[test]
    fn sql_rule_query_reads_the_tables_as_they_were_when_due() {
        let table = Arc::new(MaterializedTable::new("t", readings(&[]).schema(), 1));
        table.append(5, readings(&[1, 2]));
        table.advance(0, 10);
        let due = Arc::new(frozen(&catalog_with(&table)));
        // The table moves on after the query was due.
        table.append(12, readings(&[3]));
        table.advance(0, 20);

        let thread = QueryThread::start("SELECT v FROM t ORDER BY v".into(), "r").expect("thread");
        thread.request(due).expect("request");
        let result = wait_for(&thread).expect("query");
        let values: Vec<i64> = result
            .batches
            .iter()
            .flat_map(|b| {
                let column = b.column(0).as_any().downcast_ref::<Int64Array>();
                column.map(|c| c.values().to_vec()).unwrap_or_default()
            })
            .collect();
        assert_eq!(values, vec![1, 2]);

        // The same thread answers the next request, over the tables as they are then.
        thread
            .request(Arc::new(frozen(&catalog_with(&table))))
            .expect("request");
        let rows: usize = wait_for(&thread)
            .expect("query")
            .batches
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 3);
    }
}
