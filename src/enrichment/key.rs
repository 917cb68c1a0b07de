//! The one key convention: how a value becomes the text an index is keyed
//! by. Index builds ([`crate::enrichment::KeyIndex`]), the `enrich:`
//! selectors, Python's `get()` and the CLI's `--key` all go through
//! [`KeyPart`], so build and probe agree byte for byte: strings as they
//! are, integers in decimal, booleans as `true`/`false`, composite keys as
//! parts joined by [`COMPOSITE_SEPARATOR`].

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use std::fmt::Write;

/// Joins the parts of a composite key (a control character that does not
/// occur in real keys).
pub const COMPOSITE_SEPARATOR: char = '\u{1f}';

/// One part of a key, whatever it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart<'a> {
    Str(&'a str),
    Int(i64),
    UInt(u64),
    Bool(bool),
}

impl KeyPart<'_> {
    /// Appends the part's key text to `out`.
    pub fn write_to(self, out: &mut String) {
        match self {
            Self::Str(s) => out.push_str(s),
            Self::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Self::UInt(n) => {
                let _ = write!(out, "{n}");
            }
            Self::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        }
    }

    /// The part's key text.
    pub fn text(self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }
}

/// `array[row]` as a key part; `None` for null or a type that is not a key
/// type (strings, integers, booleans).
pub fn array_part(array: &dyn Array, row: usize) -> Option<KeyPart<'_>> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => KeyPart::Str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => KeyPart::Str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => KeyPart::Str(array.as_string_view().value(row)),
        DataType::Int8 => KeyPart::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => KeyPart::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => KeyPart::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => KeyPart::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => KeyPart::UInt(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => KeyPart::UInt(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => KeyPart::UInt(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => KeyPart::UInt(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Boolean => KeyPart::Bool(array.as_boolean().value(row)),
        _ => return None,
    })
}

/// Writes the key text of `array[row]` into `out` (cleared first); false
/// for null or a type that is not a key type.
pub fn array_key_text(array: &dyn Array, row: usize, out: &mut String) -> bool {
    out.clear();
    match array_part(array, row) {
        Some(part) => {
            part.write_to(out);
            true
        }
        None => false,
    }
}

/// The key text of row `row` across `columns` (a composite key when there
/// are several); `None` if any part is null.
pub fn row_key_text(columns: &[&dyn Array], row: usize) -> Option<String> {
    let mut out = String::new();
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push(COMPOSITE_SEPARATOR);
        }
        array_part(*column, row)?.write_to(&mut out);
    }
    Some(out)
}

/// The key text of a composite key from its parts' texts.
pub fn composite_key<S: AsRef<str>>(parts: &[S]) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(COMPOSITE_SEPARATOR);
        }
        out.push_str(p.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BooleanArray, Int32Array, Int64Array, LargeStringArray, StringArray,
        StringViewArray, UInt64Array,
    };
    use std::sync::Arc;

    /// Every key type, as the index builds it, as a selector probes it, and
    /// as the same value written by hand (Python and the CLI hand over
    /// parts): one text.
    #[test]
    fn every_path_gives_the_same_text_for_every_key_type() {
        let cases: Vec<(ArrayRef, KeyPart<'static>, &str)> = vec![
            (
                Arc::new(StringArray::from(vec!["10.0.0.1"])),
                KeyPart::Str("10.0.0.1"),
                "10.0.0.1",
            ),
            (
                Arc::new(LargeStringArray::from(vec!["alice"])),
                KeyPart::Str("alice"),
                "alice",
            ),
            (
                Arc::new(StringViewArray::from(vec!["bob"])),
                KeyPart::Str("bob"),
                "bob",
            ),
            (Arc::new(Int32Array::from(vec![-7])), KeyPart::Int(-7), "-7"),
            (
                Arc::new(Int64Array::from(vec![111_122_223_333])),
                KeyPart::Int(111_122_223_333),
                "111122223333",
            ),
            (
                Arc::new(UInt64Array::from(vec![u64::MAX])),
                KeyPart::UInt(u64::MAX),
                "18446744073709551615",
            ),
            (
                Arc::new(BooleanArray::from(vec![true])),
                KeyPart::Bool(true),
                "true",
            ),
        ];
        for (array, part, text) in cases {
            let mut probed = String::from("stale");
            assert!(
                array_key_text(array.as_ref(), 0, &mut probed),
                "{:?}",
                array.data_type()
            );
            let built = row_key_text(&[array.as_ref()], 0).unwrap();
            assert_eq!(probed, text, "{:?}", array.data_type());
            assert_eq!(built, text, "{:?}", array.data_type());
            assert_eq!(part.text(), text, "{:?}", array.data_type());
            assert_eq!(array_part(array.as_ref(), 0), Some(part));
        }
    }

    #[test]
    fn composite_keys_agree_and_nulls_find_nothing() {
        let account: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        let region: ArrayRef = Arc::new(StringArray::from(vec!["eu", "us"]));
        let built = row_key_text(&[account.as_ref(), region.as_ref()], 0).unwrap();
        let parts = [KeyPart::Int(1).text(), KeyPart::Str("eu").text()];
        assert_eq!(built, composite_key(&parts));
        assert_eq!(built, format!("1{COMPOSITE_SEPARATOR}eu"));
        assert_eq!(row_key_text(&[account.as_ref(), region.as_ref()], 1), None);
        let mut out = String::new();
        assert!(!array_key_text(account.as_ref(), 1, &mut out));
    }
}
