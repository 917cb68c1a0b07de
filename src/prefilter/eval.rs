//! Evaluating a [`Derived`] filter on a batch: selection-vector style (each
//! part of an `AND` sees only the events the parts before it kept), each
//! atom computed at most once per event, with Python's semantics for the
//! values a rule would see (declared column → column of a path rules read;
//! anything else is undecided).

use super::{
    Atom, CmpOp, CollectionKind, Derived, Formula, ValueExpr, FALSE, RAISE, TRUE, UNKNOWN,
};
use crate::enrichment::{KeyPart, Tables};
use crate::logs::{EventBatch, ReadColumn};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
use serde_json::Value;
use std::borrow::Cow;

impl Derived {
    /// Which events of `batch` to keep (bit set: keep). `tables` are the
    /// generation the batch is evaluated against.
    pub fn keep(&self, batch: &EventBatch, tables: &Tables) -> BooleanBuffer {
        let rows = batch.len();
        let all = BooleanBuffer::new_set(rows);
        if !self.narrows() {
            return all;
        }
        let mut state = State {
            batch,
            tables,
            outcomes: vec![None; self.atoms.len()],
        };
        state.formula(self, &self.keep, &all)
    }
}

struct State<'a> {
    batch: &'a EventBatch,
    tables: &'a Tables,
    /// Per atom, per event: outcome bits, 0 while not computed.
    outcomes: Vec<Option<Vec<u8>>>,
}

impl State<'_> {
    /// Events of `mask` for which `f` holds (a subset of `mask`).
    fn formula(&mut self, derived: &Derived, f: &Formula, mask: &BooleanBuffer) -> BooleanBuffer {
        match f {
            Formula::Const(true) => mask.clone(),
            Formula::Const(false) => BooleanBuffer::new_unset(mask.len()),
            Formula::And(parts) => {
                let mut current = mask.clone();
                for part in parts {
                    if current.count_set_bits() == 0 {
                        break;
                    }
                    current = self.formula(derived, part, &current);
                }
                current
            }
            Formula::Or(parts) => {
                let mut found = BooleanBuffer::new_unset(mask.len());
                let mut rest = mask.clone();
                for part in parts {
                    if rest.count_set_bits() == 0 {
                        break;
                    }
                    let hit = self.formula(derived, part, &rest);
                    rest = &rest & &!&hit;
                    found = &found | &hit;
                }
                found
            }
            Formula::May(atom, may) => {
                let outcomes = self.atom(derived, *atom, mask);
                let bit = may.bit();
                let mut out = arrow::array::BooleanBufferBuilder::new(mask.len());
                out.append_n(mask.len(), false);
                for row in mask.set_indices() {
                    if outcomes[row] & bit != 0 {
                        out.set_bit(row, true);
                    }
                }
                out.finish()
            }
        }
    }

    /// Outcomes of atom `index`, computed for every event of `mask` not
    /// computed before.
    fn atom(&mut self, derived: &Derived, index: usize, mask: &BooleanBuffer) -> &[u8] {
        let rows = mask.len();
        let mut outcomes = self.outcomes[index].take().unwrap_or_else(|| vec![0; rows]);
        let atom = &derived.atoms[index];
        let eval = AtomEval::new(self.batch, self.tables, atom);
        for row in mask.set_indices() {
            if outcomes[row] == 0 {
                outcomes[row] = eval.outcome(row);
            }
        }
        self.outcomes[index] = Some(outcomes);
        self.outcomes[index].as_deref().unwrap_or_default()
    }
}

/// A value as Python would see it, as far as the engine can tell.
#[derive(Debug, Clone)]
enum Py<'a> {
    None,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A list from an Arrow list column.
    ArrowList(ArrayRef),
    /// A list from JSON (an event's text or a literal).
    JsonList(Cow<'a, [Value]>),
    /// A dict; whether it has members.
    Dict(bool),
    /// A value the engine does not model (datetime, ...): undecided.
    Unknown,
}

/// Evaluating `value` definitely raises.
struct Raises;

