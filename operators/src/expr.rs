//! SQL expressions over event batches: `filter` predicates and `map` field computations.
//!
//! Expressions are parsed, type-coerced and planned once with DataFusion
//! ([`CompiledFilter::new`], [`CompiledMap::new`]); each batch is then evaluated against the
//! compiled physical expression, so the per-batch cost is the vectorised kernel alone.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::{OperatorError, Result};
use crate::schema::{EventSchema, FieldType};

/// An expression compiled against one input schema, with its result type.
struct Compiled {
    expr: Arc<dyn PhysicalExpr>,
    data_type: DataType,
}

/// Parses, coerces and plans `sql` against `input`.
///
/// Everything that would fail on every batch fails here instead, so `edgeflow validate`
/// reports it: a literal that cannot take its column's type (`value > 'high'` over a number
/// is folded at plan time and refused), and a string field that type coercion would cast to
/// a number or time on every row (`device > 3`) unless the expression casts it explicitly.
fn compile(
    ctx: &SessionContext,
    input: &SchemaRef,
    df_schema: &DFSchema,
    sql: &str,
) -> Result<Compiled> {
    let logical = ctx.parse_sql_expr(sql, df_schema).map_err(user_error)?;
    let explicit = explicitly_cast_columns(&logical);
    let state = ctx.state();
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(df_schema.clone()))
            .with_config_options(Arc::clone(state.config_options()))
            .build(),
    );
    let coerced = simplifier.coerce(logical, df_schema).map_err(user_error)?;
    refuse_implicit_string_casts(&coerced, df_schema, &explicit)?;
    let simplified = simplifier.simplify(coerced).map_err(user_error)?;
    let expr = ctx
        .create_physical_expr(simplified, df_schema)
        .map_err(user_error)?;
    let data_type = expr.data_type(input).map_err(user_error)?;
    Ok(Compiled { expr, data_type })
}

