//! SQL on DataFusion over the data Ravenwatch already holds as Arrow.
//!
//! `ravenwatch query` answers ad-hoc questions on the same enrichment
//! snapshots the detections use (registered through [`SnapshotTable`], never
//! copied), on past runs' `alerts` and `matches`, and on log files decoded by
//! the same readers as `run`. Detections use SQL in two ways
//! ([`RunPlan`]): a `query:` rule whose result rows are matches, and
//! a `filter:` predicate that removes events before a Python rule sees
//! them. Both are planned once and executed per batch.

mod command;
mod error;
mod plan;
mod prune;
mod rules;
mod tables;

pub use command::{
    run_incomplete_key, run_location_key, run_output, run_query, state_run_id, write_result,
    OutputFormat, QueryError, QueryOptions, QueryResult, RunOutput, ALERT_STATE_KEY,
    RUN_INCOMPLETE, RUN_LOCATION,
};
pub use error::SqlError;
pub use plan::{sql_runtime, AutoFilter, PlannedRule, RuleBatch, RulePlan, RunPlan};
pub use prune::Parsed;
pub use rules::{located, RowFilter, SqlRule};
pub use tables::{SnapshotTable, ROW_COLUMN};

use crate::enrichment::Tables;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

/// A session with our conventions: identifiers are case-sensitive as
/// written (log fields such as `eventName` need no quoting) and errors
/// carry spans.
pub(crate) fn session(partitions: usize) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_information_schema(true);
    let options = config.options_mut();
    options.sql_parser.collect_spans = true;
    options.sql_parser.enable_ident_normalization = false;
    SessionContext::new_with_config(config)
}

/// Queries read; they never create, insert or set anything.
pub(crate) fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Registers every row table of `tables` under its name. MMDB tables are
/// databases, not rows, and stay out of SQL.
pub(crate) fn register_enrichment(
    ctx: &SessionContext,
    tables: &Tables,
) -> datafusion::error::Result<()> {
    for (name, table) in tables {
        if !table.is_mmdb() {
            ctx.register_table(
                name.as_str(),
                Arc::new(SnapshotTable::new(Arc::clone(table))),
            )?;
        }
    }
    Ok(())
}

/// Explains a missing table that is an MMDB database.
pub(crate) fn with_mmdb_hint(mut err: SqlError, tables: &Tables) -> SqlError {
    if err.message.contains("not found") {
        for (name, table) in tables {
            if table.is_mmdb() && err.message.contains(&format!("{name}'")) {
                err.message.push_str(&format!(
                    "; `{name}` is an MMDB (GeoIP) table, which SQL cannot read: use `ravenwatch enrichment get {name} IP` or an `enrich:` selector"
                ));
            }
        }
    }
    err
}
