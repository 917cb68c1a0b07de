//! `ravenwatch-bench`: timings that need the library rather than the CLI.
//!
//! - `get-ns DIR TABLE KEY [INDEX_KEY]`: the cost of `table.get(key)` called
//!   from Python, in nanoseconds per call (hit and miss).
//! - `cidr-ns DIR TABLE INDEX_KEY`: lookups of random IPv4 addresses in a
//!   CIDR key, per lookup: from Python (`get`), and in bulk from Rust
//!   (`lookup_many`, as the `enrich:` selectors do).
//! - `table-mem DIR TABLE`: the in-memory size of a loaded table (Arrow
//!   buffers) beside its Parquet snapshot.

use ravenwatch::config::Project;
use ravenwatch::enrichment::{sync_tables, Lookup, Tables};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: ravenwatch-bench get-ns DIR TABLE KEY [INDEX_KEY]
       ravenwatch-bench cidr-ns DIR TABLE INDEX_KEY
       ravenwatch-bench table-mem DIR TABLE";

fn load(
    dir: &str,
) -> Result<
    (
        Project,
        Tables,
        std::sync::Arc<dyn ravenwatch::storage::Storage>,
    ),
    String,
> {
    let project = Project::load(&PathBuf::from(dir)).map_err(|e| e.to_string())?;
    let storage = ravenwatch::storage::open(
        &project.settings.storage,
        &project.root,
        &project.settings.aws,
    )
    .map_err(|e| e.to_string())?;
    let (_, tables) = sync_tables(&project, storage.as_ref(), &Default::default());
    Ok((project, tables, storage))
}

/// Random IPv4 addresses (xorshift, fixed seed), as text.
fn addresses(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::net::Ipv4Addr::from((x >> 32) as u32).to_string()
        })
        .collect()
}

fn get_ns(dir: &str, table: &str, key: &str, index_key: Option<&String>) -> Result<String, String> {
    let (project, tables, _) = load(dir)?;
    let index = index_key
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
    ravenwatch::python::run_snippet(&project.detection_lib_dir(), &tables, &code)
        .map_err(|e| e.to_string())
}

fn cidr_ns(dir: &str, table: &str, index_key: &str) -> Result<String, String> {
    let (project, tables, _) = load(dir)?;
    let t = tables.get(table).ok_or(format!("no table {table}"))?;
    let n = 1_000_000;
    let keys = addresses(n);
    let refs: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
    let start = Instant::now();
    let found = t
        .lookup_many(&refs, Some(index_key))
        .map_err(|e| e.to_string())?;
    let bulk = start.elapsed().as_nanos() as f64 / n as f64;
    let hits = found.iter().filter(|f| f.is_some()).count();
    let code = format!(
        r#"
import random, time
from ravenwatch.enrichment import {table} as t
rng = random.Random(5)
keys = [f"{{rng.randrange(256)}}.{{rng.randrange(256)}}.{{rng.randrange(256)}}.{{rng.randrange(256)}}" for _ in range(300_000)]
start = time.perf_counter_ns()
found = 0
for k in keys:
    if t.get(k, {index_key:?}) is not None:
        found += 1
per = (time.perf_counter_ns() - start) / len(keys)
start = time.perf_counter_ns()
for k in keys:
    pass
loop = (time.perf_counter_ns() - start) / len(keys)
result = f"python get(): {{per:.0f}} ns per lookup (loop overhead {{loop:.0f}} ns), {{found}} of {{len(keys)}} found"
"#
    );
    let python = ravenwatch::python::run_snippet(&project.detection_lib_dir(), &tables, &code)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} rows; rust lookup_many: {bulk:.0} ns per lookup, {hits} of {n} found; {python}",
        t.len()
    ))
}

fn table_mem(dir: &str, table: &str) -> Result<String, String> {
    let (_, tables, storage) = load(dir)?;
    let t = tables.get(table).ok_or(format!("no table {table}"))?;
    let manifest = t.manifest.as_ref().ok_or("no snapshot")?;
    let parquet = storage
        .read(&manifest.data_key)
        .map_err(|e| e.to_string())?
        .map(|b| b.len())
        .unwrap_or(0);
    let arrow = t.batch.get_array_memory_size();
    Ok(format!(
        "{} rows: Arrow data {:.1} MB in memory, Parquet snapshot {:.1} MB (plus the key indexes; see peak RSS)",
        t.len(),
        arrow as f64 / 1e6,
        parquet as f64 / 1e6
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir, table, key, rest @ ..] if cmd == "get-ns" => {
            get_ns(dir, table, key, rest.first())
        }
        [cmd, dir, table, key] if cmd == "cidr-ns" => cidr_ns(dir, table, key),
        [cmd, dir, table] if cmd == "table-mem" => table_mem(dir, table),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
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
