use crate::Project;
use std::process::Command;

/// The `pip` package as the machine's `python3` sees it (pip installs there).
fn pip_file() -> String {
    let out = Command::new("python3")
        .args(["-c", "import pip; print(pip.__file__)"])
        .output()
        .expect("python3 is installed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn detections_import_pip_packages_and_virtualenv_packages() {
    let p = Project::with("pip_import");
    p.only_detections(&["uses_pip"]);
    // A virtualenv layout with a module only it provides.
    let venv = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .unwrap();
    let version = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let site = venv.path().join("lib").join(version).join("site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("venv_only_module.py"), "MARKER = 'from-venv'\n").unwrap();

    let logs = crate::repo().join("tests/data/logs/failed_logins.jsonl");
    let out = p.run_env(
        &[
            "run",
            "--input",
            &logs.display().to_string(),
            "--output",
            "out/p",
        ],
        &[("VIRTUAL_ENV", &venv.path().display().to_string())],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let alerts = crate::read_jsonl(&p.path().join("out/p/alerts.jsonl"));
    let known = alerts
        .iter()
        .find(|a| a["dedupe"] == "Uses pip" || a["context"]["known"].is_object())
        .unwrap();
    assert_eq!(known["context"]["pip_file"], pip_file().as_str());
    assert_eq!(known["context"]["venv_marker"], "from-venv");
    assert_eq!(
        known["context"]["known"]["category"], "vpn",
        "matano.enrichment works"
    );
    assert_eq!(known["context"]["undeclared"], "none");
}

#[test]
fn a_rule_that_changes_a_looked_up_row_changes_nothing_for_later_lookups() {
    let p = crate::Project::with("row_mutation");
    p.only_detections(&["mutates"]);
    let r = p.detect(&["known_ip_thrice.jsonl"], "mutation");
    assert_eq!(r.output.code, 0, "{:?}", r.output);
    let alerts = r.alerts_of("mutates");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0]["match_count"].as_u64().unwrap() > 1);
    for context in ["context", "latest_context"] {
        assert_eq!(alerts[0][context]["before"], "vpn", "{context}");
        assert_eq!(alerts[0][context]["again"], "vpn", "{context}");
    }
}
