//! A run's rules, planned once: every enabled rule of the log table is one
//! [`PlannedRule`], Python (maybe behind a `filter:`) or a SQL `query:`,
//! kept in one list whose order is also the order of each batch's results.
//! `run` and `test` share it; SQL is planned again only when the enrichment
//! tables switch to a newer generation.

use super::rules::{located, RowFilter, SqlRule};
use crate::config::{ConfigError, DetectionDef, LogTable, RuleLogic};
use crate::enrichment::Tables;
use crate::logs::EventBatch;
use crate::outcome::MatchOutput;

/// How one rule runs.
pub enum RulePlan {
    /// `detect.py`, run by the `python` module. `index` is the rule's place
    /// among the plan's Python rules ([`RunPlan::python_rules`] order).
    Python {
        index: usize,
        filter: Option<RowFilter>,
    },
    /// A `query:` rule, executed per batch on the SQL runtime.
    Sql(Box<SqlRule>),
}

impl RulePlan {
    /// Plans `def` for log table `log` over `tables`.
    ///
    /// # Errors
    /// Every planning problem, located in the detection's files.
    pub fn new(
        runtime: &tokio::runtime::Runtime,
        def: &DetectionDef,
        index: usize,
        log: &LogTable,
        tables: &Tables,
    ) -> Result<Self, Vec<ConfigError>> {
        match &def.logic {
            RuleLogic::Sql { .. } => {
                SqlRule::compile(runtime, def, log, tables).map(|r| Self::Sql(Box::new(r)))
            }
            RuleLogic::Python { filter } => {
                let filter = match filter {
                    Some(sql) => Some(
                        RowFilter::compile(&sql.text, &log.schema.to_arrow())
                            .map_err(|e| vec![located(def, "filter", sql, &e)])?,
                    ),
                    None => None,
                };
                Ok(Self::Python { index, filter })
            }
        }
    }

    /// Runs the SQL part of the rule on `batch`: a filter's selection or a
    /// query's matches.
    pub fn evaluate(&self, runtime: &tokio::runtime::Runtime, batch: &EventBatch) -> RuleBatch {
        match self {
            Self::Python { index, filter } => {
                let (selection, filter_error) =
                    match filter.as_ref().map(|f| f.select(&batch.batch)) {
                        None => (None, None),
                        Some(Ok(rows)) => (Some(rows), None),
                        Some(Err(e)) => (None, Some(e)),
                    };
                RuleBatch::Python {
                    index: *index,
                    selection,
                    filter_error,
                }
            }
            Self::Sql(rule) => RuleBatch::Sql(rule.evaluate(runtime, batch)),
        }
    }
}

/// One rule and how it runs.
pub struct PlannedRule {
    pub def: DetectionDef,
    pub plan: RulePlan,
}

/// What one rule's SQL gave on one batch.
#[derive(Debug)]
pub enum RuleBatch {
    Python {
        index: usize,
        /// Rows passing the filter (`None`: no filter, or it failed and every
        /// row goes to `detect()`).
        selection: Option<Vec<u32>>,
        /// The filter failed on this batch.
        filter_error: Option<String>,
    },
    /// The query's matches, or why it failed on this batch.
    Sql(Result<Vec<MatchOutput>, String>),
}

/// Every rule of a run, in one order, with the runtime that executes the SQL.
pub struct RunPlan {
    runtime: tokio::runtime::Runtime,
    rules: Vec<PlannedRule>,
}

impl RunPlan {
    /// Plans every rule in `defs` for log table `log`.
    ///
    /// # Errors
    /// Every planning problem, located in the detection files.
    pub fn new(
        defs: &[&DetectionDef],
        log: &LogTable,
        tables: &Tables,
    ) -> Result<Self, Vec<ConfigError>> {
        let runtime = sql_runtime().map_err(|e| vec![ConfigError::new(&log.file, e)])?;
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(defs.len());
        let mut python = 0;
        for def in defs {
            match RulePlan::new(&runtime, def, python, log, tables) {
                Ok(plan) => {
                    python += usize::from(matches!(plan, RulePlan::Python { .. }));
                    rules.push(PlannedRule {
                        def: (*def).clone(),
                        plan,
                    });
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Self { runtime, rules })
        } else {
            Err(errors)
        }
    }

    pub fn rules(&self) -> &[PlannedRule] {
        &self.rules
    }

    /// The Python rules, in the order their `index` counts.
    pub fn python_rules(&self) -> Vec<&DetectionDef> {
        self.rules
            .iter()
            .filter(|r| matches!(r.plan, RulePlan::Python { .. }))
            .map(|r| &r.def)
            .collect()
    }

    /// Whether a newer table generation needs new plans (only queries read
    /// tables; filters see the batch alone).
    pub fn reads_tables(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.plan, RulePlan::Sql(_)))
    }

    /// Plans the SQL rules again over a newer generation of `tables`.
    ///
    /// # Errors
    /// A query no longer plans (a table's schema changed); the old plans stay.
    pub fn replan(&mut self, log: &LogTable, tables: &Tables) -> Result<(), Vec<ConfigError>> {
        let mut fresh = Vec::new();
        for (position, rule) in self.rules.iter().enumerate() {
            if let RulePlan::Sql(_) = rule.plan {
                let planned = SqlRule::compile(&self.runtime, &rule.def, log, tables)?;
                fresh.push((position, planned));
            }
        }
        for (position, planned) in fresh {
            self.rules[position].plan = RulePlan::Sql(Box::new(planned));
        }
        Ok(())
    }

    /// Runs every filter and query on `batch`; one result per rule, in
    /// [`RunPlan::rules`] order.
    pub fn evaluate(&self, batch: &EventBatch) -> Vec<RuleBatch> {
        self.rules
            .iter()
            .map(|r| r.plan.evaluate(&self.runtime, batch))
            .collect()
    }
}

/// The single-threaded runtime SQL detections execute on.
///
/// # Errors
/// The runtime cannot start.
pub fn sql_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start the SQL runtime: {e}"))
}
