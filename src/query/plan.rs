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
use crate::prefilter::{AtomCache, Derived};
use std::path::Path;
use std::sync::Arc;

/// Filters derived from the rules' code (`None`: off for this run).
#[derive(Debug, Clone, Copy)]
pub struct AutoFilter<'a> {
    /// `detections/_lib`, whose helpers the analysis follows.
    pub lib_dir: &'a Path,
    /// Send the events a derived filter drops to `detect()` anyway and
    /// report any it matches or raises on (`run --verify-filters`).
    pub verify: bool,
}

/// How one rule runs.
pub enum RulePlan {
    /// `detect.py`, run by the `python` module. `index` is the rule's place
    /// among the plan's Python rules ([`RunPlan::python_rules`] order).
    Python {
        index: usize,
        filter: Option<RowFilter>,
        /// The filter derived from `detect()`, when it narrows anything.
        derived: Option<Arc<Derived>>,
        verify: bool,
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
        auto: Option<AutoFilter<'_>>,
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
                let derived = auto
                    .filter(|_| def.auto_filter)
                    .map(|a| crate::python::derive_filter(def, a.lib_dir))
                    .filter(|d| d.applicable() && d.narrows())
                    .map(Arc::new);
                Ok(Self::Python {
                    index,
                    filter,
                    derived,
                    verify: auto.is_some_and(|a| a.verify),
                })
            }
        }
    }

    /// Runs the SQL part of the rule on `batch`: a filter's selection or a
    /// query's matches.
    pub fn evaluate(
        &self,
        runtime: &tokio::runtime::Runtime,
        batch: &EventBatch,
        tables: &Tables,
        cache: &mut AtomCache,
    ) -> RuleBatch {
        match self {
            Self::Python {
                index,
                filter,
                derived,
                verify,
            } => {
                let (selection, filter_error) =
                    match filter.as_ref().map(|f| f.select(&batch.batch)) {
                        None => (None, None),
                        Some(Ok(rows)) => (Some(rows), None),
                        Some(Err(e)) => (None, Some(e)),
                    };
                let mut out = RuleBatch::Python {
                    index: *index,
                    filtered_out: selection
                        .as_ref()
                        .map_or(0, |rows| (batch.len() - rows.len()) as u64),
                    selection,
                    filter_error,
                    auto_filtered_out: 0,
                    unverified: Vec::new(),
                };
                if let Some(derived) = derived {
                    out.apply_derived(&derived.keep_shared(batch, tables, cache), *verify);
                }
                out
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
        /// Events the derived filter dropped.
        auto_filtered_out: u64,
        /// Events the hand-written `filter:` dropped of those the derived
        /// one kept.
        filtered_out: u64,
        /// With `--verify-filters`: rows the derived filter would drop,
        /// sent to `detect()` anyway to check that it rejects them.
        unverified: Vec<u32>,
    },
    /// The query's matches, or why it failed on this batch.
    Sql(Result<Vec<MatchOutput>, String>),
}

impl RuleBatch {
    /// Narrows a Python rule's selection by the derived filter's `keep`
    /// (or, verifying, records what it would drop).
    fn apply_derived(&mut self, keep: &arrow::buffer::BooleanBuffer, verify: bool) {
        let Self::Python {
            selection,
            auto_filtered_out,
            filtered_out,
            unverified,
            ..
        } = self
        else {
            return;
        };
        *auto_filtered_out = (keep.len() - keep.count_set_bits()) as u64;
        if let Some(rows) = selection.as_ref() {
            // The hand-written filter's count covers only what the derived
            // one kept.
            let kept_by_both = rows.iter().filter(|&&r| keep.value(r as usize)).count();
            *filtered_out = (keep.count_set_bits() - kept_by_both) as u64;
        }
        if verify {
            *unverified = (0..keep.len())
                .filter(|&i| !keep.value(i))
                .map(|i| i as u32)
                .collect();
            return;
        }
        *selection = Some(match selection.take() {
            Some(rows) => rows
                .into_iter()
                .filter(|&r| keep.value(r as usize))
                .collect(),
            None => keep.set_indices().map(|i| i as u32).collect(),
        });
    }
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
        auto: Option<AutoFilter<'_>>,
    ) -> Result<Self, Vec<ConfigError>> {
        let runtime = sql_runtime().map_err(|e| vec![ConfigError::new(&log.file, e)])?;
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(defs.len());
        let mut python = 0;
        for def in defs {
            match RulePlan::new(&runtime, def, python, log, tables, auto) {
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

    /// The event paths the derived filters read: the columns the reader
    /// must decode for them.
    pub fn derived_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .rules
            .iter()
            .filter_map(|r| match &r.plan {
                RulePlan::Python {
                    derived: Some(d), ..
                } => Some(d),
                _ => None,
            })
            .flat_map(|d| d.paths().filter(|p| !p.is_empty()).map(str::to_string))
            .collect();
        paths.sort();
        paths.dedup();
        paths
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
    pub fn evaluate(&self, batch: &EventBatch, tables: &Tables) -> Vec<RuleBatch> {
        let mut cache = AtomCache::default();
        self.rules
            .iter()
            .map(|r| r.plan.evaluate(&self.runtime, batch, tables, &mut cache))
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
