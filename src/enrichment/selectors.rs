//! Automatic enrichment: the `enrich:` selectors of a log table.
//!
//! Before detections see a batch, each selector field is read straight from
//! its Arrow column and looked up in the table's key index (or MMDB), once
//! per value, so the cost is one hash probe (or tree walk) per non-null
//! value, whatever the table's size. Only hits are kept (sparse, by row), and
//! they stay row numbers or shared MMDB records until a detection reads
//! `r.enrichment` or an alert is built, so events that match nothing cost
//! nothing more.

use super::key::array_key_text;
use super::{EnrichmentTable, Hit, KeyIndex, Tables};
use crate::config::Selector;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What one field of one event found: one hit for a scalar field, the hits
/// of its elements (in order, misses left out) for a list field.
#[derive(Debug, Clone)]
pub enum Found {
    One(Hit),
    Many(Vec<Hit>),
}

/// The hits of one (selector, field) over a batch.
#[derive(Debug)]
pub struct EnrichedField {
    pub table: Arc<EnrichmentTable>,
    pub field: String,
    /// Sorted by row; rows that found nothing are absent.
    hits: Vec<(u32, Found)>,
}

impl EnrichedField {
    fn at(&self, row: usize) -> Option<&Found> {
        self.hits
            .binary_search_by_key(&(row as u32), |(r, _)| *r)
            .ok()
            .map(|i| &self.hits[i].1)
    }
}

/// The automatic enrichment of one batch.
#[derive(Debug, Default)]
pub struct BatchEnrichment {
    pub fields: Vec<EnrichedField>,
    /// Values looked up, and how many found something.
    pub lookups: u64,
    pub hits: u64,
}

