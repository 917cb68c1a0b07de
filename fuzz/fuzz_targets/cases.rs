//! Detection test-case files on arbitrary YAML, read as `ravenwatch test`
//! reads them for the example project's first detection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ravenwatch::config::Project;
use std::sync::OnceLock;

fn project() -> &'static (tempfile::TempDir, Project) {
    static PROJECT: OnceLock<(tempfile::TempDir, Project)> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().unwrap();
        for part in ["ravenwatch.yml", "schemas", "enrichment", "detections"] {
            let status = std::process::Command::new("cp")
                .arg("-r")
                .arg(root.join(part))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let project = Project::load(dir.path()).expect("the example project loads");
        (dir, project)
    })
}

fuzz_target!(|data: &[u8]| {
    let (_, project) = project();
    let def = &project.detections[0];
    let tests = def.script.parent().unwrap().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(tests.join("fuzz.yml"), data).unwrap();
    let _ = ravenwatch::testing::load_cases(project, def);
});
