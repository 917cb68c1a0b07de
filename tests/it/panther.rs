//! Panther-format rule directories: Panther's own unit tests pass
//! unchanged, the contract's points the development corpus does not show,
//! and `validate`'s Panther-format mistakes.
//!
//! The rules import python-dateutil, boto3 and policyuniverse from the
//! user's virtualenv: `scripts/test.sh` installs them into its venv and
//! exports `RAVENWATCH_TEST_VENV`. Without it these tests fail when `CI` is
//! set and are skipped (with a message) otherwise.

use super::{repo, Output};
use serde_json::Value;
use std::process::Command;

pub(super) fn venv() -> Option<String> {
    match std::env::var("RAVENWATCH_TEST_VENV") {
        Ok(v) => Some(v),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("RAVENWATCH_TEST_VENV is not set: the Panther tests need the venv scripts/test.sh prepares")
        }
        Err(_) => {
            eprintln!("skipped: RAVENWATCH_TEST_VENV is not set (run scripts/test.sh)");
            None
        }
    }
}

fn ravenwatch(dir: &str, args: &[&str], venv: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ravenwatch"));
    cmd.current_dir(repo().join("tests/data/panther"))
        .args(["-p", dir])
        .args(args)
        .env_remove("VIRTUAL_ENV");
    if let Some(v) = venv {
        cmd.env("VIRTUAL_ENV", v);
    }
    cmd.output().expect("run ravenwatch").into()
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, c)| (id.clone(), c["status"].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

#[test]
fn panthers_development_corpus_passes_all_628_tests() {
    let Some(venv) = venv() else { return };
    let out = ravenwatch("corpus-dev", &["test", "--format", "json"], Some(&venv));
    let report: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
    let failed: Vec<_> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s != "passed")
        .collect();
    assert_eq!(failed, Vec::<(String, String)>::new());
    assert_eq!(report["passed"], 628);
    assert_eq!(out.code, 0);
    // Reported as native cases are: rule = RuleID, case = test Name, file:line.
    let case = &report["cases"]["AWS.Console.RootLogin::Successful Root Login"];
    assert_eq!(case["rule"], "AWS.Console.RootLogin");
    assert!(
        case["file"]
            .as_str()
            .unwrap()
            .ends_with("rules/aws_cloudtrail_rules/aws_console_root_login.yml:31"),
        "{case}"
    );
}

#[test]
fn the_contracts_points_beyond_the_development_corpus_hold() {
    let Some(venv) = venv() else { return };
    let out = ravenwatch("contract", &["test", "--format", "json"], Some(&venv));
    let report: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
    assert_eq!(out.code, 1, "some cases fail on purpose");
    let failed: Vec<String> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s == "failed")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        failed,
        [
            "Contract.Broken::a raising title fails an expected match",
            "Contract.Rule::a bad alert_context fails an expected match",
            "Contract.Rule::a rule result that is not a bool fails",
            "Contract.Rule::mocking a missing name fails the case",
        ]
    );
    assert_eq!(report["passed"], 8);
    let errors =
        &report["cases"]["Contract.Broken::a raising title fails an expected match"]["errors"][0];
    assert!(
        errors
            .as_str()
            .unwrap()
            .contains("ValueError: no title for 1"),
        "{errors}"
    );
    // -k and a rule selection narrow the run as for native rules.
    let some = ravenwatch(
        "contract",
        &["test", "-k", "deep_walk", "--format", "json"],
        Some(&venv),
    );
    let report: Value = serde_json::from_str(&some.stdout).unwrap();
    assert_eq!(
        statuses(&report),
        [(
            "Contract.Rule::deep_walk through lists".to_string(),
            "passed".to_string()
        )]
    );
    let unknown = ravenwatch("contract", &["test", "Contract.Rul"], Some(&venv));
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean `Contract.Rule`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn validate_reports_panther_format_mistakes_with_file_and_line() {
    let out = ravenwatch("invalid", &["validate"], None);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!("panther_validate", out.stdout);
    // `test` prints them too; here no case is left to run.
    let test = ravenwatch("invalid", &["test"], None);
    assert_eq!(test.code, 2);
    assert!(
        test.stderr.contains("duplicate RuleID `Dup.Rule`"),
        "{}",
        test.stderr
    );
    let ok = ravenwatch("corpus-dev", &["validate"], None);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert_eq!(
        ok.stdout,
        "ok: 191 rules (Panther format), 9 global helpers, 3 data models, 628 tests\n"
    );
}
