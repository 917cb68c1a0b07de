//! "Did you mean …" hints: one measure of closeness and one wording for
//! every message that names something unknown (a field, table, rule, type).

/// The candidate closest to `word`, if any is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The hint to append to a message about `word`: `` (did you mean `x`?)``
/// with a leading space, or empty when no candidate is close.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates).map(hint).unwrap_or_default()
}

/// The wording of a hint for a known suggestion.
pub fn hint(suggestion: &str) -> String {
    format!(" (did you mean `{suggestion}`?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_a_close_name_only() {
        assert_eq!(
            did_you_mean("stirng", &["string", "int"]),
            " (did you mean `string`?)"
        );
        assert_eq!(did_you_mean("zzz", &["string", "int"]), "");
        assert_eq!(did_you_mean("x", &[]), "");
    }

    #[test]
    fn picks_the_closest_of_several() {
        assert_eq!(
            closest("jira_mian", &["jira_main", "jira_other", "slack"]),
            Some("jira_main")
        );
    }
}
