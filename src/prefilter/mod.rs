//! Filters derived from a rule's own code. The `python` module reads
//! `detect(r)` (its `ast`) into a [`Derived`]: a formula over [`Atom`]s that
//! is true for every event on which `detect` could return a truthy value or
//! raise. It is planned once per rule and evaluated on whole batches here
//! ([`Derived::keep`]), before any Python call, so events a rule cannot
//! match never cross into Python.
//!
//! Each atom is evaluated per event with Python's semantics to the set of
//! outcomes it may have (truthy, falsy, raises); an event whose value the
//! engine cannot decide (a type it does not model, a path it holds no column
//! for) may have all three, so it is kept. See ARCHITECTURE.md.

mod eval;
mod parse;

pub use eval::AtomCache;

use serde_json::Value;
use std::fmt;

/// One rule's derived filter, with what the analysis found on the way.
#[derive(Debug, Clone)]
pub struct Derived {
    /// Keep an event when this is true.
    pub keep: Formula,
    pub atoms: Vec<Atom>,
    /// Each atom's canonical text: equal atoms of different rules share
    /// their outcomes on a batch ([`AtomCache`]).
    pub keys: Vec<String>,
    /// No global writes, I/O, clock or randomness in `detect` or what it calls.
    pub pure: bool,
    /// Why the rule is impure (empty when pure).
    pub impure: Vec<Note>,
    /// Impure, but only past its first statements: `keep` holds for every
    /// event that reaches an effect, so the filter still applies.
    pub guarded: bool,
    /// Constructs that fell back to "keep the event", and why.
    pub fallbacks: Vec<Note>,
}

/// A place in the rule's code and what it says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: String,
    pub line: usize,
    pub why: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.why)
    }
}

/// Which outcome of an atom a formula leaf asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum May {
    /// The atom may be truthy.
    True,
    /// The atom may be falsy.
    False,
    /// Evaluating the atom may raise.
    Raise,
}

impl May {
    fn bit(self) -> u8 {
        match self {
            Self::True => TRUE,
            Self::False => FALSE,
            Self::Raise => RAISE,
        }
    }
}

/// Outcome bits of one atom on one event; all three when undecided.
const TRUE: u8 = 1;
const FALSE: u8 = 2;
const RAISE: u8 = 4;
const UNKNOWN: u8 = TRUE | FALSE | RAISE;

#[derive(Debug, Clone, PartialEq)]
pub enum Formula {
    Const(bool),
    And(Vec<Formula>),
    Or(Vec<Formula>),
    /// Atom `.0` may have outcome `.1`.
    May(usize, May),
}

/// A comparison operator with Python's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What a literal collection on the right of `in` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionKind {
    /// A set or dict (keys): membership needs a hashable value.
    Hashed,
    /// A tuple or list: membership by `==`, never raises.
    Sequence,
}

/// A value computed per event.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueExpr {
    /// `r.deepget(path, default)` / `r.get(key, default)`; with `item`,
    /// `r[key]` (a missing undeclared key raises).
    Field {
        path: String,
        default: Value,
        item: bool,
        /// Panther's event: a key missing at its exact path may be found
        /// by a case-insensitive match, so a missing value is undecided.
        ci: bool,
    },
    Lower(Box<ValueExpr>),
    Upper(Box<ValueExpr>),
    /// `value or literal`.
    OrElse(Box<ValueExpr>, Value),
}

/// A test evaluated per event.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    Truthy(ValueExpr),
    IsNone(ValueExpr),
    Cmp(CmpOp, ValueExpr, Value),
    /// `needle in value` (substring of a str, member of a list).
    Contains {
        needle: Value,
        value: ValueExpr,
    },
    /// `value in (literal collection)`.
    InLiteral {
        value: ValueExpr,
        kind: CollectionKind,
        strings: std::collections::HashSet<String>,
        others: Vec<Value>,
    },
    /// `value in "literal text"`.
    InText {
        value: ValueExpr,
        text: String,
    },
    /// `value.startswith(items)` or, with `end`, `endswith`.
    Affix {
        value: ValueExpr,
        items: Vec<String>,
        end: bool,
    },
    /// `"key" in r`.
    Has(String),
    /// `table.get(key) is not None`: a semi-join on the table's key index.
    TableHas {
        table: String,
        key: ValueExpr,
    },
}

impl Derived {
    /// A filter that keeps every event.
    pub fn keep_all() -> Self {
        Self {
            keep: Formula::Const(true),
            atoms: Vec::new(),
            keys: Vec::new(),
            pure: true,
            impure: Vec::new(),
            guarded: false,
            fallbacks: Vec::new(),
        }
    }

    /// Whether the filter may be applied: the rule is pure, or its effects
    /// come only after what the filter keeps.
    pub fn applicable(&self) -> bool {
        self.pure || self.guarded
    }

    /// Whether the filter can drop anything (it is not just "keep").
    pub fn narrows(&self) -> bool {
        self.keep != Formula::Const(true)
    }