/// Where a path's values come from in one batch.
enum Source<'a> {
    Read(&'a ReadColumn),
    /// The declared column and every struct above it (their nulls hide it).
    Declared {
        above: Vec<&'a dyn Array>,
        leaf: &'a dyn Array,
    },
    /// The path is declared, but a struct on the way lacks it.
    DeclaredAbsent {
        above: Vec<&'a dyn Array>,
    },
    /// Neither declared nor read as a column: only the event's text has it.
    Text,
}

fn source<'a>(batch: &'a EventBatch, path: &str) -> Source<'a> {
    if let Some(column) = batch.read.get(path) {
        return Source::Read(column);
    }
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return Source::Text;
    };
    let Some(mut array) = batch.batch.column_by_name(first).map(|c| c.as_ref()) else {
        return Source::Text;
    };
    let mut above = Vec::new();
    for part in parts {
        let DataType::Struct(_) = array.data_type() else {
            return Source::Text;
        };
        above.push(array);
        match array.as_struct().column_by_name(part) {
            Some(child) => array = child.as_ref(),
            None => return Source::DeclaredAbsent { above },
        }
    }
    Source::Declared { above, leaf: array }
}

/// The value of one path per event: `None` when missing or null (what
/// `deepget` turns into its default); `Err` when the engine cannot tell.
fn path_value<'a>(source: &'a Source<'a>, row: usize, item: bool) -> Result<Option<Py<'a>>, ()> {
    match source {
        Source::Read(column) => {
            if column.is_null(row) {
                // `r[key]` raises for a missing key and gives None for a
                // null one; the column does not tell them apart.
                return if item { Err(()) } else { Ok(None) };
            }
            Ok(Some(match column {
                ReadColumn::Typed(array) => scalar(array.as_ref(), row),
                ReadColumn::Json(texts) => match serde_json::from_str::<Value>(texts.value(row)) {
                    Ok(v) => from_json_owned(v),
                    Err(_) => return Err(()),
                },
            }))
        }
        Source::Declared { above, leaf } => {
            if above.iter().any(|a| a.is_null(row)) || leaf.is_null(row) {
                return Ok(None);
            }
            Ok(Some(scalar(*leaf, row)))
        }
        // Python reads such a member from the event's text when the struct
        // is present.
        Source::DeclaredAbsent { above } => {
            if above.iter().any(|a| a.is_null(row)) {
                Ok(None)
            } else {
                Err(())
            }
        }
        Source::Text => Err(()),
    }
}

fn scalar(array: &dyn Array, row: usize) -> Py<'_> {
    if array.is_null(row) {
        return Py::None;
    }
    match array.data_type() {
        DataType::Utf8 => Py::Str(Cow::Borrowed(array.as_string::<i32>().value(row))),
        DataType::LargeUtf8 => Py::Str(Cow::Borrowed(array.as_string::<i64>().value(row))),
        DataType::Utf8View => Py::Str(Cow::Borrowed(array.as_string_view().value(row))),
        DataType::Boolean => Py::Bool(array.as_boolean().value(row)),
        DataType::Int32 => Py::Int(i64::from(array.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => Py::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => Py::Float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => Py::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::List(_) => Py::ArrowList(array.as_list::<i32>().value(row)),
        DataType::Struct(fields) => Py::Dict(!fields.is_empty()),
        DataType::Null => Py::None,
        _ => Py::Unknown,
    }
}

fn from_json(v: &Value) -> Py<'_> {
    match v {
        Value::Null => Py::None,
        Value::Bool(b) => Py::Bool(*b),
        Value::Number(n) => number(n),
        Value::String(s) => Py::Str(Cow::Borrowed(s)),
        Value::Array(a) => Py::JsonList(Cow::Borrowed(a)),
        Value::Object(o) => Py::Dict(!o.is_empty()),
    }
}

