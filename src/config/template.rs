//! `{field.path}` templates over a SQL detection's result row or an alert
//! (`dedupe:`, `title:`, Jira `fields`): parsed once, rendered many times.

/// A `{field.path}` template over a SQL detection's result row
/// (`{{` and `}}` for literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub text: String,
    pub parts: Vec<TemplatePart>,
    /// Where the template is in detection.yml.
    pub position: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    /// A dotted field path.
    Field(String),
}

impl Template {
    /// Parses `text`; a bare path without braces (`dedupe: source.ip`) is
    /// one field.
    ///
    /// # Errors
    /// An unclosed or empty `{}`.
    pub fn parse(text: &str, bare_path: bool) -> Result<Self, String> {
        let is_path = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        if bare_path && !text.contains('{') && is_path(text.trim()) {
            return Ok(Self {
                text: text.to_string(),
                parts: vec![TemplatePart::Field(text.trim().to_string())],
                position: None,
            });
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err(format!("unclosed `{{` in template {text:?}")),
                        }
                    }
                    let field = field.trim().to_string();
                    if !is_path(&field) {
                        return Err(format!(
                            "`{{{field}}}` in template {text:?} is not a field path (write `{{source.ip}}`; `{{{{` for a literal brace)"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Field(field));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in template {text:?} (write `}}}}`)"
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self {
            text: text.to_string(),
            parts,
            position: None,
        })
    }

    /// The field paths the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Field(f) => Some(f.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_literals_and_escaped_braces() {
        let t = Template::parse("{user} from {{ {source.ip} }}", false).unwrap();
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Field("user".into()),
                TemplatePart::Literal(" from { ".into()),
                TemplatePart::Field("source.ip".into()),
                TemplatePart::Literal(" }".into()),
            ]
        );
        assert_eq!(t.fields().collect::<Vec<_>>(), ["user", "source.ip"]);
    }

    #[test]
    fn a_bare_path_is_one_field_only_where_allowed() {
        let bare = Template::parse("source.ip", true).unwrap();
        assert_eq!(bare.parts, vec![TemplatePart::Field("source.ip".into())]);
        let text = Template::parse("source.ip", false).unwrap();
        assert_eq!(text.parts, vec![TemplatePart::Literal("source.ip".into())]);
    }

    #[test]
    fn malformed_templates_say_why() {
        assert!(Template::parse("{user", false)
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("a } b", false)
            .unwrap_err()
            .contains("unmatched"));
        assert!(Template::parse("{a b}", false)
            .unwrap_err()
            .contains("not a field path"));
    }
}
