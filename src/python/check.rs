//! What parsing (not running) the detections and their helpers tells: every
//! `from ravenwatch.enrichment import X` whose `X` the project does not
//! define, and the event paths rules read with literal keys, which the
//! reader then decodes as columns.

use super::error::LoadError;
use super::interpreter::helpers_module;
use crate::files::display_path;
use pyo3::prelude::*;
use std::path::PathBuf;

/// Every `from ravenwatch.enrichment import X` (or `matano.enrichment`)
/// in `files` whose `X` is not in `known`, with file and line.
///
/// A file that does not parse is left to the import, which reports it.
pub fn unknown_table_imports(files: &[PathBuf], known: &[&str]) -> Vec<LoadError> {
    Python::attach(|py| {
        let Ok(helpers) = helpers_module(py) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for file in files {
            let Ok(source) = std::fs::read_to_string(file) else {
                continue;
            };
            let shown = display_path(file);
            let Ok(found) = helpers
                .call_method1("table_imports", (source, &shown))
                .and_then(|f| f.extract::<Vec<(usize, String)>>())
            else {
                continue;
            };
            for (line, name) in found {
                if known.contains(&name.as_str()) {
                    continue;
                }
                let hint = crate::suggest::did_you_mean(&name, known);
                out.push(LoadError {
                    rule: String::new(),
                    file: shown.clone(),
                    line: Some(line),
                    unknown_table: Some(name.clone()),
                    message: format!(
                        "imports enrichment table `{name}`, which is not defined{hint}; known tables: {}",
                        if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                    ),
                });
            }
        }
        out
    })
}

/// The event paths `files` read with literal keys (`r.deepget("a.b")`,
/// `r.get("a")`, `r["a"]`, `"a" in r`, `deep_get(event, "a", "b")`),
/// sorted and without repeats. A file that does not parse adds nothing (the
/// import reports it).
pub fn read_paths(files: &[PathBuf]) -> Vec<String> {
    Python::attach(|py| {
        let Ok(helpers) = helpers_module(py) else {
            return Vec::new();
        };
        let mut out = std::collections::BTreeSet::new();
        for file in files {
            let Ok(source) = std::fs::read_to_string(file) else {
                continue;
            };
            if let Ok(paths) = helpers
                .call_method1("event_paths", (source, display_path(file)))
                .and_then(|f| f.extract::<Vec<String>>())
            {
                out.extend(paths);
            }
        }
        out.into_iter().collect()
    })
}