fn from_json_owned(v: Value) -> Py<'static> {
    match v {
        Value::String(s) => Py::Str(Cow::Owned(s)),
        Value::Array(a) => Py::JsonList(Cow::Owned(a)),
        other => match from_json(&other) {
            Py::None => Py::None,
            Py::Bool(b) => Py::Bool(b),
            Py::Int(i) => Py::Int(i),
            Py::Float(f) => Py::Float(f),
            Py::Dict(d) => Py::Dict(d),
            _ => Py::Unknown,
        },
    }
}

fn number(n: &serde_json::Number) -> Py<'static> {
    if let Some(i) = n.as_i64() {
        Py::Int(i)
    } else if n.is_f64() {
        n.as_f64().map_or(Py::Unknown, Py::Float)
    } else {
        Py::Unknown // an int beyond i64
    }
}

/// Python truthiness; `None` when undecided.
fn truthy(v: &Py<'_>) -> Option<bool> {
    Some(match v {
        Py::None => false,
        Py::Str(s) => !s.is_empty(),
        Py::Int(i) => *i != 0,
        Py::Float(f) => *f != 0.0,
        Py::Bool(b) => *b,
        Py::ArrowList(a) => !a.is_empty(),
        Py::JsonList(a) => !a.is_empty(),
        Py::Dict(nonempty) => *nonempty,
        Py::Unknown => return None,
    })
}

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

fn num(v: &Py<'_>) -> Option<Num> {
    match v {
        Py::Int(i) => Some(Num::I(*i)),
        Py::Float(f) => Some(Num::F(*f)),
        Py::Bool(b) => Some(Num::I(i64::from(*b))),
        _ => None,
    }
}

fn lit_num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::I(i64::from(*b))),
        Value::Number(n) => match number(n) {
            Py::Int(i) => Some(Num::I(i)),
            Py::Float(f) => Some(Num::F(f)),
            _ => None,
        },
        _ => None,
    }
}

fn num_cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) => int_float_cmp(x, y),
        (Num::F(x), Num::I(y)) => int_float_cmp(y, x).map(std::cmp::Ordering::reverse),
    }
}

/// Exact comparison of an int with a float, as Python does it.
fn int_float_cmp(i: i64, f: f64) -> Option<std::cmp::Ordering> {
    if f.is_nan() {
        return None;
    }
    // Beyond ±2^63 the float decides; inside, compare without rounding.
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(std::cmp::Ordering::Less);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(std::cmp::Ordering::Greater);
    }
    let whole = f.trunc();
    let t = whole as i64;
    match i.cmp(&t) {
        std::cmp::Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

/// `a == lit` in Python; `None` when undecided.
fn py_eq(a: &Py<'_>, lit: &Value) -> Option<bool> {
    match (a, lit) {
        (Py::Unknown, _) => None,
        (Py::None, Value::Null) => Some(true),
        (Py::None, _) | (_, Value::Null) => Some(false),
        (Py::Str(s), Value::String(l)) => Some(s.as_ref() == l),
        (Py::Str(_), _) | (_, Value::String(_)) => Some(false),
        (Py::ArrowList(_) | Py::JsonList(_), Value::Array(_)) | (Py::Dict(_), Value::Object(_)) => {
            None
        }
        (Py::ArrowList(_) | Py::JsonList(_) | Py::Dict(_), _)
        | (_, Value::Array(_) | Value::Object(_)) => Some(false),
        _ => match (num(a), lit_num(lit)) {
            (Some(x), Some(y)) => Some(num_cmp(x, y) == Some(std::cmp::Ordering::Equal)),
            _ => None,
        },
    }
}

fn bits(b: Option<bool>) -> u8 {
    match b {
        Some(true) => TRUE,
        Some(false) => FALSE,
        None => UNKNOWN,
    }
}

struct AtomEval<'a> {
    atom: &'a Atom,
    tables: &'a Tables,
    /// Sources of the atom's paths, resolved once per batch.
    sources: Vec<Source<'a>>,
}

