//! The enrichment loaders on arbitrary data files: CSV (`aws_account_info`),
//! JSON lines (`known_ip_info`) and text feeds, from the example project's
//! definitions. A bad row is an error naming it, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ravenwatch::config::EnrichmentDef;
use std::sync::OnceLock;

fn defs() -> &'static [EnrichmentDef] {
    static DEFS: OnceLock<Vec<EnrichmentDef>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        ravenwatch::config::Project::load(&root)
            .expect("the example project loads")
            .enrichment
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let defs = defs();
    let def = &defs[pick as usize % defs.len()];
    let extension = match pick / 64 {
        0 => "csv",
        1 => "jsonl",
        2 => "txt",
        _ => "json",
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("data.{extension}"));
    std::fs::write(&file, rest).unwrap();
    let _ = ravenwatch::enrichment::load_files(def, &[file]);
});
