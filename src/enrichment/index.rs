//! Lookup indexes over one table's columns.
//!
//! Exact keys are a hash map from key text to rows (lower-cased for
//! case-insensitive keys; parts joined by [`COMPOSITE_SEPARATOR`] for
//! composite keys; every element for list columns). CIDR keys keep one hash
//! map per prefix length, probed from the longest prefix down, so a lookup
//! costs at most one probe per distinct prefix length present (≤ 33 for
//! IPv4, ≤ 129 for IPv6) whatever the table size.

use super::key::{array_part, row_key_text};
use crate::config::{KeyMatch, LookupKey};
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

type Hasher = foldhash::fast::RandomState;

/// Rows holding one key; most keys are unique, so the single case does not allocate.
#[derive(Debug, Clone)]
enum Rows {
    One(u32),
    Many(Vec<u32>),
}

impl Rows {
    fn push(&mut self, row: u32) {
        match self {
            Rows::One(first) if *first != row => *self = Rows::Many(vec![*first, row]),
            Rows::Many(list) if list.last() != Some(&row) => list.push(row),
            _ => {}
        }
    }
    fn newest(&self) -> usize {
        match self {
            Rows::One(r) => *r as usize,
            Rows::Many(list) => *list.last().unwrap_or(&0) as usize,
        }
    }
    fn extend_into(&self, out: &mut Vec<usize>) {
        match self {
            Rows::One(r) => out.push(*r as usize),
            Rows::Many(list) => out.extend(list.iter().map(|r| *r as usize)),
        }
    }
}

fn insert<K: Hash + Eq>(map: &mut HashMap<K, Rows, Hasher>, key: K, row: u32) {
    map.entry(key)
        .and_modify(|rows| rows.push(row))
        .or_insert(Rows::One(row));
}

/// The index of one lookup key.
#[derive(Debug)]
pub struct KeyIndex(Kind);

#[derive(Debug)]
enum Kind {
    Exact {
        map: HashMap<Box<str>, Rows, Hasher>,
        fold_case: bool,
    },
    Cidr(CidrIndex),
}

impl KeyIndex {
    /// Indexes `columns` (one per column of `key`, in order).
    pub fn build(key: &LookupKey, columns: &[&dyn Array]) -> Self {
        if key.matching == KeyMatch::Cidr {
            return KeyIndex(Kind::Cidr(CidrIndex::build(columns[0])));
        }
        let fold_case = !key.case_sensitive;
        let rows = columns.first().map(|c| c.len()).unwrap_or(0);
        let mut map: HashMap<Box<str>, Rows, Hasher> =
            HashMap::with_capacity_and_hasher(rows, Hasher::default());
        let normal = |text: String| -> Box<str> {
            if fold_case {
                text.to_lowercase().into_boxed_str()
            } else {
                text.into_boxed_str()
            }
        };
        if let [column] = columns {
            for_each_value(*column, |row, text| insert(&mut map, normal(text), row));
        } else {
            for row in 0..rows {
                if let Some(joined) = row_key_text(columns, row) {
                    insert(&mut map, normal(joined), row as u32);
                }
            }
        }
        map.shrink_to_fit();
        KeyIndex(Kind::Exact { map, fold_case })
    }

    /// The newest row with this key; for CIDR keys, the newest row of the
    /// most specific range containing the address.
    pub fn newest(&self, key: &str) -> Option<usize> {
        match &self.0 {
            Kind::Exact { map, fold_case } => {
                if *fold_case {
                    map.get(key.to_lowercase().as_str()).map(Rows::newest)
                } else {
                    map.get(key).map(Rows::newest)
                }
            }
            Kind::Cidr(index) => index.newest(key),
        }
    }

    /// Every row with this key, oldest first; for CIDR keys, the rows of
    /// every containing range, most specific first.
    pub fn all(&self, key: &str) -> Vec<usize> {
        let mut out = Vec::new();
        match &self.0 {
            Kind::Exact { map, fold_case } => {
                let found = if *fold_case {
                    map.get(key.to_lowercase().as_str())
                } else {
                    map.get(key)
                };
                if let Some(rows) = found {
                    rows.extend_into(&mut out);
                }
            }
            Kind::Cidr(index) => index.all(key, &mut out),
        }
        out
    }

    pub fn distinct_keys(&self) -> usize {
        match &self.0 {
            Kind::Exact { map, .. } => map.len(),
            Kind::Cidr(index) => index.len(),
        }
    }
}

/// Calls `f(row, text)` for every non-null value (every element of a list).
fn for_each_value(column: &dyn Array, mut f: impl FnMut(u32, String)) {
    match column.data_type() {
        DataType::List(_) => {
            let list = column.as_list::<i32>();
            for row in 0..list.len() {
                if list.is_null(row) {
                    continue;
                }
                let values = list.value(row);
                for i in 0..values.len() {
                    if let Some(k) = array_part(values.as_ref(), i) {
                        f(row as u32, k.text());
                    }
                }
            }
        }
        _ => {
            for row in 0..column.len() {
                if let Some(k) = array_part(column, row) {
                    f(row as u32, k.text());
                }
            }
        }
    }
}

/// Parses `a.b.c.d/len`, `v6::/len` or a single address (a host route).
/// Host bits below the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
///
/// # Errors
/// Text that is neither, or a prefix longer than the address.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let text = text.trim();
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not a CIDR range or IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length (0–{max})"))?,
    };
    Ok((addr, len))
}

fn mask_v4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask_v6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

/// Longest-prefix match over IPv4 and IPv6 ranges.
#[derive(Debug, Default)]
struct CidrIndex {
    /// Per prefix length, longest first.
    v4: Vec<(u8, HashMap<u32, Rows, Hasher>)>,
    v6: Vec<(u8, HashMap<u128, Rows, Hasher>)>,
    ranges: usize,
}

