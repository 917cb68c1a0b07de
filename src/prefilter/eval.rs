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
use arrow::array::{
    Array, AsArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray,
    StringArray,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// Atom outcomes on one batch, shared by every rule's filter: rules of a
/// library test the same fields the same way, and each such test is
/// computed once per event.
#[derive(Default)]
pub struct AtomCache {
    /// Per atom (by its key), per event: outcome bits, 0 while not computed.
    outcomes: HashMap<String, Vec<u8>>,
}

impl Derived {
    /// Which events of `batch` to keep (bit set: keep). `tables` are the
    /// generation the batch is evaluated against.
    pub fn keep(&self, batch: &EventBatch, tables: &Tables) -> BooleanBuffer {
        self.keep_shared(batch, tables, &mut AtomCache::default())
    }

    /// [`Derived::keep`], reusing (and adding to) what other rules' filters
    /// computed on the same batch.
    pub fn keep_shared(
        &self,
        batch: &EventBatch,
        tables: &Tables,
        cache: &mut AtomCache,
    ) -> BooleanBuffer {
        let all = BooleanBuffer::new_set(batch.len());
        if !self.narrows() {
            return all;
        }
        let mut state = State {
            batch,
            tables,
            cache,
        };
        state.formula(self, &self.keep, &all)
    }
}

struct State<'a> {
    batch: &'a EventBatch,
    tables: &'a Tables,
    cache: &'a mut AtomCache,
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
                let rows = mask.len();
                if mask.count_set_bits() * 8 < rows {
                    // Few events left: visit only those.
                    let mut out = arrow::array::BooleanBufferBuilder::new(rows);
                    out.append_n(rows, false);
                    for row in mask.set_indices() {
                        if outcomes[row] & bit != 0 {
                            out.set_bit(row, true);
                        }
                    }
                    return out.finish();
                }
                let mask_bits = mask.values();
                let offset = mask.offset();
                BooleanBuffer::collect_bool(rows, |row| {
                    outcomes[row] & bit != 0
                        && arrow::util::bit_util::get_bit(mask_bits, offset + row)
                })
            }
        }
    }

    /// Outcomes of atom `index`, computed for every event of `mask` not
    /// computed before (by this rule or another).
    fn atom(&mut self, derived: &Derived, index: usize, mask: &BooleanBuffer) -> &[u8] {
        let key = &derived.keys[index];
        let rows = mask.len();
        if !self.cache.outcomes.contains_key(key) {
            self.cache.outcomes.insert(key.clone(), vec![0; rows]);
        }
        let outcomes = self
            .cache
            .outcomes
            .get_mut(key)
            .map(Vec::as_mut_slice)
            .unwrap_or_default();
        let eval = AtomEval::new(self.batch, self.tables, &derived.atoms[index]);
        eval.fill(outcomes, mask);
        outcomes
    }
}

/// A value as Python would see it, as far as the engine can tell.
#[derive(Clone)]
enum Py<'a> {
    None,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A list: a slice of a list column's values.
    List(&'a Col<'a>, usize, usize),
    /// A list from JSON (an event's text or a literal).
    JsonList(Cow<'a, [Value]>),
    /// A dict; whether it has members.
    Dict(bool),
    /// A value the engine does not model (datetime, ...): undecided.
    Unknown,
}

/// Evaluating `value` definitely raises.
struct Raises;

