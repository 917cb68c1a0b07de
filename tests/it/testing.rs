//! `ravenwatch test` and `validate` on fixture projects.

use crate::Project;
use serde_json::Value;

fn runner_project() -> Project {
    let p = Project::with("tests_runner");
    p.only_detections(&["runner_demo"]);
    p
}

fn json(out: &crate::Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn example_project_tests_pass() {
    let p = Project::example();
    let out = p.run(&["test"]);
    assert_eq!(out.code, 0, "{out:?}");
    let last = out.stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    // Every example detection carries test cases.
    for rule in crate::EXAMPLE_RULES {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(rule) && l.contains('.')),
            "{rule} has no passing cases:\n{}",
            out.stdout
        );
    }
}

#[test]
fn passing_suite_reports_counts_and_skips() {
    let p = runner_project();
    let out = p.run(&["test"]);
    assert_eq!(out.code, 0, "{out:?}");
    insta::assert_snapshot!(out.stdout, @r"
    runner_demo ......s
    SKIPPED runner_demo::waiting for the new log format: the collector does not send this field yet
    6 passed, 0 failed, 1 skipped
    ");
}

#[test]
fn failing_cases_show_diffs_and_tracebacks_and_the_rest_still_runs() {
    let p = runner_project();
    p.overlay("tests_runner_failing");
    let out = p.run(&["test"]);
    assert_eq!(out.code, 1, "{out:?}");
    insta::assert_snapshot!(out.stdout, @r#"
    runner_demo FFF.......s

    FAILED runner_demo::wrong severity (detections/runner_demo/tests/failing.yml:1)
        severity: expected "critical", got "high"
        context.ip: expected "198.51.100.9", got (absent)

    FAILED runner_demo::detect raises (detections/runner_demo/tests/failing.yml:7)
        detect() raised:
          Traceback (most recent call last):
            File "detections/runner_demo/detect.py", line 14, in detect
              return 1 / 0
                     ~~^~~
          ZeroDivisionError: division by zero

    FAILED runner_demo::mock of a missing name (detections/runner_demo/tests/failing.yml:11)
        detections/runner_demo/detect.py: mock `business_hourz`: the detection module has no name `business_hourz`
    SKIPPED runner_demo::waiting for the new log format: the collector does not send this field yet
    7 passed, 3 failed, 1 skipped
    "#);
}

#[test]
fn fixtures_module_state_and_mocks_do_not_leak_between_cases() {
    let p = runner_project();
    let out = p.run(&["test", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let cases = &json(&out)["cases"];
    let title = |case: &str| cases[format!("runner_demo::{case}")]["actual"]["title"].clone();
    // Case A sees its fixture row; case B, run after it, does not; the
    // module-level call counter restarts at 1 in each case.
    assert_eq!(
        title("ip known from a fixture"),
        "login from known ip, call 1, business hours: True"
    );
    assert_eq!(
        title("the same ip is unknown in the next case"),
        "login from unknown ip, call 1, business hours: True"
    );
    assert_eq!(
        title("mocked business hours"),
        "login from unknown ip, call 1, business hours: False"
    );
    // The mock is gone for the cases after it.
    assert!(
        cases["runner_demo::five logins reach the threshold"]["actual"]["title"]
            .as_str()
            .unwrap()
            .ends_with("business hours: True")
    );
}

#[test]
fn threshold_case_with_five_events_activates() {
    let p = runner_project();
    let out = p.run(&["test", "-k", "logins", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = json(&out);
    assert_eq!(report["passed"], 2, "-k selects two cases: {report}");
    let five = &report["cases"]["runner_demo::five logins reach the threshold"]["actual"];
    assert_eq!(five["matches"], 5);
    assert_eq!(five["alerts"], 1);
    assert_eq!(five["activated"], true);
    assert_eq!(five["match_count"], 5);
    let four = &report["cases"]["runner_demo::four logins stay below it"]["actual"];
    assert_eq!(four["activated"], false);
    assert_eq!(four["match_count"], 4);
}

#[test]
fn junit_report_counts_failures() {
    let p = runner_project();
    p.overlay("tests_runner_failing");
    let out = p.run(&["test", "runner_demo", "--junit", "report.xml"]);
    assert_eq!(out.code, 1);
    let xml = std::fs::read_to_string(p.path().join("report.xml")).unwrap();
    assert!(
        xml.contains(
            r#"<testsuites name="ravenwatch" tests="11" failures="3" skipped="1" errors="0""#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="ZeroDivisionError: division by zero">"#),
        "{xml}"
    );
    assert!(xml.contains(r#"<skipped message="the collector does not send this field yet"/>"#));
}

#[test]
fn unknown_rule_is_a_usage_error() {
    let p = runner_project();
    let out = p.run(&["test", "runner_dem"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr.trim(),
        "error: no detection `runner_dem` (did you mean `runner_demo`?)"
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let p = Project::with("validate_all");
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    insta::assert_snapshot!(out.stdout, @r#"
    detections/schema_typo/detection.yml:2:1: table `event` has no schema in schemas/ (did you mean `events`?)
    enrichment/aws_account_info/data.csv:3: column `is_production`: "maybe" is not a valid boolean (expected true/false, yes/no or 1/0)
    detections/unknown_tables/detect.py:1: imports enrichment table `known_ips`, which is not defined (did you mean `known_ip_info`?); known tables: aws_account_info, aws_ip_ranges, axonius_assets, cisa_kev, geoip, known_ip_info, threat_ips, urlhaus
    detections/unknown_tables/detect.py:2: imports enrichment table `threat_intel`, which is not defined (did you mean `threat_ips`?); known tables: aws_account_info, aws_ip_ranges, axonius_assets, cisa_kev, geoip, known_ip_info, threat_ips, urlhaus
    detections/arity/detect.py:5: title() must take one argument (the record r), but it takes 2
    detections/failed_login_known_ip/tests/bad_fixture.yml:3:5: test case `fixture for a table that does not exist`: enrichment table `known_ip_infos` is not defined (did you mean `known_ip_info`?)
    detections/failed_login_known_ip/tests/bad_fixture.yml:12:3: test case `fixture row that does not fit the schema`: expects no match but sets severity, which only apply to a match
    detections/failed_login_known_ip/tests/bad_fixture.yml:9:5: test case `fixture row that does not fit the schema`: enrichment `aws_account_info`: row 0, column `is_production`: "perhaps" is not a valid boolean (expected true/false, yes/no or 1/0)
    detections/failed_login_known_ip/tests/broken.yml:3:3: .[0]: unknown field `expect_matches`, expected one of `name`, `log`, `expect_match`, `table`, `title`, `severity`, `dedupe`, `context`, `activated`, `match_count`, `alerts`, `enrichment`, `mocks`, `skip` (did you mean `expect_match`?)
    9 errors found
    "#);
}

#[test]
fn a_broken_test_file_fails_the_test_command() {
    let p = Project::example();
    p.only_detections(&["failed_login_known_ip"]);
    std::fs::write(
        p.path()
            .join("detections/failed_login_known_ip/tests/broken.yml"),
        "- name: x\n  log: {}\n  expect_matches: true\n",
    )
    .unwrap();
    let out = p.run(&["test"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("ERROR detections/failed_login_known_ip/tests/broken.yml:3:3:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with("6 passed, 0 failed, 1 error"),
        "{}",
        out.stdout
    );
}

#[test]
fn init_scaffolds_a_detection_whose_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ravenwatch");
    let init = std::process::Command::new(bin)
        .args(["init", "fresh"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    assert!(dir
        .path()
        .join("fresh/detections/failed_login/tests/cases.yml")
        .is_file());
    let test = std::process::Command::new(bin)
        .args(["-p", "fresh", "test"])
        .current_dir(dir.path())
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{stdout}");
    assert!(stdout.ends_with("4 passed, 0 failed\n"), "{stdout}");
}
