//! The log reader and decoder on arbitrary bytes, as a JSON-lines file, a
//! JSON array or a CloudTrail `Records` object (the name picks the
//! framing), with the example project's schema and the paths its rules
//! read. Every input gives batches and per-line errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ravenwatch::logs::{EventReader, ReadItem};
use std::sync::OnceLock;

fn reader() -> &'static EventReader {
    static READER: OnceLock<EventReader> = OnceLock::new();
    READER.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let project = ravenwatch::config::Project::load(&root).expect("the example project loads");
        let table = &project.log_tables[0];
        let paths = vec!["user.name".to_string(), "source.ip".into(), "tags".into(), "n".into()];
        EventReader::with_read_paths(table, &paths).with_batch_size(7)
    })
}

fuzz_target!(|data: &[u8]| {
    let name = match data.first() {
        Some(b) if b % 3 == 0 => "x.json",
        Some(b) if b % 3 == 1 => "x.jsonl",
        _ => "x.ndjson",
    };
    let bytes = data.get(1..).unwrap_or_default().to_vec();
    reader().read_stream(name, Box::new(std::io::Cursor::new(bytes)), &mut |item| {
        if let ReadItem::Batch(batch) = item {
            for row in 0..batch.len() {
                let _ = batch.source(row);
            }
        }
    });
});