/// A column downcast once per batch, so reading a value is a match on
/// this enum and an index, not a type dispatch per event.
enum Col<'a> {
    Str(&'a StringArray),
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
    Float64(&'a Float64Array),
    Float32(&'a Float32Array),
    Bool(&'a BooleanArray),
    /// A list column: its offsets and its (typed) values.
    List(&'a ListArray, Box<Col<'a>>),
    /// A struct: a dict with its declared members.
    Struct(&'a dyn Array, bool),
    /// JSON text per event (a path whose type changes within the batch).
    Json(&'a StringArray),
    Null,
    /// A type the engine does not model (timestamps, ...).
    Other(&'a dyn Array),
}

impl<'a> Col<'a> {
    fn new(array: &'a dyn Array) -> Self {
        match array.data_type() {
            DataType::Utf8 => Col::Str(array.as_string::<i32>()),
            DataType::Int64 => Col::Int64(array.as_primitive::<Int64Type>()),
            DataType::Int32 => Col::Int32(array.as_primitive::<Int32Type>()),
            DataType::Float64 => Col::Float64(array.as_primitive::<Float64Type>()),
            DataType::Float32 => Col::Float32(array.as_primitive::<Float32Type>()),
            DataType::Boolean => Col::Bool(array.as_boolean()),
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                Col::List(list, Box::new(Col::new(list.values().as_ref())))
            }
            DataType::Struct(fields) => Col::Struct(array, !fields.is_empty()),
            DataType::Null => Col::Null,
            _ => Col::Other(array),
        }
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Col::Str(a) | Col::Json(a) => a.is_null(row),
            Col::Int64(a) => a.is_null(row),
            Col::Int32(a) => a.is_null(row),
            Col::Float64(a) => a.is_null(row),
            Col::Float32(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::List(a, _) => a.is_null(row),
            Col::Struct(a, _) | Col::Other(a) => a.is_null(row),
            Col::Null => true,
        }
    }

    /// The value at `row` (not null).
    fn get(&'a self, row: usize) -> Py<'a> {
        if self.is_null(row) {
            return Py::None;
        }
        match self {
            Col::Str(a) => Py::Str(Cow::Borrowed(a.value(row))),
            Col::Int64(a) => Py::Int(a.value(row)),
            Col::Int32(a) => Py::Int(i64::from(a.value(row))),
            Col::Float64(a) => Py::Float(a.value(row)),
            Col::Float32(a) => Py::Float(f64::from(a.value(row))),
            Col::Bool(a) => Py::Bool(a.value(row)),
            Col::List(list, values) => {
                let offsets = list.value_offsets();
                Py::List(values, offsets[row] as usize, offsets[row + 1] as usize)
            }
            Col::Struct(_, nonempty) => Py::Dict(*nonempty),
            Col::Json(texts) => match serde_json::from_str::<Value>(texts.value(row)) {
                Ok(v) => from_json_owned(v),
                Err(_) => Py::Unknown,
            },
            Col::Null => Py::None,
            Col::Other(_) => Py::Unknown,
        }
    }
}

/// Where a path's values come from in one batch.
enum Source<'a> {
    /// The column of a path rules read.
    Read(Col<'a>),
    /// The declared column; `above`: the nulls of every struct above it
    /// (a null struct hides its members), combined.
    Declared {
        above: Option<NullBuffer>,
        leaf: Col<'a>,
    },
    /// The path is declared, but a struct on the way lacks it.
    DeclaredAbsent { above: Option<NullBuffer> },
    /// Neither declared nor read as a column: only the event's text has it.
    Text,
}

fn source<'a>(batch: &'a EventBatch, path: &str) -> Source<'a> {
    if let Some(column) = batch.read.get(path) {
        return Source::Read(match column {
            ReadColumn::Typed(array) => Col::new(array.as_ref()),
            ReadColumn::Json(texts) => Col::Json(texts),
        });
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
            None => {
                return Source::DeclaredAbsent {
                    above: combined_nulls(&above),
                }
            }
        }
    }
    Source::Declared {
        above: combined_nulls(&above),
        leaf: Col::new(array),
    }
}

/// The validity of every array in `arrays` at once.
fn combined_nulls(arrays: &[&dyn Array]) -> Option<NullBuffer> {
    arrays.iter().fold(None, |acc, a| {
        NullBuffer::union(acc.as_ref(), a.logical_nulls().as_ref())
    })
}

fn hidden(above: Option<&NullBuffer>, row: usize) -> bool {
    above.is_some_and(|n| n.is_null(row))
}

/// The value of one path per event: `None` when missing or null (what
/// `deepget` turns into its default); `Err` when the engine cannot tell.
fn path_value<'a>(source: &'a Source<'a>, row: usize, item: bool) -> Result<Option<Py<'a>>, ()> {
    match source {
        Source::Read(column) => {
            if column.is_null(row) || matches!(column, Col::Json(t) if t.value(row) == "null") {
                // `r[key]` raises for a missing key and gives None for a
                // null one; the column does not tell them apart.
                return if item { Err(()) } else { Ok(None) };
            }
            Ok(Some(column.get(row)))
        }
        Source::Declared { above, leaf } => {
            if hidden(above.as_ref(), row) || leaf.is_null(row) {
                return Ok(None);
            }
            Ok(Some(leaf.get(row)))
        }
        // Python reads such a member from the event's text when the struct
        // is present.
        Source::DeclaredAbsent { above } => {
            if hidden(above.as_ref(), row) {
                Ok(None)
            } else {
                Err(())
            }
        }
        Source::Text => Err(()),
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
        Py::List(_, start, end) => end > start,
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
        (Py::List(..) | Py::JsonList(_), Value::Array(_)) | (Py::Dict(_), Value::Object(_)) => None,
        (Py::List(..) | Py::JsonList(_) | Py::Dict(_), _)
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
    /// Where the atom's one path is read from, resolved once per batch.
    source: Source<'a>,
    /// A Panther read (`event.get`, `deep_get`): where its value is missing
    /// at the exact path, whether the key might be found under another case.
    variants: Option<CaseVariants<'a>>,
}

/// Panther's event finds a key under another case when the exact one is
/// absent, so a value missing at its exact path is undecided — unless the
/// event's text holds no key of the path in another case: then Panther's
/// lookup misses too, and the value is `None` (or `deep_get`'s default).
struct CaseVariants<'a> {
    raw: &'a StringArray,
    parts: Vec<&'a str>,
}

impl CaseVariants<'_> {
    fn new<'a>(raw: &'a StringArray, expr: &'a ValueExpr) -> Option<CaseVariants<'a>> {
        let ValueExpr::Field {
            path,
            ci: true,
            item: false,
            ..
        } = innermost(expr)
        else {
            return None;
        };
        let parts: Vec<&str> = path.split('.').collect();
        // `p_*` fields are computed by the runtime, not read from the text.
        let plain = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'@')
        };
        if parts[0].starts_with("p_") || !parts.iter().all(plain) {
            return None;
        }
        Some(CaseVariants { raw, parts })
    }

    /// Whether no key of the path appears in the event's text in another
    /// case (text written with `\u` escapes, or holding the Kelvin sign
    /// that lower-cases to `k`, is never taken as proof).
    fn absent(&self, row: usize) -> bool {
        if self.raw.is_null(row) {
            return false;
        }
        let text = self.raw.value(row).as_bytes();
        if memchr::memmem::find(text, b"\\u").is_some()
            || memchr::memmem::find(text, "\u{212a}".as_bytes()).is_some()
        {
            return false;
        }
        self.parts.iter().all(|part| {
            let part = part.as_bytes();
            memchr::memchr_iter(b'"', text).all(|at| {
                let key = &text[at + 1..];
                !(key.len() > part.len()
                    && key[part.len()] == b'"'
                    && key[..part.len()].eq_ignore_ascii_case(part)
                    && &key[..part.len()] != part)
            })
        })
    }
}

