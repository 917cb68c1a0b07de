//! `ravenwatch init`: a minimal working project to start from, for generic
//! ECS-style events or for AWS CloudTrail. Every file it writes is what the
//! README's walkthrough shows.

use super::args::{Outcome, Starter};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Files every project gets.
const COMMON: &[(&str, &str)] = &[
    ("ravenwatch.yml", include_str!("templates/ravenwatch.yml")),
    (
        "enrichment/known_ip_info/enrichment.yml",
        include_str!("templates/known_ip_enrichment.yml"),
    ),
    (
        "enrichment/known_ip_info/data.jsonl",
        include_str!("templates/known_ip_data.jsonl"),
    ),
];

const ECS: &[(&str, &str)] = &[
    (
        "schemas/events.yml",
        include_str!("templates/ecs/events.yml"),
    ),
    (
        "detections/failed_login/detection.yml",
        include_str!("templates/ecs/detection.yml"),
    ),
    (
        "detections/failed_login/detect.py",
        include_str!("templates/ecs/detect.py"),
    ),
    (
        "detections/failed_login/tests/cases.yml",
        include_str!("templates/ecs/detection_tests.yml"),
    ),
    (
        "samples/events.jsonl",
        include_str!("templates/ecs/events.jsonl"),
    ),
];

const CLOUDTRAIL: &[(&str, &str)] = &[
    (
        "schemas/cloudtrail.yml",
        include_str!("templates/cloudtrail/cloudtrail.yml"),
    ),
    (
        "detections/root_console_login/detection.yml",
        include_str!("templates/cloudtrail/detection.yml"),
    ),
    (
        "detections/root_console_login/detect.py",
        include_str!("templates/cloudtrail/detect.py"),
    ),
    (
        "detections/root_console_login/tests/cases.yml",
        include_str!("templates/cloudtrail/detection_tests.yml"),
    ),
    (
        "samples/cloudtrail.json",
        include_str!("templates/cloudtrail/cloudtrail.json"),
    ),
];

/// What `.gitignore` needs: storage holds snapshots and run outputs.
const IGNORED: &str = include_str!("templates/gitignore");

pub fn init(dir: &Path, starter: Starter) -> Result<Outcome> {
    let specific = match starter {
        Starter::Ecs => ECS,
        Starter::Cloudtrail => CLOUDTRAIL,
    };
    let files: Vec<&(&str, &str)> = COMMON.iter().chain(specific).collect();
    let existing: Vec<&str> = files
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| dir.join(p).exists())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already has {}; nothing was written",
            dir.display(),
            existing.join(", ")
        );
    }
    for (path, content) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    ignore_storage(dir)?;
    println!("created a Ravenwatch project in {}", dir.display());
    let mut next = Vec::new();
    if dir != Path::new(".") {
        next.push(format!("cd {}", dir.display()));
    }
    next.push("ravenwatch test".into());
    next.push("ravenwatch run --input samples/".into());
    for (i, step) in next.iter().enumerate() {
        println!("{}{step}", if i == 0 { "next: " } else { "      " });
    }
    Ok(Outcome::Done)
}

/// Adds the storage folder to `.gitignore`, keeping what is there.
fn ignore_storage(dir: &Path) -> Result<()> {
    let path = dir.join(".gitignore");
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if current.lines().any(|l| l.trim() == IGNORED.trim()) {
        return Ok(());
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(IGNORED);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}