/// How a selector's table answers a value.
enum Probe<'t> {
    Index(&'t KeyIndex),
    Geo(&'t super::GeoDb),
    Nothing,
}

impl BatchEnrichment {
    /// Looks up every selector field of every event of `batch` in `tables`;
    /// a field the schema does not declare is read from `undeclared`
    /// (path, column). A selector whose table is missing from `tables`
    /// finds nothing (the table failed to load; that is reported where it
    /// failed).
    pub fn compute(
        selectors: &[Selector],
        tables: &Tables,
        batch: &RecordBatch,
        undeclared: &[(&str, &dyn Array)],
    ) -> Self {
        Self::compute_rows(selectors, tables, batch, undeclared, 0..batch.num_rows())
    }

    /// As [`BatchEnrichment::compute`], for the rows in `rows` only.
    pub fn compute_rows(
        selectors: &[Selector],
        tables: &Tables,
        batch: &RecordBatch,
        undeclared: &[(&str, &dyn Array)],
        rows: std::ops::Range<usize>,
    ) -> Self {
        let mut out = Self::default();
        for selector in selectors {
            let Some(table) = tables.get(&selector.table) else {
                continue;
            };
            let probe = match (table.geo(), table.key_index(&selector.key)) {
                (Some(geo), _) => Probe::Geo(geo),
                (None, Some(index)) => Probe::Index(index),
                (None, None) => Probe::Nothing,
            };
            // MMDB records decode once per batch per record.
            let mut records: HashMap<usize, Arc<Value>> = HashMap::new();
            let mut find = |text: &str| -> Option<Hit> {
                match probe {
                    Probe::Index(index) => index.newest(text).map(Hit::Row),
                    Probe::Geo(geo) => geo
                        .lookup_shared(text, &mut records)
                        .ok()
                        .flatten()
                        .map(Hit::Record),
                    Probe::Nothing => None,
                }
            };
            for field in &selector.fields {
                let column = FieldColumn::at(batch, field).or_else(|| {
                    undeclared
                        .iter()
                        .find(|(path, _)| path == field)
                        .map(|(_, leaf)| FieldColumn {
                            parents: Vec::new(),
                            leaf: *leaf,
                        })
                });
                let Some(column) = column else {
                    continue;
                };
                let mut hits = Vec::new();
                let mut text = String::new();
                for row in rows.clone() {
                    if !column.is_valid(row) {
                        continue;
                    }
                    match column.leaf.data_type() {
                        DataType::List(_) => {
                            let list = column.leaf.as_list::<i32>();
                            let values = list.value(row);
                            let mut found = Vec::new();
                            for i in 0..values.len() {
                                if array_key_text(values.as_ref(), i, &mut text) {
                                    out.lookups += 1;
                                    if let Some(hit) = find(&text) {
                                        found.push(hit);
                                    }
                                }
                            }
                            if !found.is_empty() {
                                out.hits += 1;
                                hits.push((row as u32, Found::Many(found)));
                            }
                        }
                        _ => {
                            if array_key_text(column.leaf, row, &mut text) {
                                out.lookups += 1;
                                if let Some(hit) = find(&text) {
                                    out.hits += 1;
                                    hits.push((row as u32, Found::One(hit)));
                                }
                            }
                        }
                    }
                }
                out.fields.push(EnrichedField {
                    table: Arc::clone(table),
                    field: field.clone(),
                    hits,
                });
            }
        }
        out
    }

    /// What `row` found: (field, found) for each field with a hit.
    pub fn row(&self, row: usize) -> impl Iterator<Item = (&EnrichedField, &Found)> {
        self.fields
            .iter()
            .filter_map(move |f| f.at(row).map(|found| (f, found)))
    }

    /// `{table: {field: row or [rows]}}` for `row`; `None` when it found nothing.
    pub fn to_json(&self, row: usize) -> Option<Value> {
        let mut out = Map::new();
        for (field, found) in self.row(row) {
            let value = match found {
                Found::One(hit) => field.table.hit_json(hit),
                Found::Many(hits) => {
                    Value::Array(hits.iter().map(|h| field.table.hit_json(h)).collect())
                }
            };
            let per_table = out
                .entry(field.table.name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = per_table {
                map.insert(field.field.clone(), value);
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

/// The array at a dotted path, with the struct arrays above it (a null
/// parent makes the field null).
struct FieldColumn<'a> {
    parents: Vec<&'a dyn Array>,
    leaf: &'a dyn Array,
}

impl<'a> FieldColumn<'a> {
    fn at(batch: &'a RecordBatch, path: &str) -> Option<Self> {
        let mut parts = path.split('.');
        let mut array: &dyn Array = batch.column_by_name(parts.next()?)?.as_ref();
        let mut parents = Vec::new();
        for part in parts {
            let child = array.as_struct_opt()?.column_by_name(part)?.as_ref();
            parents.push(array);
            array = child;
        }
        Some(Self {
            parents,
            leaf: array,
        })
    }

    fn is_valid(&self, row: usize) -> bool {
        self.leaf.is_valid(row) && self.parents.iter().all(|p| p.is_valid(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, ListArray, StringArray, StructArray};
    use arrow::datatypes::{Field, Fields, Int32Type};

    #[test]
    fn scalar_text_writes_key_text_and_skips_nulls() {
        let mut out = String::new();
        let ints = Int64Array::from(vec![Some(42), None]);
        assert!(array_key_text(&ints, 0, &mut out));
        assert_eq!(out, "42");
        assert!(!array_key_text(&ints, 1, &mut out));
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        assert!(
            !array_key_text(&list, 0, &mut out),
            "a list is not a scalar key"
        );
    }

    #[test]
    fn a_null_parent_struct_hides_its_fields() {
        let ip: ArrayRef = Arc::new(StringArray::from(vec![Some("10.0.0.1"), Some("10.0.0.2")]));
        let fields = Fields::from(vec![Field::new("ip", DataType::Utf8, true)]);
        let source = StructArray::new(fields.clone(), vec![ip], Some(vec![true, false].into()));
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "source",
            DataType::Struct(fields),
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(source)]).unwrap();
        let column = FieldColumn::at(&batch, "source.ip").unwrap();
        assert!(column.is_valid(0));
        assert!(
            !column.is_valid(1),
            "the child value under a null struct is not an event value"
        );
        assert!(FieldColumn::at(&batch, "source.port").is_none());
        assert!(FieldColumn::at(&batch, "source.ip.deeper").is_none());
    }
}