impl<'a> AtomEval<'a> {
    fn new(batch: &'a EventBatch, tables: &'a Tables, atom: &'a Atom) -> Self {
        let path = match atom.value() {
            Some(v) => field_path(v),
            None => match atom {
                Atom::Has(path) => path.as_str(),
                _ => "",
            },
        };
        Self {
            atom,
            tables,
            source: source(batch, path),
            variants: atom.value().and_then(|v| CaseVariants::new(&batch.raw, v)),
        }
    }

    /// Computes the outcome of every event of `mask` not computed yet.
    fn fill(&self, outcomes: &mut [u8], mask: &BooleanBuffer) {
        if matches!(self.atom, Atom::Has(_)) {
            for row in mask.set_indices() {
                if outcomes[row] == 0 {
                    outcomes[row] = self.outcome(row);
                }
            }
            return;
        }
        if self.string_kernel(outcomes, mask) {
            return;
        }
        // One loop per kind of atom, so the test is inlined in it.
        match self.atom {
            Atom::Truthy(_) => self.fill_with(outcomes, mask, |v| bits(truthy(v))),
            Atom::IsNone(_) => self.fill_with(outcomes, mask, |v| match v {
                Py::Unknown => UNKNOWN,
                v => bits(Some(matches!(v, Py::None))),
            }),
            Atom::Cmp(op, _, lit) => self.fill_with(outcomes, mask, |v| compare(*op, v, lit)),
            Atom::Contains { needle, .. } => {
                self.fill_with(outcomes, mask, |v| contains(v, needle))
            }
            Atom::InLiteral {
                kind,
                strings,
                others,
                ..
            } => self.fill_with(outcomes, mask, |v| in_literal(v, *kind, strings, others)),
            _ => self.fill_with(outcomes, mask, |v| self.judge(Ok(v.clone()))),
        }
    }

