//! What every command resolves first: the project, its storage and the
//! uploads location, opened and checked so a bad bucket or credentials fail
//! before any work.

use super::args::GlobalArgs;
use crate::config::Project;
use crate::storage::{self, Storage};
use anyhow::{Context, Result};
use std::sync::Arc;

/// A mistake in how a command was called (exit 2, as clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Refuses a `-p` folder that holds no project, naming what was looked for.
pub(super) fn require_project(root: &std::path::Path) -> Result<(), UsageError> {
    if !root.is_dir() {
        return Err(UsageError(format!(
            "project folder {} does not exist (create a project with `ravenwatch init {}`)",
            root.display(),
            root.display()
        )));
    }
    if Project::exists_at(root) {
        return Ok(());
    }
    let folders = crate::config::PROJECT_FOLDERS
        .map(|f| format!("{f}/"))
        .join(", ");
    Err(UsageError(format!(
        "{} is not a Ravenwatch project: it has no {} and none of {folders} \
         (use -p to point at a project, or create one with `ravenwatch init`)",
        root.display(),
        crate::config::PROJECT_FILE
    )))
}

/// The project at `-p`; a Panther directory (rules in Panther's format, no
/// Ravenwatch project files) becomes one with a built-in log table per
/// `--log-type`.
pub(super) fn load_project(global: &GlobalArgs) -> Result<Project> {
    if is_panther_dir(&global.project) {
        if global.log_types.is_empty() {
            let known: Vec<&str> = crate::config::KNOWN_LOG_TYPES
                .iter()
                .map(|(t, _)| *t)
                .collect();
            return Err(UsageError(format!(
                "{} holds Panther rules: name the inputs' log type with --log-type (one of {})",
                global.project.display(),
                known.join(", ")
            ))
            .into());
        }
        return Project::load_panther(&global.project, &global.log_types)
            .map_err(|errors| anyhow::anyhow!("{errors}"));
    }
    require_project(&global.project)?;
    Project::load(&global.project).map_err(|errors| anyhow::anyhow!("{errors}"))
}

/// A `-p` folder that is a Panther directory (rules in Panther's format,
/// no Ravenwatch project files).
pub(super) fn is_panther_dir(root: &std::path::Path) -> bool {
    root.is_dir() && !Project::exists_at(root) && crate::config::is_panther_dir(root)
}

/// Opens `location` (`what` names it in errors) and checks it is usable,
/// so a bad bucket or credentials fail before any work.
pub(super) fn open_checked(
    project: &Project,
    location: &str,
    what: &str,
) -> Result<Arc<dyn Storage>> {
    let opened = storage::open(location, &project.root, &project.settings.aws)
        .with_context(|| format!("cannot open {what} `{location}`"))?;
    opened.check()?;
    Ok(opened)
}

fn storage_location<'a>(global: &'a GlobalArgs, project: &'a Project) -> &'a str {
    global
        .storage
        .as_deref()
        .unwrap_or(&project.settings.storage)
}

pub(super) fn open_storage(global: &GlobalArgs, project: &Project) -> Result<Arc<dyn Storage>> {
    open_checked(project, storage_location(global, project), "storage")
}

/// Where dynamic tables' uploads live: `enrichment_uploads`, else
/// `<storage>/uploads`.
pub(super) fn open_uploads(global: &GlobalArgs, project: &Project) -> Result<Arc<dyn Storage>> {
    let location = match &project.settings.enrichment_uploads {
        Some(l) => l.clone(),
        None => {
            let storage = storage_location(global, project);
            if storage.starts_with("s3://") {
                format!("{}/uploads", storage.trim_end_matches('/'))
            } else {
                std::path::Path::new(storage)
                    .join("uploads")
                    .display()
                    .to_string()
            }
        }
    };
    open_checked(project, &location, "the uploads location")
}

/// An engine error as the CLI reports it: a usage mistake exits 2.
/// An input problem: a usage error when it is a mistake in the paths.
pub(super) fn from_log(e: crate::logs::LogError) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        e.into()
    }
}

pub(super) fn from_engine(e: crate::engine::EngineError) -> anyhow::Error {
    match e {
        crate::engine::EngineError::Usage(message) => UsageError(message).into(),
        other => other.into(),
    }
}