impl<'a> AtomEval<'a> {
    fn new(batch: &'a EventBatch, tables: &'a Tables, atom: &'a Atom) -> Self {
        let mut sources = Vec::new();
        let mut add = |path: &str| sources.push(source(batch, path));
        match atom {
            Atom::Has(path) => add(path),
            Atom::Truthy(v)
            | Atom::IsNone(v)
            | Atom::Cmp(_, v, _)
            | Atom::Contains { value: v, .. }
            | Atom::InLiteral { value: v, .. }
            | Atom::InText { value: v, .. }
            | Atom::Affix { value: v, .. }
            | Atom::TableHas { key: v, .. } => add(field_path(v)),
        }
        Self {
            atom,
            tables,
            sources,
        }
    }

    fn value(&self, expr: &'a ValueExpr, row: usize) -> Result<Py<'_>, Raises> {
        match expr {
            ValueExpr::Field { default, item, .. } => {
                match path_value(&self.sources[0], row, *item) {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) if *item => Ok(Py::None),
                    Ok(None) => Ok(from_json(default)),
                    Err(()) => Ok(Py::Unknown),
                }
            }
            ValueExpr::Lower(inner) | ValueExpr::Upper(inner) => match self.value(inner, row)? {
                Py::Str(s) if s.is_ascii() => Ok(Py::Str(Cow::Owned(
                    if matches!(expr, ValueExpr::Lower(_)) {
                        s.to_ascii_lowercase()
                    } else {
                        s.to_ascii_uppercase()
                    },
                ))),
                // Unicode case rules: let Python decide.
                Py::Str(_) | Py::Unknown => Ok(Py::Unknown),
                _ => Err(Raises),
            },
            ValueExpr::OrElse(inner, lit) => {
                let v = self.value(inner, row)?;
                match truthy(&v) {
                    Some(true) => Ok(v),
                    Some(false) => Ok(from_json(lit)),
                    None => Ok(Py::Unknown),
                }
            }
        }
    }

    fn outcome(&self, row: usize) -> u8 {
        let atom = self.atom;
        let value = |expr: &'a ValueExpr| self.value(expr, row);
        match atom {
            Atom::Has(_) => match &self.sources[0] {
                Source::Read(column) => bits(Some(!column.is_null(row))),
                Source::Declared { above, leaf } if above.is_empty() && !leaf.is_null(row) => TRUE,
                _ => UNKNOWN,
            },
            Atom::Truthy(v) => match value(v) {
                Err(Raises) => RAISE,
                Ok(v) => bits(truthy(&v)),
            },
            Atom::IsNone(v) => match value(v) {
                Err(Raises) => RAISE,
                Ok(Py::Unknown) => UNKNOWN,
                Ok(v) => bits(Some(matches!(v, Py::None))),
            },
            Atom::Cmp(op, v, lit) => match value(v) {
                Err(Raises) => RAISE,
                Ok(v) => compare(*op, &v, lit),
            },
            Atom::Contains { needle, value: v } => match value(v) {
                Err(Raises) => RAISE,
                Ok(v) => contains(&v, needle),
            },
            Atom::InLiteral {
                value: v,
                kind,
                strings,
                others,
            } => match value(v) {
                Err(Raises) => RAISE,
                Ok(v) => in_literal(&v, *kind, strings, others),
            },
            Atom::InText { value: v, text } => match value(v) {
                Err(Raises) => RAISE,
                Ok(Py::Str(s)) => bits(Some(text.contains(s.as_ref()))),
                Ok(Py::Unknown) => UNKNOWN,
                Ok(_) => RAISE,
            },
            Atom::Affix {
                value: v,
                items,
                end,
            } => match value(v) {
                Err(Raises) => RAISE,
                Ok(Py::Str(s)) => bits(Some(items.iter().any(|i| {
                    if *end {
                        s.ends_with(i.as_str())
                    } else {
                        s.starts_with(i.as_str())
                    }
                }))),
                Ok(Py::Unknown) => UNKNOWN,
                // str methods on anything else: AttributeError.
                Ok(_) => RAISE,
            },
            Atom::TableHas { table, key } => {
                let Some(table) = self.tables.get(table) else {
                    return UNKNOWN;
                };
                let text: Cow<'_, str> = match value(key) {
                    Err(Raises) => return RAISE,
                    Ok(Py::None) => return FALSE,
                    Ok(Py::Str(s)) => s,
                    Ok(Py::Int(i)) => Cow::Owned(KeyPart::Int(i).text()),
                    Ok(Py::Bool(b)) => Cow::Owned(KeyPart::Bool(b).text()),
                    // A float or dict key is a TypeError; a list is a
                    // composite key: let Python decide.
                    Ok(Py::Float(_) | Py::Dict(_)) => return RAISE,
                    Ok(_) => return UNKNOWN,
                };
                match table.find(&text, None) {
                    Ok(Some(_)) => TRUE,
                    Ok(None) => FALSE,
                    Err(_) => RAISE,
                }
            }
        }
    }
}