    /// The two commonest tests on string columns, on the column's bytes:
    /// `field == "text"` (or `!=`) and `"text" in list_field`. Whether it
    /// applied.
    fn string_kernel(&self, outcomes: &mut [u8], mask: &BooleanBuffer) -> bool {
        let (above, leaf) = match &self.source {
            Source::Declared { above, leaf } => (above.as_ref(), leaf),
            Source::Read(leaf) => (None, leaf),
            _ => return false,
        };
        let (strings, list, text, hit, miss, default) = match (self.atom, leaf) {
            (
                Atom::Cmp(
                    op @ (CmpOp::Eq | CmpOp::Ne),
                    field @ ValueExpr::Field { item: false, .. },
                    Value::String(text),
                ),
                Col::Str(strings),
            ) => {
                let (hit, miss) = if *op == CmpOp::Eq {
                    (TRUE, FALSE)
                } else {
                    (FALSE, TRUE)
                };
                (*strings, None, text, hit, miss, field)
            }
            (
                Atom::Contains {
                    needle: Value::String(text),
                    value:
                        field @ (ValueExpr::Field { item: false, .. }
                        | ValueExpr::OrElse(_, Value::Array(_))),
                },
                Col::List(list, values),
            ) if matches!(innermost(field), ValueExpr::Field { item: false, .. }) => {
                match values.as_ref() {
                    Col::Str(strings) => (*strings, Some(*list), text, TRUE, FALSE, field),
                    _ => return false,
                }
            }
            _ => return false,
        };
        let missing = self.judge(apply(default, None));
        let absent = self.judge(apply_exact(default, None));
        // `(field or [...])`: an empty list reads as the literal.
        let empty = match default {
            ValueExpr::OrElse(_, lit) => Some(self.judge(Ok(from_json(lit)))),
            _ => None,
        };
        let offsets = strings.value_offsets();
        let bytes = strings.value_data();
        let wanted = text.as_bytes();
        let equal = |i: usize| {
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            end - start == wanted.len() && &bytes[start..end] == wanted && !strings.is_null(i)
        };
        for row in mask.set_indices() {
            if outcomes[row] != 0 {
                continue;
            }
            outcomes[row] = if hidden(above, row) || leaf.is_null(row) {
                if self.absent(row) {
                    absent
                } else {
                    missing
                }
            } else {
                match list {
                    Some(list) => {
                        let o = list.value_offsets();
                        let items = o[row] as usize..o[row + 1] as usize;
                        match empty {
                            Some(outcome) if items.is_empty() => outcome,
                            _ if items.into_iter().any(equal) => hit,
                            _ => miss,
                        }
                    }
                    None if equal(row) => hit,
                    None => miss,
                }
            };
        }
        true
    }

    /// Fills `outcomes` for `mask` with `test` applied to each event's value
    /// (an event whose value raises: RAISE).
    fn fill_with(&self, outcomes: &mut [u8], mask: &BooleanBuffer, test: impl Fn(&Py<'_>) -> u8) {
        let expr = self.expr();
        let judge = |v: Result<Py<'_>, Raises>| match v {
            Ok(v) => test(&v),
            Err(Raises) => RAISE,
        };
        let item = matches!(innermost(expr), ValueExpr::Field { item: true, .. });
        // A declared column or a typed read column: resolved once, and the
        // outcome of a missing value computed once.
        let typed = match &self.source {
            Source::Declared { above, leaf } if !item => Some((above.as_ref(), leaf)),
            Source::Read(leaf) if !item && !matches!(leaf, Col::Json(_)) => Some((None, leaf)),
            _ => None,
        };
        if let Some((above, leaf)) = typed {
            let missing = judge(apply(expr, None));
            let absent = judge(apply_exact(expr, None));
            for row in mask.set_indices() {
                if outcomes[row] == 0 {
                    outcomes[row] = if hidden(above, row) || leaf.is_null(row) {
                        if self.absent(row) {
                            absent
                        } else {
                            missing
                        }
                    } else {
                        judge(apply(expr, Some(leaf.get(row))))
                    };
                }
            }
            return;
        }
        for row in mask.set_indices() {
            if outcomes[row] == 0 {
                outcomes[row] = judge(self.value(expr, row));
            }
        }
    }

