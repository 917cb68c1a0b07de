//! SQL inside detections: `query:` rules and the `filter:` pre-filters of
//! Python rules. Both are planned once (per run, and again only when the
//! enrichment tables switch to a newer generation) and then executed on
//! every log batch as Arrow, with no JSON in between.

use super::error::SqlError;
use super::tables::{BatchSlot, LogBatchTable, ROW_COLUMN};
use super::{read_only, register_enrichment, session};
use crate::config::{
    ConfigError, DetectionDef, LogTable, RuleLogic, SqlText, Template, TemplatePart,
};
use crate::enrichment::Tables;
use crate::logs::EventBatch;
use crate::outcome::MatchOutput;
use crate::schema::json_at;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, UInt32Type};
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::{collect, ExecutionPlan, PhysicalExpr};
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A Python rule's `filter:`: a SQL predicate over the log table's declared
/// fields, evaluated on a whole batch at once.
pub struct RowFilter {
    pub text: String,
    expr: Arc<dyn PhysicalExpr>,
}

impl RowFilter {
    /// Plans `sql` against the log table's schema.
    ///
    /// # Errors
    /// The predicate does not parse, names an unknown field, or is not a
    /// condition; located in the SQL text.
    pub fn compile(sql: &str, schema: &SchemaRef) -> Result<Self, SqlError> {
        let ctx = session(1);
        let located = |e: datafusion::error::DataFusionError| {
            unknown_field(sql, schema).unwrap_or_else(|| SqlError::from_datafusion(&e, sql))
        };
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(located)?;
        let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(located)?;
        let data_type = expr.get_type(&df_schema).map_err(located)?;
        if !matches!(data_type, DataType::Boolean | DataType::Null) {
            return Err(SqlError::new(format!(
                "a filter must be a condition (true or false), but this one gives {data_type}"
            )));
        }
        let expr = ctx
            .create_physical_expr(expr, &df_schema)
            .map_err(located)?;
        Ok(Self {
            text: sql.to_string(),
            expr,
        })
    }

    /// Rows of `batch` for which the predicate is true (null counts as false).
    ///
    /// # Errors
    /// Evaluation failed (for example a cast that does not fit a value).
    pub fn select(&self, batch: &RecordBatch) -> Result<Vec<u32>, String> {
        let value = self.expr.evaluate(batch).map_err(|e| e.to_string())?;
        let array = value
            .into_array(batch.num_rows())
            .map_err(|e| e.to_string())?;
        let mask = array
            .as_boolean_opt()
            .ok_or_else(|| format!("the filter gave {}, not booleans", array.data_type()))?;
        let values = match mask.nulls() {
            Some(nulls) => mask.values() & nulls.inner(),
            None => mask.values().clone(),
        };
        Ok(values.set_indices().map(|i| i as u32).collect())
    }
}

/// The first dotted field path in `sql` (outside quotes) that the schema
/// does not have, located, with the closest valid name.
fn unknown_field(sql: &str, schema: &SchemaRef) -> Option<SqlError> {
    let mut quote = None;
    let mut start = None;
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    for (i, &(offset, c)) in chars.iter().enumerate() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        let word_char = c.is_alphanumeric() || c == '_' || c == '.';
        if start.is_none() && word_char && !c.is_ascii_digit() && c != '.' {
            start = Some(offset);
        }
        let end = !word_char || i + 1 == chars.len();
        if let (true, Some(s)) = (end, start) {
            let stop = if word_char {
                offset + c.len_utf8()
            } else {
                offset
            };
            let word = &sql[s..stop];
            let next = sql[stop..].trim_start();
            if word.contains('.') && !next.starts_with('(') {
                if let Err(message) = check_path(schema, word) {
                    let line = sql[..s].matches('\n').count() + 1;
                    let column = sql[..s]
                        .rsplit('\n')
                        .next()
                        .map_or(0, |l| l.chars().count())
                        + 1;
                    let mut err = SqlError::new(message.replace(
                        "the query's result has no column",
                        "the log table has no field",
                    ));
                    err.position = Some((line, column));
                    err.excerpt = sql.lines().nth(line - 1).map(str::to_string);
                    return Some(err);
                }
            }
            start = None;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
        }
    }
    None
}