fn level<K>(
    levels: &mut Vec<(u8, HashMap<K, Rows, Hasher>)>,
    len: u8,
) -> &mut HashMap<K, Rows, Hasher> {
    let at = match levels.iter().position(|(l, _)| *l <= len) {
        Some(i) if levels[i].0 == len => i,
        Some(i) => {
            levels.insert(i, (len, HashMap::default()));
            i
        }
        None => {
            levels.push((len, HashMap::default()));
            levels.len() - 1
        }
    };
    &mut levels[at].1
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is its IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl CidrIndex {
    fn build(column: &dyn Array) -> Self {
        let mut index = CidrIndex::default();
        for_each_value(column, |row, text| {
            // Rows were validated at load; anything unparsable is skipped.
            if let Ok((addr, len)) = parse_cidr(&text) {
                index.ranges += 1;
                match addr {
                    IpAddr::V4(a) => {
                        insert(level(&mut index.v4, len), mask_v4(u32::from(a), len), row)
                    }
                    IpAddr::V6(a) => {
                        insert(level(&mut index.v6, len), mask_v6(u128::from(a), len), row)
                    }
                }
            }
        });
        index
    }

    fn len(&self) -> usize {
        self.ranges
    }

    fn matches(&self, key: &str) -> Vec<&Rows> {
        let Ok(addr) = key.trim().parse::<IpAddr>() else {
            return Vec::new();
        };
        match canonical(addr) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .filter_map(|(len, map)| map.get(&mask_v4(a, *len)))
                    .collect()
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .filter_map(|(len, map)| map.get(&mask_v6(a, *len)))
                    .collect()
            }
        }
    }

    fn newest(&self, key: &str) -> Option<usize> {
        // Probing stops at the first (longest) containing prefix.
        let Ok(addr) = key.trim().parse::<IpAddr>() else {
            return None;
        };
        match canonical(addr) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v4(a, *len)))
                    .map(Rows::newest)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v6(a, *len)))
                    .map(Rows::newest)
            }
        }
    }

    fn all(&self, key: &str, out: &mut Vec<usize>) {
        for rows in self.matches(key) {
            rows.extend_into(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrichment::COMPOSITE_SEPARATOR;
    use arrow::array::{Int64Array, StringArray};

    fn key(name: &str, matching: KeyMatch, case_sensitive: bool, columns: &[&str]) -> LookupKey {
        LookupKey {
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            matching,
            case_sensitive,
        }
    }

    fn exact(col: &dyn Array) -> KeyIndex {
        KeyIndex::build(&key("k", KeyMatch::Exact, true, &["k"]), &[col])
    }

    #[test]
    fn duplicates_newest_wins() {
        let col = StringArray::from(vec![Some("a"), Some("b"), None, Some("a")]);
        let idx = exact(&col);
        assert_eq!(idx.newest("a"), Some(3));
        assert_eq!(idx.all("a"), vec![0, 3]);
        assert_eq!(idx.newest("zz"), None);
        assert_eq!(idx.distinct_keys(), 2);
    }

    #[test]
    fn integer_keys_match_decimal_text() {
        let idx = exact(&Int64Array::from(vec![123456789012, 42]));
        assert_eq!(idx.newest("123456789012"), Some(0));
    }

    #[test]
    fn case_insensitive_keys() {
        let col = StringArray::from(vec!["host-1.corp", "HOST-2.corp"]);
        let idx = KeyIndex::build(&key("h", KeyMatch::Exact, false, &["h"]), &[&col]);
        assert_eq!(idx.newest("HOST-1.corp"), Some(0));
        assert_eq!(idx.newest("host-2.CORP"), Some(1));
    }

    #[test]
    fn composite_keys_join_parts() {
        let accounts = StringArray::from(vec!["111", "111", "222"]);
        let regions = StringArray::from(vec![Some("us-east-1"), Some("eu-west-1"), None]);
        let idx = KeyIndex::build(
            &key("ar", KeyMatch::Exact, true, &["a", "r"]),
            &[&accounts, &regions],
        );
        let k = |a: &str, r: &str| format!("{a}{COMPOSITE_SEPARATOR}{r}");
        assert_eq!(idx.newest(&k("111", "eu-west-1")), Some(1));
        assert_eq!(
            idx.newest(&k("222", "")),
            None,
            "a null part is not indexed"
        );
    }

    #[test]
    fn cidr_longest_prefix_and_all_containing() {
        let col = StringArray::from(vec![
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "0.0.0.0/0",
        ]);
        let idx = KeyIndex::build(&key("n", KeyMatch::Cidr, true, &["n"]), &[&col]);
        assert_eq!(idx.newest("10.1.2.3"), Some(2), "host route");
        assert_eq!(idx.newest("10.1.9.9"), Some(1));
        assert_eq!(idx.newest("10.200.0.1"), Some(0));
        assert_eq!(idx.newest("192.168.1.1"), Some(5), "default route");
        assert_eq!(idx.all("10.1.2.3"), vec![2, 1, 0, 5]);
        assert_eq!(idx.newest("2001:db8:1::5"), Some(4));
        assert_eq!(idx.newest("2001:db8:2::5"), Some(3));
        assert_eq!(idx.newest("2001:db9::1"), None);
        assert_eq!(idx.newest("::ffff:10.1.2.3"), Some(2), "IPv4-mapped");
        assert_eq!(idx.newest("not an ip"), None);
    }

    #[test]
    fn parses_and_rejects_cidrs() {
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().1, 8);
        assert_eq!(parse_cidr("::1").unwrap().1, 128);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
    }
}