/// The columns an expression casts itself (`CAST(device AS BIGINT)`, `TRY_CAST(...)`).
fn explicitly_cast_columns(expr: &Expr) -> HashSet<String> {
    let mut columns = HashSet::new();
    // The closure never fails, so neither does the walk.
    let _ = expr.apply(|e| {
        if let Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) = e
            && let Expr::Column(column) = expr.as_ref()
        {
            columns.insert(column.name.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    columns
}

/// Refuses a string field that type coercion casts to a number or a time: the cast fails on
/// every row that is not a number (every row, for a device name), so each batch would become
/// dead letters. A cast the expression writes itself is its author's choice.
fn refuse_implicit_string_casts(
    coerced: &Expr,
    schema: &DFSchema,
    explicit: &HashSet<String>,
) -> Result<()> {
    let mut refused = None;
    let _ = coerced.apply(|e| {
        if let Expr::Cast(Cast { expr, field }) = e
            && let Expr::Column(column) = expr.as_ref()
            && !explicit.contains(&column.name)
            && let Ok(source) = schema.field_with_unqualified_name(&column.name)
            && matches!(
                source.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
            && !matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        {
            refused = Some((column.name.clone(), field.data_type().clone()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match refused {
        None => Ok(()),
        Some((name, to)) => Err(OperatorError::User(format!(
            "field \"{name}\" is a string but is used as {} here, which fails on every row that \
             is not one; quote the value to compare strings ('3'), or cast explicitly: \
             TRY_CAST({name} AS {})",
            type_name(&to),
            sql_type_name(&to)
        ))),
    }
}

/// The SQL name of a type a string may be cast to, for hints.
fn sql_type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "BIGINT",
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "BIGINT",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "TIMESTAMP",
        _ => "DOUBLE",
    }
}

/// Turns a DataFusion planning error into a one-line user message without DataFusion's
/// "Error during planning:" style prefixes.
fn user_error(err: DataFusionError) -> OperatorError {
    OperatorError::User(datafusion_message(&err))
}

/// The user-facing text of a DataFusion error: its root cause, without prefix or backtrace,
/// on one line.
pub fn datafusion_message(err: &DataFusionError) -> String {
    let root = err.find_root();
    let text = match root {
        DataFusionError::Context(_, inner) => inner.message().into_owned(),
        other => other.message().into_owned(),
    };
    let text = text
        .split(DataFusionError::BACK_TRACE_SEP)
        .next()
        .unwrap_or_default();
    let mut text = text.trim().to_owned();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest.to_owned();
        }
    }
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that `batch` has the shape the expression was compiled for.
fn check_batch(expected: &SchemaRef, batch: &RecordBatch, what: &str) -> Result<()> {
    let actual = batch.schema_ref();
    if Arc::ptr_eq(expected, actual) || expected.fields() == actual.fields() {
        return Ok(());
    }
    Err(OperatorError::Internal(format!(
        "{what} compiled for schema {expected:?} got a batch with schema {actual:?}"
    )))
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

/// A compiled `filter` predicate: keeps the rows where a boolean SQL expression is true.
pub struct CompiledFilter {
    input: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("predicate", &self.predicate.to_string())
            .finish()
    }
}

impl CompiledFilter {
    /// Parses and type-checks `sql` over the fields of `input`; it must be boolean.
    pub fn new(input: &EventSchema, sql: &str) -> Result<Self> {
        let schema = input.to_arrow();
        let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
        let ctx = SessionContext::new();
        let compiled = compile(&ctx, &schema, &df_schema, sql)?;
        if compiled.data_type != DataType::Boolean {
            return Err(OperatorError::User(format!(
                "filter expression must be boolean, but `{sql}` has type {}",
                type_name(&compiled.data_type)
            )));
        }
        Ok(CompiledFilter {
            input: schema,
            predicate: compiled.expr,
        })
    }

    /// The rows of `batch` for which the predicate is true (null counts as false).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        check_batch(&self.input, batch, "filter")?;
        let mask = evaluate(&self.predicate, batch)?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            OperatorError::Internal(format!(
                "filter predicate produced {} instead of booleans",
                mask.data_type()
            ))
        })?;
        if mask.null_count() == 0 && mask.true_count() == mask.len() {
            return Ok(batch.clone());
        }
        Ok(filter_record_batch(batch, mask)?)
    }
}

/// Where one output column of a map comes from.
enum Column {
    /// Copied from the input column at this index.
    Input(usize),
    /// Computed, then cast to `cast_to` if the expression's type is not the field's type.
    Computed {
        expr: Arc<dyn PhysicalExpr>,
        cast_to: Option<DataType>,
    },
}

/// A compiled `map`: computes new or replacement fields and drops others.
pub struct CompiledMap {
    input: SchemaRef,
    output: EventSchema,
    output_arrow: SchemaRef,
    columns: Vec<Column>,
}

impl std::fmt::Debug for CompiledMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledMap")
            .field("output", &self.output.to_string())
            .finish()
    }
}

/// The pipeline type an expression result is stored as, and whether it needs a cast to get
/// there. Only lossless conversions are done.
fn storage_type(data_type: &DataType) -> Option<(FieldType, bool)> {
    if let Some(t) = FieldType::from_arrow(data_type) {
        return Some((t, false));
    }
    let t = match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => FieldType::I64,
        DataType::Float16 | DataType::Float32 => FieldType::F64,
        DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
        DataType::Timestamp(TimeUnit::Second, None) => FieldType::TimestampMs,
        _ => return None,
    };
    Some((t, true))
}

/// A short SQL-ish name of an Arrow type for messages.
fn type_name(data_type: &DataType) -> String {
    match FieldType::from_arrow(data_type) {
        Some(t) => t.name().to_owned(),
        None => data_type.to_string(),
    }
}

impl CompiledMap {
    /// Compiles `fields` (name -> SQL expression, all evaluated over the input fields) and
    /// `drop` (fields to remove). New names are appended in order; existing names are replaced
    /// in place.
    pub fn new(input: &EventSchema, fields: &[(String, String)], drop: &[String]) -> Result<Self> {
        let schema = input.to_arrow();
        let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
        let ctx = SessionContext::new();

        let mut out_fields: Vec<(String, FieldType)> = input.fields().to_vec();
        let mut columns: Vec<Column> = (0..out_fields.len()).map(Column::Input).collect();
        let mut errors = Vec::new();
        for (i, (name, sql)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(n, _)| n == name) {
                errors.push(format!("field \"{name}\" is assigned twice"));
                continue;
            }
            let compiled = match compile(&ctx, &schema, &df_schema, sql) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("field \"{name}\": {e}"));
                    continue;
                }
            };
            let Some((field_type, needs_cast)) = storage_type(&compiled.data_type) else {
                errors.push(format!(
                    "field \"{name}\": `{sql}` has type {}, which a stream cannot carry; \
                     CAST it to BIGINT, DOUBLE, VARCHAR, BOOLEAN or TIMESTAMP",
                    compiled.data_type
                ));
                continue;
            };
            let column = Column::Computed {
                expr: compiled.expr,
                cast_to: needs_cast.then(|| field_type.arrow_type()),
            };
            match out_fields.iter().position(|(n, _)| n == name) {
                Some(pos) => {
                    out_fields[pos].1 = field_type;
                    columns[pos] = column;
                }
                None => {
                    out_fields.push((name.clone(), field_type));
                    columns.push(column);
                }
            }
        }
        for name in drop {
            if fields.iter().any(|(n, _)| n == name) {
                errors.push(format!("field \"{name}\" is both computed and dropped"));
                continue;
            }
            match out_fields.iter().position(|(n, _)| n == name) {
                Some(pos) => {
                    out_fields.remove(pos);
                    columns.remove(pos);
                }
                None => errors.push(format!(
                    "cannot drop unknown field \"{name}\"{}",
                    suggestion(name, input.names())
                )),
            }
        }
        if !errors.is_empty() {
            return Err(OperatorError::User(errors.join("; ")));
        }
        let output = EventSchema::new(out_fields);
        Ok(CompiledMap {
            input: schema,
            output_arrow: output.to_arrow(),
            output,
            columns,
        })
    }

    /// The schema of the batches [`apply`](Self::apply) returns.
    pub fn output_schema(&self) -> &EventSchema {
        &self.output
    }

    /// Computes the output batch for `batch`.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        check_batch(&self.input, batch, "map")?;
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Input(i) => Ok(Arc::clone(batch.column(*i))),
                Column::Computed { expr, cast_to } => {
                    let array = evaluate(expr, batch)?;
                    match cast_to {
                        Some(t) => Ok(cast(&array, t)?),
                        None => Ok(array),
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.output_arrow),
            columns,
        )?)
    }
}