fn field_path(v: &ValueExpr) -> &str {
    match v {
        ValueExpr::Field { path, .. } => path,
        ValueExpr::Lower(inner) | ValueExpr::Upper(inner) | ValueExpr::OrElse(inner, _) => {
            field_path(inner)
        }
    }
}

fn compare(op: CmpOp, v: &Py<'_>, lit: &Value) -> u8 {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        CmpOp::Eq => bits(py_eq(v, lit)),
        CmpOp::Ne => bits(py_eq(v, lit).map(|b| !b)),
        _ => {
            let order = match (v, lit) {
                (Py::Unknown, _) => return UNKNOWN,
                (Py::Str(s), Value::String(l)) => Some(s.as_ref().cmp(l.as_str())),
                (Py::ArrowList(_) | Py::JsonList(_), Value::Array(_)) => return UNKNOWN,
                _ => match (num(v), lit_num(lit)) {
                    (Some(x), Some(y)) => num_cmp(x, y),
                    // Ordering different types: TypeError.
                    _ => return RAISE,
                },
            };
            let Some(order) = order else {
                return FALSE; // NaN: every ordering is false
            };
            bits(Some(match op {
                CmpOp::Lt => order == Less,
                CmpOp::Le => order != Greater,
                CmpOp::Gt => order == Greater,
                CmpOp::Ge => order != Less,
                CmpOp::Eq | CmpOp::Ne => order == Equal,
            }))
        }
    }
}

/// `needle in v`.
fn contains(v: &Py<'_>, needle: &Value) -> u8 {
    match v {
        Py::Str(s) => match needle {
            Value::String(n) => bits(Some(s.contains(n.as_str()))),
            _ => RAISE,
        },
        Py::ArrowList(list) => {
            any_equal((0..list.len()).map(|i| py_eq(&scalar(list.as_ref(), i), needle)))
        }
        Py::JsonList(items) => any_equal(items.iter().map(|i| py_eq(&from_json(i), needle))),
        Py::Dict(_) | Py::Unknown => UNKNOWN,
        Py::None | Py::Int(_) | Py::Float(_) | Py::Bool(_) => RAISE,
    }
}

fn any_equal(mut results: impl Iterator<Item = Option<bool>>) -> u8 {
    let mut undecided = false;
    for r in results.by_ref() {
        match r {
            Some(true) => return TRUE,
            Some(false) => {}
            None => undecided = true,
        }
    }
    if undecided {
        UNKNOWN
    } else {
        FALSE
    }
}

/// `v in (literal collection)`.
fn in_literal(
    v: &Py<'_>,
    kind: CollectionKind,
    strings: &std::collections::HashSet<String>,
    others: &[Value],
) -> u8 {
    match v {
        Py::Unknown => UNKNOWN,
        // Unhashable in a set or dict: TypeError; in a tuple of scalars: absent.
        Py::ArrowList(_) | Py::JsonList(_) | Py::Dict(_) => match kind {
            CollectionKind::Hashed => RAISE,
            CollectionKind::Sequence => FALSE,
        },
        Py::Str(s) => bits(Some(strings.contains(s.as_ref()))),
        other => any_equal(others.iter().map(|o| py_eq(other, o))),
    }
}
