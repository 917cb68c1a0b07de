//! Filters derived from rule code: sound on a corpus of rule styles and
//! adversarial events, explained, opted out of, and verified.

use super::{read_jsonl, Project};
use serde_json::Value;
use std::path::Path;

/// Matches, alerts and errors of a run, without what differs between any
/// two runs (wall-clock creation time), in a stable order.
fn outputs(dir: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let sorted = |file: &str, drop: &[&str]| {
        let mut rows: Vec<String> = read_jsonl(&dir.join(file))
            .into_iter()
            .map(|mut v| {
                for key in drop {
                    v.as_object_mut().unwrap().remove(*key);
                }
                v.to_string()
            })
            .collect();
        rows.sort();
        rows
    };
    (
        sorted("matches.jsonl", &[]),
        sorted("alerts.jsonl", &["created_at"]),
        sorted("errors.jsonl", &[]),
    )
}

fn rules(summary: &Value) -> &serde_json::Map<String, Value> {
    summary["rules"].as_object().unwrap()
}

#[test]
fn derived_filters_change_no_match_alert_or_error_on_the_corpus() {
    // Two copies, so alert state from one run cannot reach the other.
    let filtered = Project::standalone("prefilter_corpus");
    let verified = Project::standalone("prefilter_corpus");
    let a = filtered.run(&["run", "--input", "logs", "--output", "out", "--no-deliver"]);
    assert_eq!(a.code, 3, "rules raise on adversarial events: {}", a.stderr);
    // --verify-filters sends every event to detect() and checks that none
    // the derived filters drop is matched or raised on: the baseline.
    let b = verified.run(&[
        "run",
        "--input",
        "logs",
        "--output",
        "out",
        "--no-deliver",
        "--verify-filters",
    ]);
    assert_eq!(
        b.code, 3,
        "no violation, only the rules' own errors: {}{}",
        b.stdout, b.stderr
    );
    assert!(!b.stdout.contains("verify-filters"), "{}", b.stdout);

    let (a_matches, a_alerts, a_errors) = outputs(&filtered.path().join("out"));
    let (b_matches, b_alerts, b_errors) = outputs(&verified.path().join("out"));
    assert!(a_matches.len() > 10_000 && !a_errors.is_empty());
    assert_eq!(a_matches, b_matches);
    assert_eq!(a_alerts, b_alerts);
    assert_eq!(a_errors, b_errors);

    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(filtered.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    let baseline: Value = serde_json::from_str(
        &std::fs::read_to_string(verified.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    let (mut narrowed, mut calls, mut all_calls) = (0, 0, 0);
    for (name, stats) in rules(&summary) {
        let events = stats["events"].as_u64().unwrap();
        let dropped = stats["auto_filtered_out"].as_u64().unwrap();
        let python = stats["python_calls"].as_u64().unwrap();
        assert_eq!(events, 3000, "{name}");
        assert_eq!(
            python + dropped,
            events,
            "{name}: every event is either filtered or called"
        );
        // Effects before any condition: no filter. Effects only past the
        // first test (`impure_set_mutation`): the filter of that test.
        if name == "impure_set_mutation" {
            assert!(dropped > 0, "{name}: filtered up to its first effect");
        } else if name.starts_with("impure_") {
            assert_eq!(dropped, 0, "{name} is impure: no derived filter");
        }
        narrowed += usize::from(dropped > 0);
        calls += python;
        all_calls += rules(&baseline)[name]["python_calls"].as_u64().unwrap();
    }
    assert!(
        narrowed >= 40,
        "only {narrowed} rules got a narrowing filter"
    );
    assert!(
        calls * 2 < all_calls,
        "{calls} Python calls with derived filters, {all_calls} without"
    );
}

#[test]
fn explain_shows_the_filter_its_fallbacks_purity_and_pass_rate() {
    let p = Project::standalone("prefilter_corpus");
    let out = p.run(&[
        "explain",
        "ioc_paths_loop",
        "dotted_get_unsupported",
        "impure_set_mutation",
        "--input",
        "logs",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("prefilter_explain", out.stdout);
    let unknown = p.run(&["explain", "guard_eqq"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean `guard_eq`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn auto_filter_false_and_no_auto_filter_turn_derived_filters_off() {
    let p = Project::standalone("prefilter_corpus");
    p.only_detections(&["guard_eq", "module_set"]);
    let yml = p.path().join("detections/guard_eq/detection.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(&yml, format!("{text}auto_filter: false\n")).unwrap();
    let dropped = |dir: &str| {
        let summary: Value = serde_json::from_str(
            &std::fs::read_to_string(p.path().join(dir).join("summary.json")).unwrap(),
        )
        .unwrap();
        (
            summary["rules"]["guard_eq"]["auto_filtered_out"]
                .as_u64()
                .unwrap(),
            summary["rules"]["module_set"]["auto_filtered_out"]
                .as_u64()
                .unwrap(),
        )
    };
    let out = p.run(&["run", "--input", "logs", "--output", "on", "--no-deliver"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (guard, set) = dropped("on");
    assert_eq!(guard, 0);
    assert!(set > 2000);
    let out = p.run(&[
        "run",
        "--input",
        "logs",
        "--output",
        "off",
        "--no-deliver",
        "--no-auto-filter",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(dropped("off"), (0, 0));
}

#[test]
fn verify_filters_and_test_catch_a_filter_the_code_could_not_show() {
    // A `_lib` module replaces builtins.any at import: the derived filter
    // trusts `any` and is wrong, which both checks must report.
    let p = Project::with("prefilter_unsound");
    p.only_detections(&["patched_any"]);
    let out = p.run(&[
        "run",
        "--input",
        "logs/events.jsonl",
        "--output",
        "out",
        "--no-deliver",
        "--verify-filters",
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("verify-filters: derived filters dropped 1 event"),
        "{}",
        out.stdout
    );
    let errors = read_jsonl(&p.path().join("out/errors.jsonl"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["kind"], "filter");
    assert_eq!(errors[0]["source"], "logs/events.jsonl:1");
    let test = p.run(&["test", "patched_any"]);
    assert_eq!(test.code, 1);
    assert!(
        test.stdout
            .contains("the filter derived from detect() (source.ip = '198.51.100.99'"),
        "{}",
        test.stdout
    );
    assert!(
        test.stdout
            .contains("rejects log[0], which detect() matches"),
        "{}",
        test.stdout
    );
}

#[test]
fn validate_warns_about_impure_rules_without_failing() {
    let p = Project::standalone("prefilter_corpus");
    p.only_detections(&["impure_global_counter", "guard_eq"]);
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    insta::assert_snapshot!("prefilter_validate_impure", out.stdout);
}

#[test]
fn every_corpus_style_derives_the_condition_it_should() {
    // One snapshot of what the analysis makes of each rule style: a change
    // to the analysis shows here as a reviewable diff.
    let p = Project::standalone("prefilter_corpus");
    let out = p.run(&["explain"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("prefilter_explain_corpus", out.stdout);
}

#[test]
fn the_readme_explain_example_is_what_explain_prints() {
    let readme = std::fs::read_to_string(super::repo().join("README.md")).unwrap();
    let section = super::walkthrough::section(&readme, "### Filters derived from the rules' code");
    // The block right after the one with the `ravenwatch explain` command.
    let after = &section[section.find("ravenwatch explain").unwrap()..];
    let after = &after[after.find("```\n").unwrap() + 4..];
    let start = after.find("```\n").unwrap() + 4;
    let shown = &after[start..start + after[start..].find("```").unwrap()];
    let p = Project::example();
    let samples = super::repo().join("samples").display().to_string();
    let out = p.run(&["explain", "failed_login_known_ip", "--input", &samples]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, shown);
}
