//! Reading the project's YAML: one file into its raw serde type (a failure
//! becomes a located error), the component folders of a section, and the
//! shapes YAML allows for convenience.

use super::error::{ConfigError, Diagnostics};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Reads and parses one YAML file; a failure becomes a located error.
pub(crate) fn read_yaml<T: DeserializeOwned>(
    file: &Path,
    errors: &mut Diagnostics,
) -> Option<(T, String)> {
    let source = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            errors.push(ConfigError::new(file, format!("cannot read file: {e}")));
            return None;
        }
    };
    match serde_yaml::from_str::<T>(&source) {
        Ok(value) => Some((value, source)),
        Err(e) => {
            errors.push(ConfigError::from_yaml(file, &e));
            None
        }
    }
}

/// Each component folder of `section` (`enrichment/`, `detections/`) with
/// its `file_name` parsed as `T`: (folder, file, raw, text). A folder
/// without the file, or with a file that does not parse, is an error
/// (`what` names the kind of folder) and is skipped, unless `foreign` says
/// the folder holds another format (read elsewhere).
pub(super) fn read_components<T: DeserializeOwned>(
    section: &Path,
    file_name: &str,
    what: &str,
    foreign: &dyn Fn(&Path) -> bool,
    errors: &mut Diagnostics,
) -> Vec<(PathBuf, PathBuf, T, String)> {
    let mut out = Vec::new();
    for dir in component_dirs(section) {
        let file = dir.join(file_name);
        if !file.exists() && foreign(&dir) {
            continue;
        }
        if !file.exists() {
            errors.push(ConfigError::new(
                &file,
                format!("missing {file_name} for this {what} folder"),
            ));
            continue;
        }
        if let Some((raw, source)) = read_yaml::<T>(&file, errors) {
            out.push((dir, file, raw, source));
        }
    }
    out
}

/// Sub-folders of `dir` in name order, skipping hidden ones and `_lib`-style helpers.
pub(super) fn component_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !n.starts_with('_') && n != "__pycache__")
        })
        .collect();
    dirs.sort();
    dirs
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}
