//! `ravenwatch-bench`: timings that need the library rather than the CLI.
//!
//! `ravenwatch-bench get-ns DIR TABLE KEY [INDEX_KEY]` syncs the project's
//! tables and reports the cost of `table.get(key)` called from Python, in
//! nanoseconds per call (hit and miss).

use ravenwatch::config::Project;
use ravenwatch::enrichment::sync_tables;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, dir, table, key, rest @ ..] = args.as_slice() else {
        eprintln!("usage: ravenwatch-bench get-ns PROJECT_DIR TABLE KEY [INDEX_KEY]");
        return ExitCode::from(2);
    };
    if cmd != "get-ns" {
        eprintln!("unknown command {cmd}");
        return ExitCode::from(2);
    }
    let root = PathBuf::from(dir);
    let project = match Project::load(&root) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let storage = match ravenwatch::storage::open(
        &project.settings.storage,
        &project.root,
        &project.settings.aws,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (_, tables) = sync_tables(&project, storage.as_ref(), &Default::default());
    let index = rest
        .first()
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|| "None".into());
    let code = format!(
        r#"
import time
from ravenwatch.enrichment import {table} as t
n = 1_000_000
key = {key:?}
assert t.get(key, {index}) is not None, "benchmark key must exist"
start = time.perf_counter_ns()
for _ in range(n):
    t.get(key, {index})
hit = (time.perf_counter_ns() - start) / n
start = time.perf_counter_ns()
for _ in range(n):
    t.get("no-such-key", {index})
miss = (time.perf_counter_ns() - start) / n
start = time.perf_counter_ns()
for _ in range(n):
    pass
loop = (time.perf_counter_ns() - start) / n
result = f"get() hit: {{hit:.0f}} ns, miss: {{miss:.0f}} ns (loop overhead {{loop:.0f}} ns), rows={{len(t)}}"
"#
    );
    match ravenwatch::python::run_snippet(&project.detection_lib_dir(), &tables, &code) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
