//! Python rules run in worker processes: the outputs do not depend on how
//! many, undeclared fields reach rules with JSON's own types, and a worker
//! that dies is either replaced (once) or fails the run with nothing
//! committed.

use crate::{read_jsonl, repo, Project};
use serde_json::Value;

/// alerts, matches and errors of a run, without what differs between runs
/// by design (creation time, run id).
fn outputs(p: &Project, inputs: &[&str], workers: &str, name: &str) -> Vec<Vec<Value>> {
    let mut args = vec!["run", "--workers", workers, "--output", name];
    let paths: Vec<String> = inputs
        .iter()
        .map(|l| repo().join("tests/data/logs").join(l).display().to_string())
        .collect();
    for path in &paths {
        args.extend(["--input", path.as_str()]);
    }
    let out = p.run(&args);
    assert!(out.code == 0 || out.code == 3, "{out:?}");
    let _ = std::fs::remove_dir_all(p.path().join(".ravenwatch/state"));
    ["alerts.jsonl", "matches.jsonl", "errors.jsonl"]
        .iter()
        .map(|file| {
            read_jsonl(&p.path().join(name).join(file))
                .into_iter()
                .map(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("created_at");
                        o.remove("updated_at");
                        o.remove("run_id");
                    }
                    v
                })
                .collect()
        })
        .collect()
}

#[test]
fn outputs_are_the_same_for_one_two_and_three_workers() {
    let p = Project::example();
    let inputs = [
        "failed_logins.jsonl",
        "with_bad_line.jsonl",
        "smb_second_ip.jsonl",
        "geo.jsonl",
        "ebs.json",
        "threat_traffic.jsonl",
        "six_failures_window.jsonl",
    ];
    let one = outputs(&p, &inputs, "1", "one");
    assert!(!one[0].is_empty() && !one[1].is_empty() && !one[2].is_empty());
    assert_eq!(one, outputs(&p, &inputs, "2", "two"));
    assert_eq!(one, outputs(&p, &inputs, "3", "three"));
}

#[test]
fn many_batches_keep_input_order_across_workers() {
    // 3,000 events in batches of 4,096 would be one batch: generate more
    // than a few batches so that three workers answer out of order.
    let p = Project::example();
    p.only_detections(&["failed_login_known_ip"]);
    let mut lines = String::new();
    for i in 0..20_000 {
        let ip = format!("198.51.{}.{}", (i / 250) % 250, i % 250);
        lines.push_str(&format!(
            r#"{{"ts":"2024-05-01T{:02}:{:02}:{:02}Z","event":{{"category":["authentication"],"outcome":"failure"}},"source":{{"ip":"{ip}"}},"user":{{"name":"u{}"}}}}"#,
            (i / 3600) % 24, (i / 60) % 60, i % 60, i % 7
        ));
        lines.push('\n');
    }
    std::fs::write(p.path().join("many.jsonl"), lines).unwrap();
    let run = |workers: &str, out: &str| {
        let o = p.run(&["run", "--workers", workers, "-i", "many.jsonl", "-o", out]);
        assert_eq!(o.code, 0, "{o:?}");
        let _ = std::fs::remove_dir_all(p.path().join(".ravenwatch/state"));
        read_jsonl(&p.path().join(out).join("matches.jsonl"))
    };
    let one = run("1", "one");
    assert_eq!(one.len(), 20_000);
    assert_eq!(one, run("3", "three"));
}

#[test]
fn undeclared_fields_keep_their_json_types() {
    let p = Project::with("json_types");
    p.only_detections(&["json_types"]);
    let r = p.detect(&["json_types.jsonl"], "types");
    assert_eq!(r.output.code, 0, "{:?}", r.output);
    let alerts = r.alerts();
    let ctx = |id: &str| {
        alerts
            .iter()
            .find(|a| a["dedupe"] == id)
            .unwrap_or_else(|| panic!("no alert {id}: {alerts:#?}"))["context"]
            .clone()
    };
    let (a, b, c) = (ctx("a"), ctx("b"), ctx("c"));
    assert_eq!(alerts.len(), 3);
    // ints stay ints, floats floats, also when one path mixes them.
    assert_eq!(
        (a["count"].as_str(), c["count"].as_str()),
        (Some("int"), Some("int"))
    );
    assert_eq!(
        (a["ratio"].as_str(), b["ratio"].as_str()),
        (Some("float"), Some("float"))
    );
    assert_eq!(c["ratio"], "int");
    assert_eq!(c["ratio_value"], 1);
    // lists, empty lists and missing values.
    assert_eq!(a["tags"], serde_json::json!([]));
    assert_eq!(a["tags_type"], "list");
    assert_eq!(b["tags"], serde_json::json!(["t1", "t2"]));
    assert_eq!(c["tags"], Value::Null);
    assert_eq!(a["empty"], serde_json::json!([]));
    assert_eq!(
        (a["flag"].as_bool(), b["flag"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(c["flag"], Value::Null);
    // A path that is a string in one event and an object in another.
    assert_eq!(
        (a["actor"].as_str(), b["actor"].as_str()),
        (Some("str"), Some("dict"))
    );
    assert_eq!(a["actor_name"], Value::Null);
    assert_eq!(b["actor_name"], "bob");
    assert_eq!(c["actor"], "NoneType");
    assert_eq!(c["has_actor"], false);
    assert_eq!(c["null_item"], "NoneType");
    // Integers beyond 64 bits stay Python ints.
    assert_eq!(
        (a["big"].as_str(), b["big"].as_str()),
        (Some("int"), Some("int"))
    );
    // An undeclared selector field is looked up.
    assert_eq!(a["known"], "vpn");
    assert_eq!(b["known"], Value::Null);
    assert_eq!(
        a["keys"],
        serde_json::json!(["actor", "big", "id", "kind", "source", "stats", "tags", "ts"])
    );
}

#[test]
fn a_worker_that_dies_twice_on_a_batch_fails_the_run_and_commits_nothing() {
    let p = Project::with("worker_exit");
    p.only_detections(&["exits"]);
    let r = p.detect(&["boom.jsonl"], "boom");
    assert_eq!(r.output.code, 1, "{:?}", r.output);
    assert!(
        r.output
            .stderr
            .contains("exited with status 3 while rule `exits` ran twice on the batch of"),
        "{}",
        r.output.stderr
    );
    assert!(
        r.output.stderr.contains("boom.jsonl (events 1–3)"),
        "{}",
        r.output.stderr
    );
    assert!(r.output.stderr.contains("nothing was committed"));
    assert!(!r.dir.join("summary.json").exists());
    assert!(!p.path().join(".ravenwatch/state/alerts.json").exists());
}

#[test]
fn a_worker_that_dies_once_is_replaced_and_its_batch_runs_again() {
    let p = Project::with("worker_retry");
    p.only_detections(&["exits_once"]);
    let mark = p.path().join("died");
    let mark_text = mark.display().to_string();
    let log = repo()
        .join("tests/data/logs/boom.jsonl")
        .display()
        .to_string();
    let out = p.run_env(
        &["run", "--workers", "2", "-i", &log, "-o", "out"],
        &[("RAVENWATCH_TEST_MARK", &mark_text)],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(mark.exists(), "the rule never killed its worker");
    assert!(
        out.stderr.contains("running it again in a new worker"),
        "{}",
        out.stderr
    );
    let matches = read_jsonl(&p.path().join("out/matches.jsonl"));
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0]["event"]["user"]["name"], "boom");
}