    /// Whether the atom's Panther read finds nothing in `row` under any case.
    fn absent(&self, row: usize) -> bool {
        self.variants.as_ref().is_some_and(|v| v.absent(row))
    }

    fn value(&self, expr: &'a ValueExpr, row: usize) -> Result<Py<'_>, Raises> {
        let item = matches!(innermost(expr), ValueExpr::Field { item: true, .. });
        let ci = matches!(innermost(expr), ValueExpr::Field { ci: true, .. });
        match path_value(&self.source, row, item) {
            Ok(Some(v)) => apply(expr, Some(v)),
            Ok(None) if ci && self.absent(row) => apply_exact(expr, None),
            Ok(None) if ci => apply(expr, Some(Py::Unknown)),
            Ok(None) if item => apply(expr, Some(Py::None)),
            Ok(None) => apply(expr, None),
            Err(()) => apply(expr, Some(Py::Unknown)),
        }
    }

    fn outcome(&self, row: usize) -> u8 {
        match self.atom {
            Atom::Has(_) => match &self.source {
                Source::Read(Col::Json(t)) => bits(Some(!t.is_null(row) && t.value(row) != "null")),
                Source::Read(column) => bits(Some(!column.is_null(row))),
                Source::Declared { above: None, leaf } if !leaf.is_null(row) => TRUE,
                _ => UNKNOWN,
            },
            _ => self.judge(self.value(self.expr(), row)),
        }
    }

    /// The atom's value expression (every atom but `Has` has one).
    fn expr(&self) -> &'a ValueExpr {
        self.atom.value().expect("`Has` reads no value")
    }

