//! A Python worker process (`ravenwatch __worker -p DIR --socket PATH`):
//! its own interpreter with the run's Python rules loaded, fed batches and
//! answering rule outcomes over the run's Unix socket, so whatever rules
//! print (to stdout, which the run points at its stderr) never mixes with a
//! frame.

use super::wire::{decode_batch, map_table_file, read_frame, write_frame, FromWorker, ToWorker};
use crate::config::{DetectionDef, LogTable, Project};
use crate::enrichment::{EnrichmentTable, Tables};
use crate::python::{PythonError, PythonRuntime};
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::Arc;

struct Loaded {
    table: LogTable,
    /// The declared columns of `table`, as batches carry them.
    schema: arrow::datatypes::SchemaRef,
    rules: Vec<DetectionDef>,
    runtime: Option<PythonRuntime>,
    tables: Tables,
}

/// Serves one run until its stdin closes.
///
/// # Errors
/// The protocol broke (the run went away); rule failures are answers.
pub fn serve(project: &Project, socket: &Path) -> std::io::Result<()> {
    crate::python::ignore_stop_signals().map_err(std::io::Error::other)?;
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let mut output = BufWriter::new(stream.try_clone()?);
    let mut input = BufReader::new(stream);
    let mut loaded: Option<Loaded> = None;
    let status = Status(std::fs::File::create(status_path(socket))?);
    while let Some((request, body)) = read_frame::<ToWorker>(&mut input)? {
        let reply = match (request, loaded.as_mut()) {
            (ToWorker::Start { table, rules }, _) => match start(project, &table, &rules) {
                Ok(l) => {
                    loaded = Some(l);
                    continue;
                }
                Err(message) => FromWorker::Failed { message },
            },
            (ToWorker::Tables { files }, Some(l)) => switch_tables(project, l, &files),
            (
                ToWorker::Batch {
                    seq,
                    table,
                    file,
                    line_positions,
                    selections,
                },
                Some(l),
            ) => run_batch(
                l,
                &body,
                seq,
                (&table, &file, line_positions),
                &selections,
                &status,
            ),
            (_, None) => FromWorker::Failed {
                message: "a request before start".into(),
            },
        };
        write_frame(&mut output, &reply, &[])?;
    }
    Ok(())
}

/// Runs every rule over the batch in `body`; `source` is (log table, file,
/// whether positions are lines).
/// The file where a worker says which rule it is running, so that if the
/// rule takes the process down the run can name it.
pub(super) fn status_path(socket: &Path) -> std::path::PathBuf {
    socket.with_extension("status")
}

pub(super) struct Status(std::fs::File);

/// Length of a status record (padded, rewritten in place).
const STATUS_LEN: usize = 512;

impl Status {
    fn running(&self, seq: u64, rule: &str) {
        use std::os::unix::fs::FileExt;
        let mut record = format!("{seq}\t{rule}").into_bytes();
        record.resize(STATUS_LEN, b' ');
        // Best effort: only a message depends on it.
        let _ = self.0.write_all_at(&record[..STATUS_LEN], 0);
    }
}

/// What a dead worker's status file says: the batch and the rule it was
/// running.
pub(super) fn read_status(socket: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(status_path(socket)).ok()?;
    let (seq, rule) = text.trim_end().split_once('\t')?;
    Some((seq.parse().ok()?, rule.to_string()))
}

fn run_batch(
    loaded: &Loaded,
    body: &[u8],
    seq: u64,
    (table, file, line_positions): (&str, &str, bool),
    selections: &[Option<Vec<u32>>],
    status: &Status,
) -> FromWorker {
    let Some(runtime) = &loaded.runtime else {
        return FromWorker::Failed {
            message: "a batch before the rules were loaded".into(),
        };
    };
    let mut batch = match decode_batch(body, &loaded.schema, table, file, line_positions) {
        Ok(batch) => batch,
        Err(e) => {
            return FromWorker::Failed {
                message: format!("{file}: cannot decode the batch: {e}"),
            }
        }
    };
    if !loaded.table.enrich.is_empty() {
        batch.defer_selectors(&loaded.table.enrich, &loaded.tables);
    }
    let batch = Arc::new(batch);
    let rules = selections
        .iter()
        .enumerate()
        .map(|(index, rows)| {
            let mut calls = 0;
            let outcomes = match rows {
                Some(rows) if rows.is_empty() => Vec::new(),
                rows => {
                    let rule = loaded.rules.get(index).map_or("", |r| r.name.as_str());
                    status.running(seq, rule);
                    // Labelled, so a rule's prints say whose they are.
                    runtime.start_capture();
                    let outcomes = runtime.evaluate(index, &batch, rows.as_deref(), &mut calls);
                    for line in runtime.finish_capture().lines() {
                        eprintln!("[{rule}] {line}");
                    }
                    outcomes
                }
            };
            (calls, outcomes)
        })
        .collect();
    FromWorker::Outcomes { seq, rules }
}

fn start(project: &Project, table: &str, rules: &[String]) -> Result<Loaded, String> {
    let table = project
        .log_tables
        .iter()
        .find(|t| t.name == table)
        .ok_or_else(|| format!("no log table `{table}`"))?
        .clone();
    let rules = rules
        .iter()
        .map(|name| {
            project
                .detections
                .iter()
                .find(|d| &d.name == name)
                .cloned()
                .ok_or_else(|| format!("no detection `{name}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Loaded {
        schema: table.schema.to_arrow(),
        table,
        rules,
        runtime: None,
        tables: Tables::new(),
    })
}

/// Maps a generation's table files; loads the rules on the first one.
fn switch_tables(
    project: &Project,
    loaded: &mut Loaded,
    files: &[super::wire::TableFile],
) -> FromWorker {
    let mut tables = Tables::new();
    for file in files {
        let Some(def) = project.enrichment.iter().find(|d| d.name == file.name) else {
            continue;
        };
        let built = map_table_file(&file.path)
            .map_err(|e| e.to_string())
            .and_then(|batch| {
                EnrichmentTable::build(def, batch, file.manifest.clone()).map_err(|e| e.to_string())
            });
        match built {
            Ok(table) => {
                tables.insert(file.name.clone(), Arc::new(table));
            }
            Err(message) => {
                return FromWorker::Failed {
                    message: format!("table `{}`: {message}", file.name),
                }
            }
        }
    }
    loaded.tables = tables;
    match &loaded.runtime {
        Some(runtime) => {
            runtime.refresh_tables(&loaded.tables);
            FromWorker::Ready
        }
        None => {
            let defs: Vec<&DetectionDef> = loaded.rules.iter().collect();
            match PythonRuntime::new(&project.detection_lib_dir(), &loaded.tables, &defs) {
                Ok(mut runtime) => {
                    runtime.set_time_budget(project.settings.rule_timeout);
                    loaded.runtime = Some(runtime);
                    FromWorker::Ready
                }
                Err(PythonError::Load(errors)) => FromWorker::LoadFailed { errors },
                Err(e) => FromWorker::Failed {
                    message: e.to_string(),
                },
            }
        }
    }
}
