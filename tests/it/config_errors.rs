//! One fixture per kind of configuration error (`tests/data/config/<case>/`),
//! each a small overlay on `tests/data/config/_base/` (a `_remove` file
//! lists base files the case deletes), with the whole message pinned by a
//! snapshot named after the case, as ruff pins one diagnostic per fixture.
//! The base itself must load cleanly, so every error comes from its case.

use ravenwatch::config::Project;
use std::path::Path;

fn config_dir() -> std::path::PathBuf {
    crate::repo().join("tests/data/config")
}

/// Every error `Project::load_partial` reports for `case`, one per line,
/// with paths relative to the project (as `ravenwatch validate -p .` shows them).
fn load_errors(case: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    crate::copy_dir(&config_dir().join("_base"), root);
    if let Some(case) = case {
        let overlay = config_dir().join(case);
        crate::copy_dir(&overlay, root);
        if let Ok(removed) = std::fs::read_to_string(overlay.join("_remove")) {
            for file in removed.lines().filter(|l| !l.trim().is_empty()) {
                std::fs::remove_file(root.join(file)).unwrap();
            }
            std::fs::remove_file(root.join("_remove")).unwrap();
        }
    }
    let (_, errors) = Project::load_partial(root);
    let prefix = format!("{}/", root.display());
    errors
        .iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_base_project_is_valid() {
    assert_eq!(load_errors(None), "");
}

#[test]
fn every_config_error_case_has_its_message() {
    let mut cases: Vec<String> = std::fs::read_dir(config_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for case in &cases {
        let message = load_errors(Some(case));
        assert!(!message.is_empty(), "case `{case}` loads without an error");
        insta::with_settings!({ snapshot_path => "snapshots/config", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(case.as_str(), message);
        });
    }
}

#[test]
fn a_missing_project_directory_is_one_error() {
    let (_, errors) = Project::load_partial(Path::new("/nonexistent/ravenwatch-project"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "/nonexistent/ravenwatch-project: project directory does not exist"
    );
}
