//! What a `query` statement needs, read from its SQL before anything is
//! loaded: the tables it names (so `SELECT 1` reads no run and syncs no
//! table) and, for `alerts` and `matches`, the runs its `run_id`
//! predicates can keep (so a question about one run reads one run).
//!
//! Pruning is only ever a superset: DataFusion still applies every
//! predicate to the rows read, so a run kept here that the query rejects
//! costs time, never a wrong answer. A run is left out only when a
//! null-rejecting `AND` conjunct of the `WHERE` of the one `SELECT` that
//! reads the table rules it out.

use super::error::SqlError;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    visit_relations, BinaryOperator, Expr, ObjectName, SetExpr, Statement, TableFactor, Value,
};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// The column of `alerts` and `matches` that names the run.
pub const RUN_ID: &str = "run_id";

/// One parsed `query` statement.
pub struct Parsed {
    statement: DfStatement,
    /// The tables it names (common table expressions left out).
    references: Vec<datafusion::common::TableReference>,
}

impl Parsed {
    /// Parses `sql` as `query` will run it.
    ///
    /// # Errors
    /// SQL that does not parse, located in the SQL text.
    pub fn new(sql: &str) -> Result<Self, SqlError> {
        let state = super::session(1).state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| SqlError::from_datafusion(&e, sql))?;
        let references = state
            .resolve_table_references(&statement)
            .map_err(|e| SqlError::from_datafusion(&e, sql))?;
        Ok(Self {
            statement,
            references,
        })
    }

    /// The tables the statement reads, by their last name part; `None`
    /// when it may read any (`SHOW TABLES`, `DESCRIBE`, information_schema).
    pub fn tables(&self) -> Option<HashSet<String>> {
        let DfStatement::Statement(inner) = &self.statement else {
            return None;
        };
        if !matches!(inner.as_ref(), Statement::Query(_)) {
            return None;
        }
        let mut names = HashSet::new();
        for reference in &self.references {
            if reference
                .schema()
                .is_some_and(|s| s.eq_ignore_ascii_case("information_schema"))
            {
                return None;
            }
            names.insert(reference.table().to_string());
        }
        Some(names)
    }

    /// Which run ids `table` needs: those the `run_id` predicates of the
    /// statement's `WHERE` allow, when the table is read exactly once.
    pub fn runs(&self, table: &str) -> RunFilter {
        let DfStatement::Statement(inner) = &self.statement else {
            return RunFilter::default();
        };
        let Statement::Query(query) = inner.as_ref() else {
            return RunFilter::default();
        };
        let mut reads = 0;
        let _ = visit_relations(inner.as_ref(), |name: &ObjectName| {
            if last_part(&name.to_string()) == table {
                reads += 1;
            }
            ControlFlow::<()>::Continue(())
        });
        let SetExpr::Select(select) = query.body.as_ref() else {
            return RunFilter::default();
        };
        if reads != 1 {
            return RunFilter::default();
        }
        let factors: Vec<&TableFactor> = select
            .from
            .iter()
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
            .collect();
        let Some(qualifier) = factors.iter().find_map(|f| match f {
            TableFactor::Table { name, alias, .. } if last_part(&name.to_string()) == table => {
                Some(
                    alias
                        .as_ref()
                        .map_or_else(|| table.to_string(), |a| a.name.value.clone()),
                )
            }
            _ => None,
        }) else {
            return RunFilter::default();
        };
        let alone = factors.len() == 1;
        let mut filter = RunFilter::default();
        if let Some(selection) = &select.selection {
            for conjunct in conjuncts(selection) {
                if let Some(condition) = condition(conjunct, &qualifier, alone) {
                    filter.conditions.push(condition);
                }
            }
        }
        filter
    }
}

/// Whether a query whose SQL is `sql` may read column `column` of a table
/// it names: `false` only when the name appears nowhere in the text and
/// nothing can expand to every column (a `*` other than `count(*)`, a
/// `NATURAL` join). Lets `query` skip decoding large columns (a run's
/// `events`) that a query cannot see.
pub fn may_read_column(sql: &str, column: &str) -> bool {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let compact: String = sql.chars().filter(|c| !c.is_whitespace()).collect();
    let without_counts = compact.to_ascii_lowercase().replace("count(*)", "");
    if without_counts.contains('*') {
        return true;
    }
    words(sql)
        .iter()
        .any(|w| w == column || w.eq_ignore_ascii_case("natural"))
}

/// The last part of a possibly qualified name, unquoted.
fn last_part(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches('"')
        .to_string()
}

/// The `AND` conjuncts of `expr`.
fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut out = conjuncts(left);
            out.extend(conjuncts(right));
            out
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// Whether `expr` is the run-id column of the table read as `qualifier`
/// (unqualified only when the `SELECT` reads that table alone).
fn is_run_id(expr: &Expr, qualifier: &str, alone: bool) -> bool {
    match expr {
        Expr::Identifier(ident) => alone && ident.value == RUN_ID,
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [q, column] => q.value == qualifier && column.value == RUN_ID,
            _ => false,
        },
        Expr::Nested(inner) => is_run_id(inner, qualifier, alone),
        _ => false,
    }
}

/// A string literal's text.
fn text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        Expr::Nested(inner) => text(inner),
        _ => None,
    }
}

