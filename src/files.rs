//! File helpers every layer needs: how a path is shown in messages, which
//! format a data file has (ignoring compression), and reading it
//! decompressed. They sit at the floor so config, enrichment and logs can
//! share them without importing one another.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// A path as shown in messages: relative paths without a leading `./`.
pub fn display_path(path: &Path) -> String {
    let text = path.display().to_string();
    text.strip_prefix("./").map(str::to_string).unwrap_or(text)
}

/// Opens a file, transparently decompressing `.gz` and `.zst`.
///
/// # Errors
/// The file cannot be opened.
pub fn open_decompressed(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let file = std::fs::File::open(path)?;
    decompress(Box::new(file), &path.to_string_lossy())
}

/// Wraps `input` in the decompressor its name calls for (`.gz`, `.zst`).
pub fn decompress(
    input: Box<dyn Read + Send>,
    name: &str,
) -> std::io::Result<Box<dyn BufRead + Send>> {
    Ok(if name.ends_with(".gz") {
        Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(std::io::BufReader::new(input)),
        ))
    } else if name.ends_with(".zst") {
        Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            zstd::Decoder::new(input)?,
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 16, input))
    })
}

/// The format extension of a data file, ignoring compression suffixes.
pub fn format_of(path: &Path) -> String {
    format_of_name(path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
}

/// [`format_of`] for a file or object name.
pub fn format_of_name(name: &str) -> String {
    let name = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let base = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    base.rsplit_once('.')
        .map(|(_, e)| e.to_string())
        .unwrap_or_default()
}

/// Every `.py` file under `dir`, sorted, skipping `__pycache__`.
pub fn python_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                out.extend(python_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "py") {
            out.push(path);
        }
    }
    out
}

/// Crash tests: with `RAVENWATCH_CRASH_AT=<name>` in the environment the
/// process aborts at the point of that name, leaving files as kill -9
/// would (no destructor runs). The points are listed in README's
/// "Recovery" section; nothing else reads the variable.
pub fn crash_point(name: &str) {
    if std::env::var_os("RAVENWATCH_CRASH_AT").is_some_and(|v| v == name) {
        std::process::abort();
    }
    pause_point(name);
}

/// Race tests: with `RAVENWATCH_PAUSE_AT=<name>` and `RAVENWATCH_PAUSE_FILE`
/// the process creates that file at the point of that name and waits until
/// the test removes it, so another process can act in between.
fn pause_point(name: &str) {
    if std::env::var_os("RAVENWATCH_PAUSE_AT").is_none_or(|v| v != name) {
        return;
    }
    let Some(file) = std::env::var_os("RAVENWATCH_PAUSE_FILE") else {
        return;
    };
    if std::fs::write(&file, name).is_ok() {
        while std::path::Path::new(&file).exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
