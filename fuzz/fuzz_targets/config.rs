//! The configuration loader on arbitrary YAML: `ravenwatch.yml`, a log
//! schema and a detection (the input split at NUL bytes). It must return
//! errors, never panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("schemas")).unwrap();
    std::fs::create_dir_all(root.join("detections/rule")).unwrap();
    std::fs::write(root.join("ravenwatch.yml"), parts.next().unwrap_or_default()).unwrap();
    std::fs::write(root.join("schemas/events.yml"), parts.next().unwrap_or_default()).unwrap();
    std::fs::write(root.join("detections/rule/detection.yml"), parts.next().unwrap_or_default())
        .unwrap();
    std::fs::write(root.join("detections/rule/detect.py"), "def detect(r):\n    return False\n")
        .unwrap();
    let _ = ravenwatch::config::Project::load_partial(root);
});
