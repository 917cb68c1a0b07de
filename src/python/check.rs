//! What parsing (not running) the detections and their helpers tells: every
//! `from ravenwatch.enrichment import X` whose `X` the project does not
//! define, and the event paths rules read with literal keys, which the
//! reader then decodes as columns.

use super::error::LoadError;
use super::interpreter::helpers_module;
use crate::files::display_path;
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

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

const PREFILTER: &str = include_str!("prefilter.py");

/// The filter derived from a detection's `detect(r)` (a Panther rule's
/// `rule(event)`, with its global helpers) by reading its code and the
/// helpers it calls (see `prefilter.py`). A file that does not parse, or
/// anything the analysis does not follow, keeps every event.
pub fn derive_filter(
    def: &crate::config::DetectionDef,
    lib_dir: &Path,
) -> crate::prefilter::Derived {
    type Cache = std::collections::HashMap<(PathBuf, PathBuf, bool), crate::prefilter::Derived>;
    // Files do not change under a process: `test` plans a rule per case.
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();
    let script = def.script.as_path();
    let key = (
        script.to_path_buf(),
        lib_dir.to_path_buf(),
        def.panther.is_some(),
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return found;
    }
    let derived = derive_uncached(def, lib_dir);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, derived.clone());
    }
    derived
}

fn derive_uncached(def: &crate::config::DetectionDef, lib_dir: &Path) -> crate::prefilter::Derived {
    use crate::prefilter::{Derived, Note};
    let script = def.script.as_path();
    let (function, panther) = match &def.panther {
        Some(info) => (
            "rule",
            Some(
                info.support
                    .globals
                    .iter()
                    .map(|(id, f)| (id.clone(), f.to_string_lossy().into_owned()))
                    .collect::<std::collections::HashMap<_, _>>(),
            ),
        ),
        None => ("detect", None),
    };
    let shown = display_path(script);
    let fallback = |why: String| Derived {
        fallbacks: vec![Note {
            file: shown.clone(),
            line: 0,
            why,
        }],
        pure: false,
        ..Derived::keep_all()
    };
    let source = match std::fs::read_to_string(script) {
        Ok(s) => s,
        Err(e) => return fallback(format!("cannot be read: {e}")),
    };
    let analysed = Python::attach(|py| -> PyResult<String> {
        // Loaded once per process: it keeps the helper modules it parsed.
        let modules = py.import("sys")?.getattr("modules")?;
        let module = match modules
            .get_item("_ravenwatch_prefilter")
            .ok()
            .and_then(|m| m.cast_into::<PyModule>().ok())
        {
            Some(m) => m,
            None => {
                let m = PyModule::from_code(
                    py,
                    &super::interpreter::cstring(PREFILTER)?,
                    c"<ravenwatch.prefilter>",
                    c"_ravenwatch_prefilter",
                )?;
                modules.set_item("_ravenwatch_prefilter", &m)?;
                m
            }
        };
        let lib = lib_dir
            .is_dir()
            .then(|| lib_dir.to_string_lossy().into_owned());
        let out = module.call_method1("derive_json", (source, &shown, lib, function, panther))?;
        out.extract::<String>()
    });
    match analysed {
        Ok(json) => match serde_json::from_str(&json)
            .map_err(|e| e.to_string())
            .and_then(|v| Derived::from_json(&v).map_err(|e| e.to_string()))
        {
            Ok(derived) => derived,
            Err(e) => fallback(e),
        },
        Err(e) => fallback(format!("the analysis failed: {e}")),
    }
}