    /// The atom's outcome for a value.
    fn judge(&self, value: Result<Py<'_>, Raises>) -> u8 {
        match self.atom {
            Atom::Has(_) => UNKNOWN,
            Atom::Truthy(_) => match value {
                Err(Raises) => RAISE,
                Ok(v) => bits(truthy(&v)),
            },
            Atom::IsNone(_) => match value {
                Err(Raises) => RAISE,
                Ok(Py::Unknown) => UNKNOWN,
                Ok(v) => bits(Some(matches!(v, Py::None))),
            },
            Atom::Cmp(op, _, lit) => match value {
                Err(Raises) => RAISE,
                Ok(v) => compare(*op, &v, lit),
            },
            Atom::Contains { needle, .. } => match value {
                Err(Raises) => RAISE,
                Ok(v) => contains(&v, needle),
            },
            Atom::InLiteral {
                kind,
                strings,
                others,
                ..
            } => match value {
                Err(Raises) => RAISE,
                Ok(v) => in_literal(&v, *kind, strings, others),
            },
            Atom::InText { text, .. } => match value {
                Err(Raises) => RAISE,
                Ok(Py::Str(s)) => bits(Some(text.contains(s.as_ref()))),
                Ok(Py::Unknown) => UNKNOWN,
                Ok(_) => RAISE,
            },
            Atom::Affix { items, end, .. } => match value {
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
            Atom::TableHas { table, .. } => {
                let Some(table) = self.tables.get(table) else {
                    return UNKNOWN;
                };
                let text: Cow<'_, str> = match value {
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

fn innermost(v: &ValueExpr) -> &ValueExpr {
    match v {
        ValueExpr::Field { .. } => v,
        ValueExpr::Lower(inner) | ValueExpr::Upper(inner) | ValueExpr::OrElse(inner, _) => {
            innermost(inner)
        }
    }
}

/// `expr` computed from the value of its field (`None`: missing or null,
/// which reads as the field's default).
fn apply<'a>(expr: &'a ValueExpr, base: Option<Py<'a>>) -> Result<Py<'a>, Raises> {
    apply_with(expr, base, false)
}

/// [`apply`] where a Panther read's missing value is known to be missing
/// under every case of its keys (see [`CaseVariants`]).
fn apply_exact<'a>(expr: &'a ValueExpr, base: Option<Py<'a>>) -> Result<Py<'a>, Raises> {
    apply_with(expr, base, true)
}

fn apply_with<'a>(
    expr: &'a ValueExpr,
    base: Option<Py<'a>>,
    exact: bool,
) -> Result<Py<'a>, Raises> {
    match expr {
        ValueExpr::Field { ci: true, .. } if !exact => Ok(base.unwrap_or(Py::Unknown)),
        ValueExpr::Field { default, .. } => Ok(base.unwrap_or_else(|| from_json(default))),
        ValueExpr::Lower(inner) | ValueExpr::Upper(inner) => {
            match apply_with(inner, base, exact)? {
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
            }
        }
        ValueExpr::OrElse(inner, lit) => {
            let v = apply_with(inner, base, exact)?;
            match truthy(&v) {
                Some(true) => Ok(v),
                Some(false) => Ok(from_json(lit)),
                None => Ok(Py::Unknown),
            }
        }
    }
}

fn field_path(v: &ValueExpr) -> &str {
    match innermost(v) {
        ValueExpr::Field { path, .. } => path,
        _ => "",
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
                (Py::List(..) | Py::JsonList(_), Value::Array(_)) => return UNKNOWN,
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
        Py::List(values, start, end) => list_contains(values, *start, *end, needle),
        Py::JsonList(items) => any_equal(items.iter().map(|i| py_eq(&from_json(i), needle))),
        Py::Dict(_) | Py::Unknown => UNKNOWN,
        Py::None | Py::Int(_) | Py::Float(_) | Py::Bool(_) => RAISE,
    }
}

/// `needle in values[start..end]`; strings compared without building values.
fn list_contains(values: &Col<'_>, start: usize, end: usize, needle: &Value) -> u8 {
    if let (Col::Str(strings), Value::String(n)) = (values, needle) {
        let found = (start..end).any(|i| !strings.is_null(i) && strings.value(i) == n);
        return bits(Some(found));
    }
    any_equal((start..end).map(|i| py_eq(&values.get(i), needle)))
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
        Py::List(..) | Py::JsonList(_) | Py::Dict(_) => match kind {
            CollectionKind::Hashed => RAISE,
            CollectionKind::Sequence => FALSE,
        },
        Py::Str(s) => bits(Some(strings.contains(s.as_ref()))),
        other => any_equal(others.iter().map(|o| py_eq(other, o))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(text: &str) -> Py<'_> {
        Py::Str(Cow::Borrowed(text))
    }

    #[test]
    fn equality_follows_python_across_types() {
        assert_eq!(py_eq(&s("22"), &json!(22)), Some(false));
        assert_eq!(py_eq(&Py::Int(22), &json!(22.0)), Some(true));
        assert_eq!(py_eq(&Py::Bool(true), &json!(1)), Some(true));
        assert_eq!(py_eq(&Py::Float(0.5), &json!(0)), Some(false));
        assert_eq!(py_eq(&Py::None, &json!(null)), Some(true));
        assert_eq!(py_eq(&Py::None, &json!("x")), Some(false));
        assert_eq!(py_eq(&Py::Dict(true), &json!("x")), Some(false));
        assert_eq!(py_eq(&Py::Unknown, &json!("x")), None);
        assert_eq!(
            py_eq(&Py::JsonList(Cow::Owned(vec![json!("a")])), &json!(["a"])),
            None
        );
    }

    #[test]
    fn int_float_comparison_is_exact() {
        use std::cmp::Ordering::*;
        assert_eq!(int_float_cmp(3, 3.0), Some(Equal));
        assert_eq!(int_float_cmp(3, 3.5), Some(Less));
        assert_eq!(int_float_cmp(-3, -3.5), Some(Greater));
        assert_eq!(int_float_cmp(i64::MAX, 9.3e18), Some(Less));
        assert_eq!(
            int_float_cmp(i64::MAX, 9_223_372_036_854_775_807.0),
            Some(Less)
        );
        assert_eq!(int_float_cmp(1, f64::NAN), None);
    }

    #[test]
    fn ordering_mixed_types_raises_and_nan_is_false() {
        assert_eq!(compare(CmpOp::Ge, &Py::Int(500), &json!(500)), TRUE);
        assert_eq!(compare(CmpOp::Lt, &s("404"), &json!(500)), RAISE);
        assert_eq!(compare(CmpOp::Lt, &Py::None, &json!(0)), RAISE);
        assert_eq!(compare(CmpOp::Gt, &Py::Float(f64::NAN), &json!(0)), FALSE);
        assert_eq!(compare(CmpOp::Lt, &s("a"), &json!("b")), TRUE);
        assert_eq!(compare(CmpOp::Ne, &s("22"), &json!(22)), TRUE);
    }

    #[test]
    fn membership_is_substring_for_text_and_raises_for_none() {
        assert_eq!(contains(&s("powershell -enc"), &json!("shell")), TRUE);
        assert_eq!(contains(&s("bash"), &json!(1)), RAISE);
        assert_eq!(contains(&Py::None, &json!("x")), RAISE);
        assert_eq!(contains(&Py::Int(3), &json!("x")), RAISE);
        let list = [json!("user"), json!(null), json!("admin")];
        assert_eq!(
            contains(&Py::JsonList(Cow::Borrowed(&list)), &json!("admin")),
            TRUE
        );
        assert_eq!(
            contains(&Py::JsonList(Cow::Borrowed(&list)), &json!("adm")),
            FALSE
        );
        assert_eq!(contains(&Py::Dict(true), &json!("debug")), UNKNOWN);
    }

    #[test]
    fn membership_in_literals_needs_hashable_values_for_sets() {
        let strings: std::collections::HashSet<String> = ["a".to_string()].into();
        let others = [json!(22), json!(null)];
        let list = Py::JsonList(Cow::Owned(vec![json!("a")]));
        assert_eq!(
            in_literal(&s("a"), CollectionKind::Hashed, &strings, &others),
            TRUE
        );
        assert_eq!(
            in_literal(&Py::Float(22.0), CollectionKind::Hashed, &strings, &others),
            TRUE
        );
        assert_eq!(
            in_literal(&Py::None, CollectionKind::Sequence, &strings, &others),
            TRUE
        );
        assert_eq!(
            in_literal(&list, CollectionKind::Hashed, &strings, &others),
            RAISE
        );
        assert_eq!(
            in_literal(&list, CollectionKind::Sequence, &strings, &others),
            FALSE
        );
    }

    #[test]
    fn derived_values_lowercase_ascii_only_and_raise_on_non_text() {
        let lower = ValueExpr::Lower(Box::new(ValueExpr::Field {
            path: "u".into(),
            default: json!(null),
            item: false,
            ci: false,
        }));
        assert!(matches!(apply(&lower, Some(s("ROOT"))), Ok(Py::Str(t)) if t == "root"));
        assert!(matches!(
            apply(&lower, Some(s("İSTANBUL"))),
            Ok(Py::Unknown)
        ));
        assert!(apply(&lower, None).is_err(), "None.lower() raises");
        let or_else = ValueExpr::OrElse(
            Box::new(ValueExpr::Field {
                path: "r".into(),
                default: json!(null),
                item: false,
                ci: false,
            }),
            json!([]),
        );
        assert!(matches!(apply(&or_else, Some(s(""))), Ok(Py::JsonList(l)) if l.is_empty()));
        assert!(matches!(apply(&or_else, Some(s("x"))), Ok(Py::Str(_))));
    }

    #[test]
    fn a_panther_read_is_missing_only_when_no_key_matches_in_another_case() {
        let field = |path: &str, ci| ValueExpr::Field {
            path: path.into(),
            default: json!(null),
            item: false,
            ci,
        };
        let raw = StringArray::from(vec![
            r#"{"eventName":"x"}"#,
            r#"{"ErrorCode":"AccessDenied"}"#,
            r#"{"userIdentity":{"ErrorCode":1}}"#,
            r#"{"note":"errors","errorCode":null}"#,
            // A value spelled like the key in another case: kept undecided.
            r#"{"note":"errorcode"}"#,
            r#"{"errorC\u006fde":"x"}"#,
            "{\"errorCode\u{212a}\":1}",
        ]);
        let read = field("errorCode", true);
        let variants = CaseVariants::new(&raw, &read).expect("a Panther read");
        let absent: Vec<bool> = (0..raw.len()).map(|row| variants.absent(row)).collect();
        assert_eq!(absent, [true, false, false, true, false, false, false]);
        let nested = field("userIdentity.errorcode", true);
        assert!(!CaseVariants::new(&raw, &nested).expect("nested").absent(2));
        // Fields the runtime computes, and native reads, are not checked.
        assert!(CaseVariants::new(&raw, &field("p_any_ip_addresses", true)).is_none());
        assert!(CaseVariants::new(&raw, &field("errorCode", false)).is_none());
        // Decided as missing: a Panther `event.get` gives None, not Unknown.
        assert!(matches!(apply(&read, None), Ok(Py::Unknown)));
        assert!(matches!(apply_exact(&read, None), Ok(Py::None)));
    }
}