    /// The formula as SQL-like text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write_formula(&self.keep, &mut out, false);
        out
    }

    fn write_formula(&self, f: &Formula, out: &mut String, nested: bool) {
        match f {
            Formula::Const(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
            Formula::And(xs) | Formula::Or(xs) => {
                let sep = if matches!(f, Formula::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                if nested {
                    out.push('(');
                }
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    self.write_formula(x, out, true);
                }
                if nested {
                    out.push(')');
                }
            }
            Formula::May(i, may) => out.push_str(&self.atoms[*i].text(*may)),
        }
    }
}

fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

impl fmt::Display for ValueExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Panther's case-insensitive reads: a missing value is undecided.
            Self::Field { path, ci: true, .. } => write!(f, "event.{path}"),
            Self::Field {
                path,
                default,
                item,
                ..
            } => {
                if *item {
                    write!(f, "r['{path}']")
                } else if default.is_null() {
                    f.write_str(path)
                } else {
                    write!(f, "coalesce({path}, {})", literal(default))
                }
            }
            Self::Lower(v) => write!(f, "lower({v})"),
            Self::Upper(v) => write!(f, "upper({v})"),
            Self::OrElse(v, lit) => write!(f, "({v} OR ELSE {})", literal(lit)),
        }
    }
}

impl ValueExpr {
    /// The event path the value is computed from.
    pub fn path(&self) -> &str {
        match self {
            Self::Field { path, .. } => path,
            Self::Lower(inner) | Self::Upper(inner) | Self::OrElse(inner, _) => inner.path(),
        }
    }
}

impl Derived {
    /// The event paths the filter's atoms read.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.atoms.iter().map(|a| match a {
            Atom::Has(path) => path.as_str(),
            _ => a.value().map_or("", ValueExpr::path),
        })
    }
}

impl Atom {
    /// The value the atom tests (`None` for `"key" in r`).
    pub fn value(&self) -> Option<&ValueExpr> {
        match self {
            Self::Truthy(v)
            | Self::IsNone(v)
            | Self::Cmp(_, v, _)
            | Self::Contains { value: v, .. }
            | Self::InLiteral { value: v, .. }
            | Self::InText { value: v, .. }
            | Self::Affix { value: v, .. }
            | Self::TableHas { key: v, .. } => Some(v),
            Self::Has(_) => None,
        }
    }

    /// The leaf "this atom may have outcome `may`" as text.
    fn text(&self, may: May) -> String {
        let positive = match (self, may) {
            (Self::Cmp(op, v, lit), May::True | May::False) => {
                let flip = may == May::False;
                let symbol = match (op, flip) {
                    (CmpOp::Eq, false) | (CmpOp::Ne, true) => "=",
                    (CmpOp::Ne, false) | (CmpOp::Eq, true) => "<>",
                    (CmpOp::Lt, false) | (CmpOp::Ge, true) => "<",
                    (CmpOp::Le, false) | (CmpOp::Gt, true) => "<=",
                    (CmpOp::Gt, false) | (CmpOp::Le, true) => ">",
                    (CmpOp::Ge, false) | (CmpOp::Lt, true) => ">=",
                };
                return format!("{v} {symbol} {}", literal(lit));
            }
            (Self::IsNone(v), May::True) => return format!("{v} IS NULL"),
            (Self::IsNone(v), May::False) => return format!("{v} IS NOT NULL"),
            (Self::Truthy(v), _) => format!("{v} IS TRUTHY"),
            (Self::IsNone(v), _) => format!("{v} IS NULL"),
            (Self::Cmp(op, v, lit), _) => {
                let symbol = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("{v} {symbol} {}", literal(lit))
            }
            (Self::Contains { needle, value }, _) => format!("{} IN {value}", literal(needle)),
            (
                Self::InLiteral {
                    value,
                    strings,
                    others,
                    ..
                },
                _,
            ) => {
                let mut items: Vec<String> = strings
                    .iter()
                    .map(|s| literal(&Value::from(s.as_str())))
                    .collect();
                items.sort();
                items.extend(others.iter().map(literal));
                if items.len() > 6 {
                    let n = items.len();
                    items.truncate(5);
                    items.push(format!("… {n} values"));
                }
                format!("{value} IN ({})", items.join(", "))
            }
            (Self::InText { value, text }, _) => {
                format!("{value} IN {}", literal(&Value::from(text.as_str())))
            }
            (Self::Affix { value, items, end }, _) => {
                let f = if *end { "ends_with" } else { "starts_with" };
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| format!("{f}({value}, {})", literal(&Value::from(i.as_str()))))
                    .collect();
                if parts.len() == 1 {
                    parts.into_iter().next().unwrap_or_default()
                } else {
                    format!("({})", parts.join(" OR "))
                }
            }
            (Self::Has(path), _) => format!("{path} IS PRESENT"),
            (Self::TableHas { table, key }, _) => format!("{key} IN {table}"),
        };
        match may {
            May::True => positive,
            May::False => format!("NOT {positive}"),
            May::Raise => format!("RAISES({positive})"),
        }
    }
}

pub use parse::ParseError;