/// `; did you mean "x"?` for the closest candidate, or nothing.
fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .filter(|c| datafusion::common::utils::datafusion_strsim::levenshtein(name, c) <= 2)
        .min_by_key(|c| datafusion::common::utils::datafusion_strsim::levenshtein(name, c))
        .map(|c| format!("; did you mean \"{c}\"?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };

    fn schema() -> EventSchema {
        EventSchema::new(vec![
            ("ts".into(), FieldType::TimestampMs),
            ("device".into(), FieldType::String),
            ("value".into(), FieldType::F64),
            ("count".into(), FieldType::I64),
            ("ok".into(), FieldType::Bool),
        ])
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            schema().to_arrow(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("a"),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(0.25),
                    Some(1.0),
                    Some(4.0),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    None,
                    Some(false),
                    Some(true),
                ])),
            ],
        )
        .unwrap()
    }

    fn user_message(err: OperatorError) -> String {
        match err {
            OperatorError::User(m) => m,
            other => panic!("expected a user error, got {other:?}"),
        }
    }

    fn ts(b: &RecordBatch) -> Vec<i64> {
        b.column(0)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .values()
            .to_vec()
    }

    #[test]
    fn filter_coerces_integer_literals_and_keeps_true_rows() {
        let f =
            CompiledFilter::new(&schema(), "value > 0.5 AND device = 'b' OR count = 3").unwrap();
        let out = f.apply(&batch()).unwrap();
        // row 2: 1.0 > 0.5 and b; row 3: count = 3 (device null, value 4.0 > 0.5 but null = 'b')
        assert_eq!(ts(&out), vec![2, 3]);
        let f = CompiledFilter::new(&schema(), "value > 1").unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![3]);
    }

    #[test]
    fn filter_treats_null_as_false() {
        let f = CompiledFilter::new(&schema(), "ok").unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![1, 4]);
        let f = CompiledFilter::new(&schema(), "value < 100").unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![1, 2, 3]);
    }

    #[test]
    fn filter_on_timestamps_and_functions() {
        let f = CompiledFilter::new(
            &schema(),
            "ts >= to_timestamp_millis(3) AND upper(device) IS NULL",
        )
        .unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![3]);
    }

    #[test]
    fn filter_rejects_non_boolean_expressions() {
        let msg = user_message(CompiledFilter::new(&schema(), "value * 2").unwrap_err());
        assert!(
            msg.contains("must be boolean") && msg.contains("f64"),
            "{msg}"
        );
    }

    #[test]
    fn filter_reports_unknown_column_with_suggestion() {
        let msg = user_message(CompiledFilter::new(&schema(), "valu > 1").unwrap_err());
        assert!(msg.starts_with("No field named valu"), "{msg}");
        assert!(msg.contains("Did you mean 'value'?"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn filter_reports_syntax_and_type_errors() {
        let msg = user_message(CompiledFilter::new(&schema(), "value >").unwrap_err());
        assert!(
            !msg.is_empty() && !msg.starts_with("Error during planning"),
            "{msg}"
        );
        let msg = user_message(CompiledFilter::new(&schema(), "ok + device > 1").unwrap_err());
        assert!(msg.to_lowercase().contains("boolean"), "{msg}");
    }

    /// Regression (hardening case 12): these passed `validate` and then turned every row into
    /// a dead letter at run time.
    #[test]
    fn expressions_that_fail_on_every_row_are_refused_when_compiled() {
        // A literal that is not a number, against a number field: folded at plan time.
        let msg = user_message(CompiledFilter::new(&schema(), "value > 'high'").unwrap_err());
        assert!(msg.contains("high"), "{msg}");
        // A string field coerced to a number on every row.
        let msg = user_message(CompiledFilter::new(&schema(), "device > 3").unwrap_err());
        assert!(
            msg.contains("field \"device\" is a string") && msg.contains("TRY_CAST(device"),
            "{msg}"
        );
        let fields = vec![("n".to_owned(), "device > 3 OR value > 1".to_owned())];
        let msg = user_message(CompiledMap::new(&schema(), &fields, &[]).unwrap_err());
        assert!(msg.contains("field \"device\" is a string"), "{msg}");

        // What the author asks for explicitly still compiles, and a numeric string literal
        // against a number is just a number.
        let f = CompiledFilter::new(&schema(), "TRY_CAST(device AS BIGINT) IS NULL").unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![1, 2, 3, 4]);
        let f = CompiledFilter::new(&schema(), "value > '0.5'").unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![2, 3]);
        let f = CompiledFilter::new(&schema(), "device = 'a'").unwrap();
        assert_eq!(ts(&f.apply(&batch()).unwrap()), vec![1, 4]);
    }

    #[test]
    fn map_appends_new_fields_replaces_in_place_and_drops() {
        let fields = vec![
            ("value".to_owned(), "value * 2".to_owned()),
            ("alarm".to_owned(), "value > 3".to_owned()),
            ("label".to_owned(), "concat(device, '!')".to_owned()),
        ];
        let m = CompiledMap::new(&schema(), &fields, &["ok".to_owned()]).unwrap();
        assert_eq!(
            m.output_schema().to_string(),
            "{ ts: timestamp_ms, device: string, value: f64, count: i64, alarm: bool, label: string }"
        );
        let out = m.apply(&batch()).unwrap();
        assert_eq!(out.schema(), m.output_schema().to_arrow());
        let value = out
            .column(2)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(
            value.iter().collect::<Vec<_>>(),
            vec![Some(0.5), Some(2.0), Some(8.0), None]
        );
        let alarm = out.column(4).as_boolean();
        assert_eq!(
            alarm.iter().collect::<Vec<_>>(),
            vec![Some(false), Some(false), Some(true), None]
        );
        let label = out.column(5).as_string::<i32>();
        assert_eq!(label.value(0), "a!");
    }

    #[test]
    fn map_casts_narrow_results_losslessly() {
        let fields = vec![
            ("small".to_owned(), "CAST(count AS INT)".to_owned()),
            ("single".to_owned(), "CAST(value AS REAL)".to_owned()),
        ];
        let m = CompiledMap::new(&schema(), &fields, &[]).unwrap();
        let out = m.apply(&batch()).unwrap();
        assert_eq!(m.output_schema().field_type("small"), Some(FieldType::I64));
        assert_eq!(m.output_schema().field_type("single"), Some(FieldType::F64));
        let small = out.column(5).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(small.values().to_vec(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn map_rejects_types_a_stream_cannot_carry() {
        let fields = vec![("u".to_owned(), "CAST(count AS BIGINT UNSIGNED)".to_owned())];
        let msg = user_message(CompiledMap::new(&schema(), &fields, &[]).unwrap_err());
        assert!(
            msg.starts_with("field \"u\":") && msg.contains("UInt64"),
            "{msg}"
        );
    }

    #[test]
    fn map_collects_every_error() {
        let fields = vec![
            ("a".to_owned(), "nope + 1".to_owned()),
            ("b".to_owned(), "value +".to_owned()),
        ];
        let msg =
            user_message(CompiledMap::new(&schema(), &fields, &["devce".to_owned()]).unwrap_err());
        assert!(
            msg.contains("field \"a\"") && msg.contains("field \"b\""),
            "{msg}"
        );
        assert!(
            msg.contains("cannot drop unknown field \"devce\"; did you mean \"device\"?"),
            "{msg}"
        );
    }

    #[test]
    fn map_literal_is_broadcast_to_every_row() {
        let fields = vec![("one".to_owned(), "1".to_owned())];
        let m = CompiledMap::new(&schema(), &fields, &[]).unwrap();
        let out = m.apply(&batch()).unwrap();
        assert_eq!(out.column(5).len(), 4);
    }
}
