//! Config errors: one located problem (`ConfigError`, file:line:col and a
//! closest-name hint), all of a load (`ConfigErrors`), and the collector
//! validators write to (`Diagnostics`).

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
            message.push_str(&crate::suggest::hint(&hint));
        }
        let position = err.location().map(|l| (l.line(), l.column()));
        Self::new(file, message).at(position)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::files::display_path(&self.file))?;
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

/// serde's messages read "unknown field `x`, expected one of `a`, `b`"; the
/// first backticked word is the bad one, the rest are the valid names.
fn suggestion_for(message: &str) -> Option<String> {
    if !message.contains("unknown field") && !message.contains("unknown variant") {
        return None;
    }
    let words: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (bad, valid) = words.split_first()?;
    crate::suggest::closest(bad, valid).map(str::to_string)
}

/// Every error of one load, collected rather than stopping at the first
/// (Vector's loader does the same), so `validate` shows them all at once.
#[derive(Debug, Default)]
pub struct Diagnostics(Vec<ConfigError>);

impl Diagnostics {
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    pub fn append(&mut self, other: &mut Diagnostics) {
        self.0.append(&mut other.0);
    }

    /// A view that knows which errors were added through it: validators
    /// build their value only if their own part was clean.
    pub fn scope(&mut self) -> Scope<'_> {
        let start = self.0.len();
        Scope {
            diagnostics: self,
            start,
        }
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}

/// See [`Diagnostics::scope`].
pub struct Scope<'a> {
    diagnostics: &'a mut Diagnostics,
    start: usize,
}

impl Scope<'_> {
    /// No error was added since the scope began.
    pub fn is_clean(&self) -> bool {
        self.diagnostics.0.len() == self.start
    }
}

impl std::ops::Deref for Scope<'_> {
    type Target = Diagnostics;
    fn deref(&self) -> &Diagnostics {
        self.diagnostics
    }
}

impl std::ops::DerefMut for Scope<'_> {
    fn deref_mut(&mut self) -> &mut Diagnostics {
        self.diagnostics
    }
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
    fn a_scope_sees_only_its_own_errors() {
        let mut all = Diagnostics::default();
        all.push(ConfigError::new(Path::new("a.yml"), "first"));
        let mut scope = all.scope();
        assert!(scope.is_clean());
        scope.push(ConfigError::new(Path::new("a.yml"), "second"));
        assert!(!scope.is_clean());
        assert_eq!(all.into_vec().len(), 2);
    }
}