fn condition(expr: &Expr, qualifier: &str, alone: bool) -> Option<Condition> {
    let run_id = |e: &Expr| is_run_id(e, qualifier, alone);
    match expr {
        Expr::BinaryOp { left, op, right } => {
            let (op, value) = if run_id(left) {
                (op.clone(), text(right)?)
            } else if run_id(right) {
                (flip(op)?, text(left)?)
            } else {
                return None;
            };
            Some(match op {
                BinaryOperator::Eq => Condition::In(vec![value]),
                BinaryOperator::Gt => Condition::Above(value, false),
                BinaryOperator::GtEq => Condition::Above(value, true),
                BinaryOperator::Lt => Condition::Below(value, false),
                BinaryOperator::LtEq => Condition::Below(value, true),
                _ => return None,
            })
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if run_id(expr) => Some(Condition::In(
            list.iter().map(text).collect::<Option<Vec<_>>>()?,
        )),
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if run_id(expr) => Some(Condition::Between(text(low)?, text(high)?)),
        Expr::Nested(inner) => condition(inner, qualifier, alone),
        _ => None,
    }
}

/// `op` with its sides swapped (`'x' < run_id` is `run_id > 'x'`).
fn flip(op: &BinaryOperator) -> Option<BinaryOperator> {
    Some(match op {
        BinaryOperator::Eq => BinaryOperator::Eq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        _ => return None,
    })
}

/// One `run_id` predicate, compared as SQL compares text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    In(Vec<String>),
    /// Above the value (or equal, when `true`).
    Above(String, bool),
    Below(String, bool),
    Between(String, String),
}

/// The runs a table must read: every run that meets all conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    conditions: Vec<Condition>,
}

impl RunFilter {
    pub fn keeps(&self, id: &str) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::In(values) => values.iter().any(|v| v == id),
            Condition::Above(v, equal) => id > v.as_str() || (*equal && id == v),
            Condition::Below(v, equal) => id < v.as_str() || (*equal && id == v),
            Condition::Between(low, high) => id >= low.as_str() && id <= high.as_str(),
        })
    }

    /// Whether it keeps every run.
    #[cfg(test)]
    pub fn is_all(&self) -> bool {
        self.conditions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(sql: &str, table: &str) -> RunFilter {
        Parsed::new(sql).unwrap().runs(table)
    }

    #[test]
    fn names_only_the_tables_a_query_reads() {
        let tables = |sql: &str| Parsed::new(sql).unwrap().tables();
        assert_eq!(tables("SELECT 1"), Some(HashSet::new()));
        assert_eq!(
            tables("SELECT a.rule FROM alerts a JOIN known_ip_info k ON a.dedupe = k.ip"),
            Some(["alerts".to_string(), "known_ip_info".to_string()].into())
        );
        assert_eq!(
            tables("WITH x AS (SELECT * FROM matches) SELECT count(*) FROM x"),
            Some(["matches".to_string()].into())
        );
        assert_eq!(tables("SHOW TABLES"), None);
        assert_eq!(tables("SELECT * FROM information_schema.tables"), None);
    }

    #[test]
    fn run_id_predicates_prune_runs() {
        let f = runs(
            "SELECT * FROM alerts WHERE run_id = 'b' AND activated",
            "alerts",
        );
        assert!(f.keeps("b") && !f.keeps("a"));
        let f = runs(
            "SELECT * FROM alerts a WHERE a.run_id >= '20261201' AND a.run_id < '20261202'",
            "alerts",
        );
        assert!(f.keeps("20261201T101010.000Z"));
        assert!(!f.keeps("20261130T235959.000Z") && !f.keeps("20261202T000000.000Z"));
        let f = runs("SELECT * FROM matches WHERE '2' < run_id", "matches");
        assert!(f.keeps("3") && !f.keeps("1"));
        let f = runs(
            "SELECT * FROM matches WHERE run_id IN ('x', 'y')",
            "matches",
        );
        assert!(f.keeps("y") && !f.keeps("z"));
        let f = runs(
            "SELECT * FROM matches WHERE run_id BETWEEN 'b' AND 'c'",
            "matches",
        );
        assert!(f.keeps("b") && !f.keeps("d"));
    }

    #[test]
    fn columns_a_query_cannot_see_are_not_read() {
        let sql = "SELECT rule, count(*) FROM alerts GROUP BY rule";
        assert!(!may_read_column(sql, "events"));
        assert!(may_read_column(sql, "rule"));
        assert!(may_read_column("SELECT * FROM alerts", "events"));
        assert!(may_read_column("SELECT a.* FROM alerts a", "events"));
        assert!(may_read_column(
            "SELECT match_count * 2 FROM alerts",
            "events"
        ));
        assert!(may_read_column("SELECT e.events FROM alerts e", "events"));
        assert!(may_read_column(
            "SELECT 1 FROM alerts NATURAL JOIN x",
            "events"
        ));
    }

    #[test]
    fn anything_not_surely_restrictive_keeps_every_run() {
        for (sql, table) in [
            (
                "SELECT * FROM alerts WHERE run_id = 'b' OR activated",
                "alerts",
            ),
            ("SELECT * FROM alerts WHERE NOT run_id = 'b'", "alerts"),
            ("SELECT * FROM alerts WHERE run_id NOT IN ('b')", "alerts"),
            // Unqualified in a join: whose run_id is it?
            (
                "SELECT * FROM alerts a JOIN matches m ON a.rule = m.rule WHERE run_id = 'b'",
                "alerts",
            ),
            // The predicate is on the other table.
            (
                "SELECT * FROM alerts a JOIN matches m ON a.rule = m.rule WHERE m.run_id = 'b'",
                "alerts",
            ),
            // Read twice: the second read has no predicate.
            (
                "SELECT * FROM alerts WHERE run_id = 'b' UNION ALL SELECT * FROM alerts",
                "alerts",
            ),
            (
                "SELECT * FROM (SELECT * FROM alerts) x WHERE run_id = 'b'",
                "alerts",
            ),
        ] {
            assert!(runs(sql, table).is_all(), "{sql}");
        }
    }
}
