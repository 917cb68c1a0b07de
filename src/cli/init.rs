//! `ravenwatch init`: a minimal working project to start from.

use super::args::Outcome;
use anyhow::{bail, Context, Result};
use std::path::Path;

const FILES: &[(&str, &str)] = &[
    ("ravenwatch.yml", include_str!("templates/ravenwatch.yml")),
    ("schemas/events.yml", include_str!("templates/events.yml")),
    (
        "enrichment/known_ip_info/enrichment.yml",
        include_str!("templates/known_ip_enrichment.yml"),
    ),
    (
        "enrichment/known_ip_info/data.jsonl",
        include_str!("templates/known_ip_data.jsonl"),
    ),
    (
        "detections/failed_login/detection.yml",
        include_str!("templates/detection.yml"),
    ),
    (
        "detections/failed_login/detect.py",
        include_str!("templates/detect.py"),
    ),
    (
        "detections/failed_login/tests/cases.yml",
        include_str!("templates/detection_tests.yml"),
    ),
    (
        "samples/events.jsonl",
        include_str!("templates/events.jsonl"),
    ),
];

pub fn init(dir: &Path) -> Result<Outcome> {
    let existing: Vec<&str> = FILES
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
    for (path, content) in FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    println!("created a Ravenwatch project in {}", dir.display());
    println!("next: ravenwatch test -p {}", dir.display());
    println!(
        "      ravenwatch run -p {} --input {}",
        dir.display(),
        dir.join("samples").display()
    );
    Ok(Outcome::Done)
}