/// Turns a SQL error in a detection's `query:`/`filter:` into a
/// configuration error located in detection.yml.
pub fn located(def: &DetectionDef, key: &str, sql: &SqlText, err: &SqlError) -> ConfigError {
    let position = match err.position {
        Some((line, column)) => Some(sql.file_position(line, column)),
        None => Some((sql.line, sql.column)),
    };
    let mut message = format!("{key}: {}", err.message);
    if let Some(caret) = err.caret("    ") {
        message.push('\n');
        message.push_str(&caret);
    }
    ConfigError::new(&def.file, message).at(position)
}

/// A planned SQL detection.
pub struct SqlRule {
    pub name: String,
    log: Arc<LogBatchTable>,
    slot: Arc<BatchSlot>,
    plan: Arc<dyn ExecutionPlan>,
    ctx: SessionContext,
    /// Whether some node keeps state built from the log batch (a join whose
    /// build side is the batch), so the plan's state is reset per batch.
    reset_each_batch: bool,
    row_column: usize,
    /// Result columns that are not log fields: they become the match context.
    context_columns: Vec<(String, usize)>,
    dedupe: Option<Template>,
    title: Option<Template>,
}

impl SqlRule {
    /// Plans `def`'s query against `log` (the batch being evaluated) and
    /// the row enrichment tables in `tables`.
    ///
    /// # Errors
    /// Every problem, located in detection.yml: SQL that does not parse or
    /// plan, a result without `_row`, templates naming no result column.
    pub fn compile(
        runtime: &tokio::runtime::Runtime,
        def: &DetectionDef,
        log: &LogTable,
        tables: &Tables,
    ) -> Result<Self, Vec<ConfigError>> {
        let RuleLogic::Sql {
            query,
            dedupe,
            title,
        } = &def.logic
        else {
            return Err(vec![ConfigError::new(&def.file, "not a SQL detection")]);
        };
        let fail = |e: SqlError| vec![located(def, "query", query, &e)];
        let ctx = session(1);
        let slot = Arc::new(BatchSlot::default());
        let log_schema = log.schema.to_arrow();
        let provider = Arc::new(LogBatchTable::new(&log_schema, Arc::clone(&slot)));
        ctx.register_table(log.name.as_str(), Arc::clone(&provider) as _)
            .map_err(|e| fail(SqlError::from_datafusion(&e, &query.text)))?;
        register_enrichment(&ctx, tables).map_err(|e| fail(SqlError::new(e.to_string())))?;
        let plan = runtime
            .block_on(async {
                let frame = ctx.sql_with_options(&query.text, read_only()).await?;
                frame.create_physical_plan().await
            })
            .map_err(|e| {
                fail(super::with_mmdb_hint(
                    SqlError::from_datafusion(&e, &query.text),
                    tables,
                ))
            })?;

        let schema = plan.schema();
        let mut errors = Vec::new();
        let row_column = schema.index_of(ROW_COLUMN).ok();
        if row_column.is_none() {
            errors.push(located(
                def,
                "query",
                query,
                &SqlError::new(format!(
                    "the result must keep each event's `{ROW_COLUMN}` column (select `e.*`, or `e.{ROW_COLUMN}` beside your columns), so every result row leads to its event"
                )),
            ));
        }
        for (key, template) in [("dedupe", dedupe), ("title", title)] {
            let Some(template) = template else { continue };
            for field in template.fields() {
                if let Err(message) = check_path(&schema, field) {
                    errors.push(
                        ConfigError::new(&def.file, format!("{key}: {message}"))
                            .at(template.position),
                    );
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let log_fields: Vec<&str> = log.schema.names();
        let context_columns = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() != ROW_COLUMN && !log_fields.contains(&f.name().as_str()))
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        Ok(Self {
            name: def.name.clone(),
            reset_each_batch: !reusable(&plan),
            log: provider,
            slot,
            plan,
            ctx,
            row_column: row_column.unwrap_or_default(),
            context_columns,
            dedupe: dedupe.clone(),
            title: title.clone(),
        })
    }

    /// Whether executions reset the plan's state (see [`reusable`]).
    pub fn resets_each_batch(&self) -> bool {
        self.reset_each_batch
    }

    /// Runs the plan on `batch`: one [`MatchOutput`] per result row.
    ///
    /// # Errors
    /// Execution failed; the message says why.
    pub fn evaluate(
        &self,
        runtime: &tokio::runtime::Runtime,
        batch: &EventBatch,
    ) -> Result<Vec<MatchOutput>, String> {
        let input = self
            .log
            .with_rows(&batch.batch)
            .map_err(|e| e.to_string())?;
        self.slot.set(Some(input));
        let plan = if self.reset_each_batch {
            reset_plan_states(Arc::clone(&self.plan)).map_err(|e| e.to_string())
        } else {
            Ok(Arc::clone(&self.plan))
        };
        let results = plan.and_then(|plan| {
            runtime
                .block_on(collect(plan, self.ctx.task_ctx()))
                .map_err(|e| e.strip_backtrace())
        });
        self.slot.set(None);
        let mut out = Vec::new();
        for result in results? {
            let rows = result.column(self.row_column).as_primitive::<UInt32Type>();
            for i in 0..result.num_rows() {
                out.push(self.to_output(&result, i, rows.value(i) as usize));
            }
        }
        Ok(out)
    }

    fn to_output(&self, result: &RecordBatch, i: usize, row: usize) -> MatchOutput {
        let context: Map<String, Value> = self
            .context_columns
            .iter()
            .map(|(name, c)| (name.clone(), json_at(result.column(*c).as_ref(), i)))
            .collect();
        let render = |t: &Template| render(t, result, i);
        MatchOutput {
            row,
            context: Some(context),
            title: self.title.as_ref().map(|t| render(t).0),
            dedupe: self
                .dedupe
                .as_ref()
                .map(render)
                .and_then(|(text, complete)| complete.then_some(text)),
            ..Default::default()
        }
    }
}

/// Whether `plan` can be executed again as it is. Joins keep the hash table
/// of their build side across executions: that is what we want when the
/// build side is an enrichment table (built once per plan, not per batch),
/// and wrong when it holds the log batch. Nodes not known to be stateless
/// make the plan reset per batch.
fn reusable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::common::JoinType;
    fn reads_batch(plan: &Arc<dyn ExecutionPlan>) -> bool {
        plan.name() == "CurrentBatchExec" || plan.children().into_iter().any(reads_batch)
    }
    const STATELESS: [&str; 16] = [
        "CurrentBatchExec",
        "DataSourceExec",
        "ProjectionExec",
        "FilterExec",
        "CoalesceBatchesExec",
        "CoalescePartitionsExec",
        "CooperativeExec",
        "SortExec",
        "SortPreservingMergeExec",
        "AggregateExec",
        "GlobalLimitExec",
        "LocalLimitExec",
        "UnionExec",
        "EmptyExec",
        "PlaceholderRowExec",
        "BoundedWindowAggExec",
    ];
    let node_ok = if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let probe_only = matches!(
            join.join_type(),
            JoinType::Inner
                | JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark
        );
        probe_only && !reads_batch(&join.left)
    } else {
        STATELESS.contains(&plan.name())
    };
    node_ok && plan.children().into_iter().all(reusable)
}

