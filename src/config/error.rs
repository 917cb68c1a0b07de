use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, position: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = position {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    /// Turns a serde_yaml error into a located message; an unknown field or
    /// variant gets the closest valid name as a hint.
    pub fn from_yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        if let Some(hint) = suggestion_for(&message) {
            message.push_str(&format!(" (did you mean `{hint}`?)"));
        }
        let position = err.location().map(|l| (l.line(), l.column()));
        Self::new(file, message).at(position)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", super::display_path(&self.file))?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}")?,
            (Some(line), None) => write!(f, ":{line}")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found while loading a project, reported together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The candidate closest to `word`, if any is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// serde's messages read "unknown field `x`, expected one of `a`, `b`"; the
/// first backticked word is the bad one, the rest are the valid names.
fn suggestion_for(message: &str) -> Option<String> {
    if !message.contains("unknown field") && !message.contains("unknown variant") {
        return None;
    }
    let words: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (bad, valid) = words.split_first()?;
    closest(bad, valid).map(str::to_string)
}

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
    fn suggests_nearest_field() {
        let msg = "alert: unknown field `treshold`, expected one of `severity`, `threshold`, `destinations`";
        assert_eq!(suggestion_for(msg).as_deref(), Some("threshold"));
        assert_eq!(suggestion_for("unknown field `zzz`, expected `name`"), None);
    }

    #[test]
    fn locates_keys() {
        let src = "name: x\nschema:\n  primary_key: ip\n  - lookup_keys: [a]\n";
        assert_eq!(locate_key(src, "primary_key"), Some((3, 3)));
        assert_eq!(locate_key(src, "lookup_keys"), Some((4, 5)));
        assert_eq!(locate_key(src, "nope"), None);
    }
}
