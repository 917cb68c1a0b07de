//! `ravenwatch explain`: what filter each Python rule derives from its own
//! code, what fell back to "keep" (and where), whether the rule is pure,
//! and with `--input` how many events the filter lets through.

use super::args::{GlobalArgs, Outcome};
use super::context::{from_engine, load_project, open_storage, UsageError};
use crate::config::DetectionDef;
use crate::logs::{read_inputs, EventReader, ReadItem};
use crate::prefilter::Derived;
use crate::text::{count, thousands};
use anyhow::Result;
use std::io::Write;

pub(super) fn explain(
    global: &GlobalArgs,
    names: &[String],
    inputs: &[String],
    table: Option<&str>,
) -> Result<Outcome> {
    let project = load_project(global)?;
    let python: Vec<&DetectionDef> = project.detections.iter().filter(|d| !d.is_sql()).collect();
    let known: Vec<&str> = python.iter().map(|d| d.name.as_str()).collect();
    for name in names {
        if !known.contains(&name.as_str()) {
            let hint = crate::suggest::did_you_mean(name, &known);
            return Err(UsageError(format!("no Python detection named `{name}`{hint}")).into());
        }
    }
    let chosen: Vec<&DetectionDef> = python
        .into_iter()
        .filter(|d| names.is_empty() || names.contains(&d.name))
        .collect();
    let lib_dir = project.detection_lib_dir();
    let derived: Vec<Derived> = chosen
        .iter()
        .map(|d| crate::python::derive_filter(d, &lib_dir))
        .collect();
    let passes = if inputs.is_empty() {
        None
    } else {
        Some(pass_counts(
            global, &project, &chosen, &derived, inputs, table,
        )?)
    };
    let mut out = std::io::stdout().lock();
    for (i, (def, d)) in chosen.iter().zip(&derived).enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}", def.name)?;
        let applied = def.auto_filter && d.applicable() && d.narrows();
        writeln!(out, "  derived filter: {}", d.text())?;
        if !def.auto_filter {
            writeln!(
                out,
                "  not applied: `auto_filter: false` in {}",
                crate::files::display_path(&def.file)
            )?;
        } else if !d.applicable() {
            writeln!(out, "  not applied: the rule is impure")?;
        } else if !d.narrows() {
            writeln!(out, "  not applied: it keeps every event")?;
        }
        if d.pure {
            writeln!(out, "  pure: yes")?;
        } else if d.guarded {
            writeln!(
                out,
                "  pure: no, but its effects come after what the filter keeps (it keeps every event that reaches them)"
            )?;
            for note in &d.impure {
                writeln!(out, "    {note}")?;
            }
        } else {
            writeln!(out, "  pure: no")?;
            for note in &d.impure {
                writeln!(out, "    {note}")?;
            }
        }
        if !d.fallbacks.is_empty() {
            writeln!(out, "  kept as \"may match\" (not understood):")?;
            for note in &d.fallbacks {
                writeln!(out, "    {note}")?;
            }
        }
        if let Some((events, kept)) = passes.as_ref().map(|p| p[i]) {
            let share = if events == 0 {
                0.0
            } else {
                kept as f64 * 100.0 / events as f64
            };
            let note = if applied {
                ""
            } else {
                " (not applied in runs)"
            };
            writeln!(
                out,
                "  passes: {} of {} ({share:.2}%){note}",
                thousands(kept),
                count(events, "event")
            )?;
        }
    }
    Ok(Outcome::Done)
}

/// (events, events the derived filter keeps) per rule over `inputs`.
fn pass_counts(
    global: &GlobalArgs,
    project: &crate::config::Project,
    rules: &[&DetectionDef],
    derived: &[Derived],
    inputs: &[String],
    table: Option<&str>,
) -> Result<Vec<(u64, u64)>> {
    let log = project.log_table_for(table).map_err(UsageError)?;
    let storage = open_storage(global, project)?;
    let (tables, _) = crate::engine::prepare_tables(project, storage.as_ref());
    let owned: Vec<DetectionDef> = rules.iter().map(|d| (*d).clone()).collect();
    let reader =
        EventReader::with_read_paths(log, &crate::engine::read_paths(project, log, &owned));
    let inputs = crate::engine::expand(project, inputs).map_err(from_engine)?;
    let mut counts = vec![(0u64, 0u64); rules.len()];
    let mut failure = None;
    read_inputs(&reader, inputs, &mut |item| match item {
        ReadItem::Batch(batch) => {
            for (c, d) in counts.iter_mut().zip(derived) {
                c.0 += batch.len() as u64;
                c.1 += d.keep(&batch, &tables).count_set_bits() as u64;
            }
            true
        }
        ReadItem::Error(_) => true,
        ReadItem::Fatal(e) => {
            failure = Some(e);
            false
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(counts),
    }
}