/// Checks that `path` names a result column (and nested struct fields).
fn check_path(schema: &SchemaRef, path: &str) -> Result<(), String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let names = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| *n != ROW_COLUMN)
            .collect::<Vec<_>>()
    };
    let Ok(field) = schema.field_with_name(first) else {
        let all = names();
        let hint = crate::suggest::did_you_mean(first, &all);
        return Err(format!(
            "`{path}`: the query's result has no column `{first}`{hint}; columns: {}",
            all.join(", ")
        ));
    };
    let mut data_type = field.data_type().clone();
    for part in parts {
        let DataType::Struct(fields) = &data_type else {
            return Err(format!(
                "`{{{path}}}`: `{part}` is inside a {data_type} value, not a struct"
            ));
        };
        let Some(child) = fields.iter().find(|f| f.name() == part) else {
            let all: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            let hint = crate::suggest::did_you_mean(part, &all);
            return Err(format!(
                "`{path}`: no field `{part}` there{hint}; fields: {}",
                all.join(", ")
            ));
        };
        data_type = child.data_type().clone();
    }
    Ok(())
}

/// Renders a template over result row `i`; the flag is false when a field
/// was null or missing (rendered as an empty string).
fn render(template: &Template, result: &RecordBatch, i: usize) -> (String, bool) {
    let mut out = String::new();
    let mut complete = true;
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => out.push_str(text),
            TemplatePart::Field(path) => match value_at(result, i, path) {
                Value::Null => complete = false,
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    (out, complete)
}

fn value_at(result: &RecordBatch, i: usize, path: &str) -> Value {
    let mut parts = path.split('.');
    let Some(column) = parts.next().and_then(|c| result.column_by_name(c)) else {
        return Value::Null;
    };
    let mut value = json_at(column.as_ref(), i);
    for part in parts {
        value = match value {
            Value::Object(mut map) => map.remove(part).unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, StructArray};
    use arrow::datatypes::{Field, Fields, Schema};

    fn batch() -> RecordBatch {
        let event_fields = Fields::from(vec![Field::new("action", DataType::Utf8, true)]);
        let event = StructArray::new(
            event_fields.clone(),
            vec![Arc::new(StringArray::from(vec![
                Some("ConsoleLogin"),
                None,
                Some("GetObject"),
            ]))],
            None,
        );
        let schema = Schema::new(vec![
            Field::new("event", DataType::Struct(event_fields), true),
            Field::new("port", DataType::Int32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(event),
                Arc::new(Int32Array::from(vec![Some(443), Some(445), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn filters_select_rows_with_nested_fields_and_nulls_as_false() {
        let b = batch();
        let f =
            RowFilter::compile("event.action = 'ConsoleLogin' OR port = 445", &b.schema()).unwrap();
        assert_eq!(f.select(&b).unwrap(), vec![0, 1]);
        let f = RowFilter::compile("port <> 445", &b.schema()).unwrap();
        assert_eq!(f.select(&b).unwrap(), vec![0]);
    }

    #[test]
    fn filter_errors_are_located() {
        let b = batch();
        let unknown = RowFilter::compile("event.actoin = 'x'", &b.schema())
            .err()
            .unwrap();
        assert!(unknown.message.contains("actoin"), "{unknown}");
        let not_bool = RowFilter::compile("port + 1", &b.schema()).err().unwrap();
        assert!(
            not_bool.message.contains("must be a condition"),
            "{not_bool}"
        );
        let syntax = RowFilter::compile("port = = 1", &b.schema()).err().unwrap();
        assert_eq!(syntax.position.map(|p| p.0), Some(1), "{syntax}");
    }

    #[test]
    fn templates_render_paths_and_flag_missing_values() {
        let b = batch();
        let t = Template::parse("{event.action} on {port}", false).unwrap();
        assert_eq!(render(&t, &b, 0), ("ConsoleLogin on 443".to_string(), true));
        assert_eq!(render(&t, &b, 2), ("GetObject on ".to_string(), false));
        assert!(check_path(&b.schema(), "event.action").is_ok());
        assert!(check_path(&b.schema(), "event.nope")
            .unwrap_err()
            .contains("no field `nope`"));
        assert!(check_path(&b.schema(), "evnt")
            .unwrap_err()
            .contains("did you mean `event`"));
    }
}
