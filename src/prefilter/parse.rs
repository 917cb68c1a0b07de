//! The analysis' JSON (see `python/prefilter.py`) → a [`Derived`], each
//! distinct atom once.

use super::{Atom, CmpOp, CollectionKind, Derived, Formula, May, Note, ValueExpr};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The analysis produced something this engine does not know (a version
/// mismatch between the two halves, never the user's doing).
#[derive(Debug, thiserror::Error)]
#[error("derived filter: {0}")]
pub struct ParseError(String);

fn err<T>(message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(message.into()))
}

impl Derived {
    /// Reads the analysis' output.
    ///
    /// # Errors
    /// A shape the engine does not know.
    pub fn from_json(json: &Value) -> Result<Self, ParseError> {
        let mut atoms = Atoms::default();
        let keep = formula(json.get("keep").unwrap_or(&Value::Bool(true)), &mut atoms)?;
        let notes = |key: &str| -> Vec<Note> {
            json.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|n| Note {
                            file: n["file"].as_str().unwrap_or_default().to_string(),
                            line: n["line"].as_u64().unwrap_or(0) as usize,
                            why: n["why"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Self {
            keep,
            keys: {
                let mut keys = vec![String::new(); atoms.list.len()];
                for (key, i) in atoms.seen {
                    keys[i] = key;
                }
                keys
            },
            atoms: atoms.list,
            pure: json.get("pure").and_then(Value::as_bool).unwrap_or(false),
            impure: notes("impure"),
            guarded: json
                .get("guarded")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            fallbacks: notes("fallbacks"),
        })
    }
}

#[derive(Default)]
struct Atoms {
    list: Vec<Atom>,
    seen: HashMap<String, usize>,
}

fn formula(json: &Value, atoms: &mut Atoms) -> Result<Formula, ParseError> {
    let Some(object) = json.as_object() else {
        return match json {
            Value::Bool(b) => Ok(Formula::Const(*b)),
            other => err(format!("a formula cannot be {other}")),
        };
    };
    if let Some(parts) = object.get("and").and_then(Value::as_array) {
        return Ok(Formula::And(
            parts
                .iter()
                .map(|p| formula(p, atoms))
                .collect::<Result<_, _>>()?,
        ));
    }
    if let Some(parts) = object.get("or").and_then(Value::as_array) {
        return Ok(Formula::Or(
            parts
                .iter()
                .map(|p| formula(p, atoms))
                .collect::<Result<_, _>>()?,
        ));
    }
    let may = match object.get("may").and_then(Value::as_str) {
        Some("t") => May::True,
        Some("f") => May::False,
        Some("r") => May::Raise,
        other => return err(format!("unknown outcome {other:?}")),
    };
    let spec = object
        .get("atom")
        .ok_or_else(|| ParseError("a leaf without atom".into()))?;
    let key = spec.to_string();
    let index = match atoms.seen.get(&key) {
        Some(i) => *i,
        None => {
            let parsed = atom(spec)?;
            atoms.list.push(parsed);
            atoms.seen.insert(key, atoms.list.len() - 1);
            atoms.list.len() - 1
        }
    };
    Ok(Formula::May(index, may))
}

fn field<'a>(spec: &'a Value, key: &str) -> Result<&'a Value, ParseError> {
    spec.get(key)
        .ok_or_else(|| ParseError(format!("atom {spec} has no `{key}`")))
}

fn string(spec: &Value, key: &str) -> Result<String, ParseError> {
    field(spec, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ParseError(format!("`{key}` of {spec} is not text")))
}

fn atom(spec: &Value) -> Result<Atom, ParseError> {
    let op = string(spec, "op")?;
    let value = || value_expr(field(spec, "v")?);
    Ok(match op.as_str() {
        "truthy" => Atom::Truthy(value()?),
        "is_none" => Atom::IsNone(value()?),
        "cmp" => {
            let op = match string(spec, "cmp")?.as_str() {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                other => return err(format!("unknown comparison {other}")),
            };
            Atom::Cmp(op, value()?, field(spec, "lit")?.clone())
        }
        "in" => Atom::Contains {
            needle: field(spec, "needle")?.clone(),
            value: value()?,
        },
        "in_lit" => {
            let kind = string(spec, "kind")?;
            if kind == "str" {
                Atom::InText {
                    value: value()?,
                    text: string(spec, "items")?,
                }
            } else {
                let items = field(spec, "items")?
                    .as_array()
                    .ok_or_else(|| ParseError(format!("`items` of {spec} is not a list")))?;
                let mut strings = std::collections::HashSet::new();
                let mut others = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => {
                            strings.insert(s.clone());
                        }
                        other => others.push(other.clone()),
                    }
                }
                Atom::InLiteral {
                    value: value()?,
                    kind: if kind == "seq" {
                        CollectionKind::Sequence
                    } else {
                        CollectionKind::Hashed
                    },
                    strings,
                    others,
                }
            }
        }
        "startswith" | "endswith" => Atom::Affix {
            value: value()?,
            items: field(spec, "items")?
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            end: op == "endswith",
        },
        "has" => Atom::Has(string(spec, "path")?),
        "table_has" => Atom::TableHas {
            table: string(spec, "table")?,
            key: value()?,
        },
        other => return err(format!("unknown atom `{other}`")),
    })
}

fn value_expr(spec: &Value) -> Result<ValueExpr, ParseError> {
    let Some(object) = spec.as_object() else {
        return err(format!("a value cannot be {spec}"));
    };
    let one = |key: &str, object: &Map<String, Value>| object.get(key).map(value_expr);
    if let Some(path) = object.get("field").and_then(Value::as_str) {
        return Ok(ValueExpr::Field {
            path: path.to_string(),
            default: object.get("default").cloned().unwrap_or(Value::Null),
            item: object.get("how").and_then(Value::as_str) == Some("item"),
            ci: object.get("ci").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    if let Some(inner) = one("lower", object) {
        return Ok(ValueExpr::Lower(Box::new(inner?)));
    }
    if let Some(inner) = one("upper", object) {
        return Ok(ValueExpr::Upper(Box::new(inner?)));
    }
    if let Some(inner) = one("or_else", object) {
        return Ok(ValueExpr::OrElse(
            Box::new(inner?),
            object.get("lit").cloned().unwrap_or(Value::Null),
        ));
    }
    err(format!("unknown value {spec}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_atoms_are_read_once_and_shown_as_sql() {
        let eq = json!({"op": "cmp", "cmp": "!=", "v": {"field": "event.action", "default": null, "how": "get"}, "lit": "Stop"});
        let derived = Derived::from_json(&json!({
            "keep": {"or": [
                {"atom": eq, "may": "f"},
                {"and": [{"atom": eq, "may": "t"},
                         {"atom": {"op": "table_has", "table": "ips", "v": {"field": "source.ip", "how": "get"}}, "may": "r"}]}
            ]},
            "pure": true, "impure": [], "fallbacks": [{"file": "d.py", "line": 3, "why": "x"}]
        }))
        .unwrap();
        assert_eq!(derived.atoms.len(), 2);
        assert_eq!(
            derived.text(),
            "event.action = 'Stop' OR (event.action <> 'Stop' AND RAISES(source.ip IN ips))"
        );
        assert_eq!(derived.fallbacks[0].to_string(), "d.py:3: x");
        assert!(derived.narrows());
    }

    #[test]
    fn an_unknown_shape_is_an_error_not_a_filter() {
        let err = Derived::from_json(&json!({"keep": {"atom": {"op": "regex"}, "may": "t"}}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown atom `regex`"), "{err}");
    }
}
