//! Positions in YAML text for errors found after parsing (serde_yaml
//! cannot locate those): the first line where a key or a text appears.

/// 1-based (line, column) of the first line where `key:` appears as a YAML
/// key, for errors found after parsing (which serde_yaml cannot locate).
pub fn locate_key(source: &str, key: &str) -> Option<(usize, usize)> {
    source.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        let col = line.len() - trimmed.len() + 1;
        (trimmed.starts_with(key) && trimmed[key.len()..].trim_start().starts_with(':'))
            .then_some((i + 1, col))
    })
}

/// 1-based (line, column) of the first occurrence of `needle` in `source`.
pub fn locate_text(source: &str, needle: &str) -> Option<(usize, usize)> {
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| line.find(needle).map(|c| (i + 1, c + 1)))
}

/// [`locate_text`] from the line of the YAML key `section:` on (the
/// first occurrence of `needle` within that section, roughly).
pub fn locate_text_after(source: &str, section: &str, needle: &str) -> Option<(usize, usize)> {
    let (start, _) = locate_key(source, section)?;
    source
        .lines()
        .enumerate()
        .skip(start - 1)
        .find_map(|(i, line)| line.find(needle).map(|c| (i + 1, c + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys() {
        let src = "name: x\nschema:\n  primary_key: ip\n  - lookup_keys: [a]\n";
        assert_eq!(locate_key(src, "primary_key"), Some((3, 3)));
        assert_eq!(locate_key(src, "lookup_keys"), Some((4, 5)));
        assert_eq!(locate_key(src, "nope"), None);
    }

    #[test]
    fn locates_text_within_a_section() {
        let src = "a: ip\nfields:\n  - ip\n";
        assert_eq!(locate_text(src, "ip"), Some((1, 4)));
        assert_eq!(locate_text_after(src, "fields", "ip"), Some((3, 5)));
    }
}
