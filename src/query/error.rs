//! SQL errors with their position in the SQL text.

use datafusion::error::DataFusionError;
use std::fmt;

/// A problem in user SQL (parse, plan or execution), located where the
/// parser or planner could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
    /// 1-based line and column in the SQL text.
    pub position: Option<(usize, usize)>,
    /// The SQL line the position points into.
    pub excerpt: Option<String>,
}

impl SqlError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            position: None,
            excerpt: None,
        }
    }

    /// Locates a DataFusion error in `sql`: the planner's span when it has
    /// one, else the parser's "at Line: L, Column: C".
    pub fn from_datafusion(err: &DataFusionError, sql: &str) -> Self {
        let diagnostic = err.diagnostic();
        let mut message = match diagnostic {
            Some(d) => d.message.clone(),
            None => clean_message(&err.strip_backtrace()),
        };
        let mut position = diagnostic
            .and_then(|d| d.span)
            .filter(|s| s.start.line > 0)
            .map(|s| (s.start.line as usize, s.start.column as usize));
        if let Some((at, line, column)) = parser_position(&message) {
            position = position.or(Some((line, column)));
            message.truncate(at);
        }
        if let Some(d) = diagnostic {
            for help in &d.helps {
                message.push_str(&format!("; {}", help.message));
            }
        }
        let message = message.trim_end_matches(['.', ' ']).to_string();
        let mut out = Self::new(message);
        out.locate(position, sql);
        out
    }

    fn locate(&mut self, position: Option<(usize, usize)>, sql: &str) {
        self.position = position;
        self.excerpt = position.and_then(|(line, _)| sql.lines().nth(line - 1).map(str::to_string));
    }

    /// The excerpt with a caret under the column, indented by `indent`.
    pub fn caret(&self, indent: &str) -> Option<String> {
        let ((_, column), excerpt) = (self.position?, self.excerpt.as_ref()?);
        let pad: String = excerpt
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        Some(format!("{indent}{excerpt}\n{indent}{pad}^"))
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "line {line}, column {column}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if let Some(caret) = self.caret("  ") {
            write!(f, "\n{caret}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

/// Drops DataFusion's category prefixes ("Error during planning: ", the
/// parser's `ParserError("…")` wrapper) that say nothing to a user.
fn clean_message(message: &str) -> String {
    let mut text = message.trim().to_string();
    for prefix in [
        "SQL error: ",
        "Error during planning: ",
        "Schema error: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
        "Optimizer rule 'type_coercion' failed\ncaused by\n",
        "type_coercion\ncaused by\n",
    ] {
        while let Some(rest) = text.strip_prefix(prefix) {
            text = rest.trim_start().to_string();
        }
    }
    for wrapper in ["ParserError(\"", "TokenizerError(\""] {
        if let Some(inner) = text.strip_prefix(wrapper) {
            text = inner.trim_end_matches("\")").replace("\\\"", "\"");
        }
    }
    text.replace("sql parser error: ", "")
}

/// `(index, line, column)` of a trailing " at Line: L, Column: C".
fn parser_position(message: &str) -> Option<(usize, usize, usize)> {
    let at = message.rfind(" at Line: ")?;
    let rest = &message[at + " at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((at, line.trim().parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parser_positions() {
        let err = SqlError {
            message: "Expected: end of statement, found: FROMM".into(),
            position: Some((2, 3)),
            excerpt: Some("  FROMM events".into()),
        };
        assert_eq!(
            err.to_string(),
            "line 2, column 3: Expected: end of statement, found: FROMM\n    FROMM events\n    ^"
        );
        assert_eq!(
            parser_position("Expected: x, found: y at Line: 3, Column: 14"),
            Some((21, 3, 14))
        );
    }
}
