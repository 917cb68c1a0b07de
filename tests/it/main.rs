//! Integration tests: the real `ravenwatch` binary on fixture projects.
//!
//! Each test copies the example project at the repository root into a
//! temporary folder, overlays a fixture from `tests/data/<case>/`, and runs
//! the binary there with `-p .`, so messages show project-relative paths.

mod bad_input;
mod config_errors;
mod delivery;
mod enrichment;
mod geo;
mod hostile;
mod http;
mod newcomer;
mod panther;
mod panther_run;
mod prefilter;
mod python;
mod queue;
mod run;
mod s3;
mod selectors;
mod sql;
mod testing;
mod walkthrough;
mod workers;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The example project's detections that the sample logs make fire.
pub const EXAMPLE_RULES: [&str; 6] = [
    "failed_login_known_ip",
    "disable_ebs_encryption_production",
    "login_on_stale_asset",
    "smb_lateral_movement",
    "login_from_unexpected_country",
    "threat_ip_traffic",
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary copy of the example project with `tests/data/<overlay>` on top.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn example() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for part in ["schemas", "enrichment", "detections"] {
            copy_dir(&repo().join(part), &dir.path().join(part));
        }
        std::fs::copy(
            repo().join("ravenwatch.yml"),
            dir.path().join("ravenwatch.yml"),
        )
        .unwrap();
        Self { dir }
    }

    /// A temporary copy of `tests/data/<name>` alone (a project of its own).
    pub fn standalone(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("tests/data").join(name), dir.path());
        Self { dir }
    }

    pub fn with(overlay: &str) -> Self {
        let p = Self::example();
        copy_dir(&repo().join("tests/data").join(overlay), p.dir.path());
        p
    }

    /// Copies `tests/data/<overlay>` on top of the project.
    pub fn overlay(&self, overlay: &str) -> &Self {
        copy_dir(&repo().join("tests/data").join(overlay), self.path());
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The ids of the runs recorded in the project's local storage, oldest first.
    pub fn run_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.path().join(".ravenwatch/runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Matches recorded by every run in the project's local storage.
    pub fn stored_matches(&self) -> usize {
        self.run_ids()
            .iter()
            .map(|id| {
                read_jsonl(
                    &self
                        .path()
                        .join(format!(".ravenwatch/runs/{id}/matches.jsonl")),
                )
                .len()
            })
            .sum()
    }

    /// Keeps only the named detections.
    pub fn only_detections(&self, keep: &[&str]) -> &Self {
        for entry in std::fs::read_dir(self.path().join("detections")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('_') && !keep.contains(&name.as_str()) {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
        self
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ravenwatch"));
        cmd.current_dir(self.path()).args(["-p", "."]).args(args);
        cmd.env_remove("VIRTUAL_ENV");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run ravenwatch").into()
    }

    /// `ravenwatch run` on fixture logs, writing to `out/<name>`.
    pub fn detect(&self, logs: &[&str], name: &str) -> RunResult {
        let mut args = vec!["run".to_string()];
        for l in logs {
            args.push("--input".into());
            args.push(repo().join("tests/data/logs").join(l).display().to_string());
        }
        args.push("--output".into());
        args.push(format!("out/{name}"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.run(&refs);
        RunResult {
            dir: self.path().join("out").join(name),
            output,
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub struct RunResult {
    pub dir: PathBuf,
    pub output: Output,
}

/// The inputs the ledger of a local storage holds: the last commit's
/// journal (`state/alerts.json` `inputs`) and the markers under
/// `state/ledger/`.
pub fn ledger_locations(storage: &Path) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    if let Some(state) = std::fs::read_to_string(storage.join("state/alerts.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        if let Some(inputs) = state["inputs"].as_object() {
            found.extend(inputs.keys().cloned());
        }
    }
    let Ok(fans) = std::fs::read_dir(storage.join("state/ledger")) else {
        return found;
    };
    for fan in fans.flatten() {
        for marker in std::fs::read_dir(fan.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let marker: Option<Value> = std::fs::read_to_string(marker.path())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(location) = marker.as_ref().and_then(|m| m["location"].as_str()) {
                found.insert(location.to_string());
            }
        }
    }
    found
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

impl RunResult {
    pub fn alerts(&self) -> Vec<Value> {
        read_jsonl(&self.dir.join("alerts.jsonl"))
    }
    pub fn alerts_of(&self, rule: &str) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["rule"] == rule)
            .collect()
    }
    pub fn errors(&self) -> Vec<Value> {
        read_jsonl(&self.dir.join("errors.jsonl"))
    }
    pub fn summary(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("summary.json")).unwrap())
            .unwrap()
    }
}
