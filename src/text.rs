//! How numbers read in messages: counts with their noun in the right
//! number ("1 alert", "2 alerts") and large numbers with thousands
//! separators, so summaries and progress lines read as sentences.

/// `n` and `noun`, pluralised with `s` unless `n` is 1: `count(3, "rule")`
/// is "3 rules". Nouns with other plurals use [`count_as`].
pub fn count(n: u64, noun: &str) -> String {
    count_as(n, noun, &format!("{noun}s"))
}

/// `n` with `one` or `many`: `count_as(2, "match", "matches")`.
pub fn count_as(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// `n` with a comma every three digits: 1234567 is "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or other positive measure rounded to a whole number, with
/// separators: 16481.5688 is "16,482".
pub fn rounded(x: f64) -> String {
    if x.is_finite() && x >= 0.0 {
        thousands(x.round() as u64)
    } else {
        "0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_sentences() {
        assert_eq!(count(1, "alert"), "1 alert");
        assert_eq!(count(0, "alert"), "0 alerts");
        assert_eq!(count(1234, "event"), "1,234 events");
        assert_eq!(count_as(1, "match", "matches"), "1 match");
        assert_eq!(count_as(2, "match", "matches"), "2 matches");
    }

    #[test]
    fn large_numbers_have_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rounded(16481.5688), "16,482");
        assert_eq!(rounded(f64::NAN), "0");
    }
}
