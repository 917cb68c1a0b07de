use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use std::collections::HashMap;

type Map = HashMap<Box<str>, Rows, foldhash::fast::RandomState>;

/// Rows holding one key; most keys are unique, so the single case does not allocate.
#[derive(Debug, Clone)]
enum Rows {
    One(u32),
    Many(Vec<u32>),
}

/// A hash index from key text to row numbers. A list column indexes each
/// element, so a row is found by any of its values.
#[derive(Debug, Default)]
pub struct KeyIndex {
    map: Map,
}

impl KeyIndex {
    pub fn build(column: &dyn Array) -> Self {
        let mut map = Map::with_capacity_and_hasher(column.len(), Default::default());
        let mut insert = |key: String, row: u32| {
            map.entry(key.into_boxed_str())
                .and_modify(|rows| match rows {
                    Rows::One(first) if *first != row => *rows = Rows::Many(vec![*first, row]),
                    Rows::Many(list) if list.last() != Some(&row) => list.push(row),
                    _ => {}
                })
                .or_insert(Rows::One(row));
        };
        match column.data_type() {
            DataType::List(_) => {
                let list = column.as_list::<i32>();
                for row in 0..list.len() {
                    if list.is_null(row) {
                        continue;
                    }
                    let values = list.value(row);
                    for i in 0..values.len() {
                        if let Some(k) = key_text(values.as_ref(), i) {
                            insert(k, row as u32);
                        }
                    }
                }
            }
            _ => {
                for row in 0..column.len() {
                    if let Some(k) = key_text(column, row) {
                        insert(k, row as u32);
                    }
                }
            }
        }
        map.shrink_to_fit();
        Self { map }
    }

    /// The last (newest) row with this key.
    pub fn newest(&self, key: &str) -> Option<usize> {
        self.map.get(key).map(|rows| match rows {
            Rows::One(r) => *r as usize,
            Rows::Many(list) => *list.last().unwrap_or(&0) as usize,
        })
    }

    pub fn all(&self, key: &str) -> Vec<usize> {
        match self.map.get(key) {
            None => Vec::new(),
            Some(Rows::One(r)) => vec![*r as usize],
            Some(Rows::Many(list)) => list.iter().map(|r| *r as usize).collect(),
        }
    }

    pub fn distinct_keys(&self) -> usize {
        self.map.len()
    }
}

fn key_text(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn duplicates_newest_wins() {
        let col = StringArray::from(vec![Some("a"), Some("b"), None, Some("a")]);
        let idx = KeyIndex::build(&col);
        assert_eq!(idx.newest("a"), Some(3));
        assert_eq!(idx.all("a"), vec![0, 3]);
        assert_eq!(idx.newest("zz"), None);
        assert_eq!(idx.distinct_keys(), 2);
    }

    #[test]
    fn integer_keys_match_decimal_text() {
        let idx = KeyIndex::build(&Int64Array::from(vec![123456789012, 42]));
        assert_eq!(idx.newest("123456789012"), Some(0));
    }
}
