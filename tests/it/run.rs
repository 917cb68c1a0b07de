use crate::{repo, Project, RunResult};
use serde_json::Value;

fn failed_logins(project: &Project, logs: &[&str], name: &str) -> RunResult {
    let r = project.detect(logs, name);
    assert_eq!(r.output.code, 0, "{:?}", r.output);
    r
}

#[test]
fn known_ip_is_low_unknown_is_medium() {
    let p = Project::example();
    let r = failed_logins(&p, &["failed_logins.jsonl"], "a");
    let alerts = r.alerts_of("failed_login_known_ip");
    let severity_of = |ip: &str| {
        alerts
            .iter()
            .find(|a| a["dedupe"] == ip)
            .map(|a| a["severity"].clone())
            .unwrap()
    };
    assert_eq!(severity_of("203.0.113.10"), "low");
    assert_eq!(severity_of("198.51.100.23"), "medium");
    let known = alerts
        .iter()
        .find(|a| a["dedupe"] == "203.0.113.10")
        .unwrap();
    assert_eq!(
        known["context"]["known_ip"]["description"],
        "Corporate VPN egress (us-east)"
    );
    assert_eq!(known["title"], "Repeated failed logins from 203.0.113.10");
}

#[test]
fn threshold_five_activates_on_fifth_not_fourth() {
    let p = Project::example();
    let four = failed_logins(&p, &["four_failures.jsonl"], "four");
    let a = &four.alerts_of("failed_login_known_ip")[0];
    assert_eq!(
        (a["match_count"].as_u64(), a["activated"].as_bool()),
        (Some(4), Some(false))
    );

    let p = Project::example();
    let five = failed_logins(&p, &["four_failures.jsonl", "fifth_failure.jsonl"], "five");
    let a = &five.alerts_of("failed_login_known_ip")[0];
    assert_eq!(
        (a["match_count"].as_u64(), a["activated"].as_bool()),
        (Some(5), Some(true))
    );
    assert_eq!(five.summary()["activated_alerts"], 1);
}

#[test]
fn match_after_window_opens_new_alert() {
    let p = Project::example();
    let r = failed_logins(&p, &["six_failures_window.jsonl"], "six");
    let alerts = r.alerts_of("failed_login_known_ip");
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[0]["match_count"], 5);
    assert_eq!(alerts[0]["activated"], true);
    assert_eq!(alerts[1]["match_count"], 1);
    assert_eq!(alerts[1]["first_match_time"], "2024-05-01T10:20:00Z");
    assert_ne!(alerts[0]["id"], alerts[1]["id"]);
    let matches = crate::read_jsonl(&r.dir.join("matches.jsonl"));
    assert_eq!(matches.len(), 6);
    assert_eq!(matches[5]["alert_id"], alerts[1]["id"]);
}

#[test]
fn state_carries_window_across_runs() {
    let p = Project::example();
    let first = failed_logins(&p, &["four_failures.jsonl"], "run1");
    let id = first.alerts_of("failed_login_known_ip")[0]["id"].clone();
    let second = failed_logins(&p, &["fifth_failure.jsonl"], "run2");
    let a = &second.alerts_of("failed_login_known_ip")[0];
    assert_eq!(a["id"], id, "the second run continues the same alert");
    assert_eq!(a["match_count"], 5);
    assert_eq!(a["activated"], true);
    assert!(p.path().join(".ravenwatch/state/alerts.json").exists());
}

#[test]
fn axonius_list_key_finds_asset_by_second_ip() {
    let p = Project::example();
    let r = failed_logins(&p, &["smb_second_ip.jsonl"], "smb");
    let a = &r.alerts_of("smb_lateral_movement")[0];
    assert_eq!(a["activated"], true);
    assert_eq!(a["title"], "SMB from fin-laptop-042 to eng-laptop-019");
    let src = &a["context"]["source_asset"];
    assert_eq!(src["hostname"], "fin-laptop-042");
    assert_eq!(
        src["network_interfaces_ips"],
        serde_json::json!(["10.20.1.15", "10.20.9.15"])
    );
    assert_eq!(src["last_seen"], "2024-04-30T18:22:00+00:00");
}

#[test]
fn attribute_set_in_detect_is_read_in_title_and_records_json_works() {
    let p = Project::example();
    let r = failed_logins(&p, &["ebs.json"], "ebs");
    let alerts = r.alerts_of("disable_ebs_encryption_production");
    assert_eq!(alerts.len(), 1, "only the production account fires");
    let a = &alerts[0];
    assert_eq!(
        a["title"],
        "EBS default encryption disabled in prod-payments (111122223333)"
    );
    assert_eq!(a["context"]["account"]["is_production"], true);
    assert_eq!(
        a["context"]["user_agent"], "aws-cli/2.15.0",
        "undeclared fields reach detections"
    );
    let matches = crate::read_jsonl(&r.dir.join("matches.jsonl"));
    assert!(matches[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("ebs.json#1"));
}

#[test]
fn bundled_example_fires_every_detection() {
    let p = Project::example();
    let out = p.run(&[
        "run",
        "--input",
        &crate::repo().join("samples").display().to_string(),
        "--output",
        "out/x",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let alerts = crate::read_jsonl(&p.path().join("out/x/alerts.jsonl"));
    for rule in crate::EXAMPLE_RULES {
        assert!(
            alerts
                .iter()
                .any(|a| a["rule"] == rule && a["activated"] == true),
            "{rule} did not fire"
        );
    }
    assert!(p.path().join("out/x/alerts.parquet").exists());
    assert!(out.stdout.contains("activated"), "{}", out.stdout);
}

#[test]
fn bad_log_line_is_reported_and_run_goes_on() {
    let p = Project::example();
    let r = p.detect(&["with_bad_line.jsonl"], "bad");
    assert_eq!(r.output.code, 3, "{:?}", r.output);
    let errors = r.errors();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("with_bad_line.jsonl:2"));
    insta::assert_snapshot!(errors[0]["error"].as_str().unwrap(), @"invalid JSON: key must be a string at line 1 column 2");
    assert_eq!(r.summary()["events"], 2);
    assert_eq!(r.alerts_of("failed_login_known_ip")[0]["match_count"], 2);
}

#[test]
fn an_input_is_processed_once_across_runs_unless_reprocessed() {
    let p = Project::example();
    let log = p.path().join("events.jsonl");
    std::fs::copy(repo().join("tests/data/logs/four_failures.jsonl"), &log).unwrap();
    let input = log.display().to_string();
    let alerts_in_state = |p: &Project| -> Value {
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(p.path().join(".ravenwatch/state/alerts.json")).unwrap(),
        )
        .unwrap();
        state["alerts"].clone()
    };

    // A run that dies before its commit records nothing: the input is read
    // again by the next run.
    let crashed = p.run_env(
        &["run", "--input", &input, "--output", "out/crash"],
        &[("RAVENWATCH_CRASH_AT", "before-state-commit")],
    );
    assert_ne!(crashed.code, 0);
    let first = p.run(&["run", "--input", &input, "--output", "out/first"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        !first.stdout.contains("already processed"),
        "{}",
        first.stdout
    );
    let state = alerts_in_state(&p);
    let first_matches = crate::read_jsonl(&p.path().join("out/first/matches.jsonl")).len();
    assert!(first_matches > 0);

    // The same input again, even touched or copied in place: nothing is
    // counted twice, and the alert state is as the first run left it.
    std::fs::copy(repo().join("tests/data/logs/four_failures.jsonl"), &log).unwrap();
    let second = p.run(&["run", "--input", &input, "--output", "out/second"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second.stdout.starts_with(
            "1 input already processed, skipped; --reprocess to run it again\n0 events,"
        ),
        "{}",
        second.stdout
    );
    assert!(crate::read_jsonl(&p.path().join("out/second/matches.jsonl")).is_empty());
    assert!(crate::read_jsonl(&p.path().join("out/second/alerts.jsonl")).is_empty());
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/second/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["inputs_skipped"], 1);
    assert_eq!(alerts_in_state(&p)["match_count"], state["match_count"]);
    assert_eq!(alerts_in_state(&p), state);

    // New content at the same path is a new input; --reprocess reads a
    // known one again.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str(&text.clone());
    std::fs::write(&log, text).unwrap();
    let changed = p.run(&["run", "--input", &input, "--output", "out/changed"]);
    assert!(
        !changed.stdout.contains("already processed"),
        "{}",
        changed.stdout
    );
    assert_eq!(
        crate::read_jsonl(&p.path().join("out/changed/matches.jsonl")).len(),
        2 * first_matches
    );
    let again = p.run(&[
        "run",
        "--input",
        &input,
        "--output",
        "out/again",
        "--reprocess",
    ]);
    assert!(
        !again.stdout.contains("already processed"),
        "{}",
        again.stdout
    );
    assert_eq!(
        crate::read_jsonl(&p.path().join("out/again/matches.jsonl")).len(),
        2 * first_matches
    );
}

/// The ledger is kept as one marker per input: the alert state carries
/// only the last run's entries, however many inputs came before, and a
/// state written with the whole ledger inside goes out as markers.
#[test]
fn the_state_keeps_only_the_last_runs_ledger_entries_and_markers_keep_the_rest() {
    let p = Project::example();
    let inbox = p.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let four = repo().join("tests/data/logs/four_failures.jsonl");
    let state_inputs = || -> Vec<String> {
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(p.path().join(".ravenwatch/state/alerts.json")).unwrap(),
        )
        .unwrap();
        state["inputs"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for name in ["a", "b", "c"] {
        let file = inbox.join(format!("{name}.jsonl"));
        std::fs::copy(&four, &file).unwrap();
        let r = p.run(&[
            "run",
            "--input",
            file.to_str().unwrap(),
            "--output",
            &format!("out/{name}"),
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        let inputs = state_inputs();
        assert_eq!(inputs.len(), 1, "{inputs:?}");
        assert!(inputs[0].ends_with(&format!("{name}.jsonl")));
    }
    let all = p.run(&["run", "--input", "inbox", "--output", "out/all"]);
    assert!(
        all.stdout
            .starts_with("3 inputs already processed, skipped"),
        "{}",
        all.stdout
    );
    // An older state holds the whole ledger: the next run writes it out.
    let path = p.path().join(".ravenwatch/state/alerts.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let record =
        serde_json::json!({"version": "v", "stamp": "v", "run_id": "20240101T000000.000Z"});
    for n in 0..300 {
        state["inputs"][format!("s3://old/logs/{n}.json")] = record.clone();
    }
    std::fs::write(&path, state.to_string()).unwrap();
    let d = inbox.join("d.jsonl");
    std::fs::copy(&four, &d).unwrap();
    let r = p.run(&["run", "--input", d.to_str().unwrap(), "--output", "out/d"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(state_inputs().len(), 1);
    let ledger = crate::ledger_locations(&p.path().join(".ravenwatch"));
    assert_eq!(ledger.len(), 304, "a, b, c, d and the 300 of the old state");
    assert!(ledger.contains("s3://old/logs/299.json"));
}

#[test]
fn follow_processes_each_new_file_once_and_stops_cleanly_on_sigterm() {
    let p = Project::example();
    let inbox = p.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let four = repo().join("tests/data/logs/four_failures.jsonl");
    // The folder is empty when the follower starts: it waits for files.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .current_dir(p.path())
        .args([
            "-p",
            ".",
            "run",
            "--input",
            "inbox",
            "--follow",
            "--poll-seconds",
            "1",
            "--no-deliver",
        ])
        .env_remove("VIRTUAL_ENV")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ledger = || crate::ledger_locations(&p.path().join(".ravenwatch")).len();
    let wait_for = |n: usize| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while ledger() < n {
            assert!(
                std::time::Instant::now() < until,
                "the follower never committed {n} inputs"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the follower stopped on an empty folder"
    );
    std::fs::copy(&four, inbox.join("a.jsonl")).unwrap();
    wait_for(1);
    std::fs::copy(&four, inbox.join("b.jsonl")).unwrap();
    wait_for(2);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}");
    // Two runs, one per file, each file's events counted once.
    let runs = p.run_ids();
    assert_eq!(runs.len(), 2, "{stdout}");
    let matches = p.stored_matches();
    let once = crate::read_jsonl(&four).len();
    assert_eq!(matches, 2 * once, "{stdout}");
    let status: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join(".ravenwatch/state/follow.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["inputs_processed"], 2);
    assert_eq!(status["pending_inputs"], 0);
}

/// On a sharded storage a `run` merges its own batches: the alerts of an
/// unsharded run. A batch that does not parse (storage damage) is moved
/// aside and reported instead of stopping its shard for good.
#[test]
fn a_run_on_a_sharded_storage_merges_and_sets_an_unreadable_batch_aside() {
    let samples = repo().join("samples");
    let samples = samples.to_str().unwrap();
    let plain = Project::example();
    let one = plain.run(&["run", "--input", samples, "--workers", "1"]);
    assert_eq!(one.code, 0, "{}{}", one.stdout, one.stderr);

    let sharded = Project::example();
    let state = sharded.path().join(".ravenwatch/state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("grouping.json"), r#"{"shards": 1}"#).unwrap();
    let groups = sharded.path().join(".ravenwatch/groups/000");
    std::fs::create_dir_all(&groups).unwrap();
    std::fs::write(groups.join("0-damaged.jsonl"), "not a batch\n").unwrap();
    let out = sharded.run(&["run", "--input", samples, "--workers", "1"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(sharded
        .path()
        .join(".ravenwatch/rejected/groups/000/0-damaged.jsonl")
        .is_file());
    assert!(!groups.join("0-damaged.jsonl").exists());
    let alerts = |p: &Project| -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = p
            .run_ids()
            .iter()
            .flat_map(|id| {
                crate::read_jsonl(&p.path().join(format!(".ravenwatch/runs/{id}/alerts.jsonl")))
            })
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_string(),
                    a["match_count"].as_u64().unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(alerts(&sharded), alerts(&plain));
    let round = sharded.run_ids()[0].clone();
    let errors = std::fs::read_to_string(
        sharded
            .path()
            .join(format!(".ravenwatch/runs/{round}/errors.jsonl")),
    )
    .unwrap();
    assert!(
        errors.contains("unreadable match batch, moved to"),
        "{errors}"
    );
}

/// A run told to stop (`run --follow` on SIGTERM) starts no further input
/// and commits what it read: inputs it did not start are not recorded, so
/// the next run reads them.
#[test]
fn a_stopped_run_records_only_the_inputs_it_read() {
    use ravenwatch::engine::{run, RunOptions};
    let p = Project::example();
    let inbox = p.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let four = repo().join("tests/data/logs/four_failures.jsonl");
    for name in ["a", "b", "c"] {
        std::fs::copy(&four, inbox.join(format!("{name}.jsonl"))).unwrap();
    }
    let project = ravenwatch::config::Project::load(p.path()).unwrap();
    let storage: std::sync::Arc<dyn ravenwatch::storage::Storage> = std::sync::Arc::new(
        ravenwatch::storage::LocalStorage::new(p.path().join(".ravenwatch")),
    );
    let options = |stop: bool| RunOptions {
        inputs: vec![inbox.display().to_string()],
        workers: 1,
        worker_command: Some(env!("CARGO_BIN_EXE_ravenwatch").into()),
        auto_filter: true,
        stop: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            stop,
        ))),
        ..RunOptions::default()
    };
    let stopped = run(&project, std::sync::Arc::clone(&storage), options(true)).unwrap();
    assert_eq!(stopped.summary.inputs_left, 3);
    assert_eq!(stopped.summary.events, 0);
    assert!(crate::ledger_locations(&p.path().join(".ravenwatch")).is_empty());
    let next = run(&project, storage, options(false)).unwrap();
    assert_eq!(next.summary.inputs_left, 0);
    assert_eq!(
        next.summary.inputs_skipped, 0,
        "nothing was recorded as read"
    );
    assert_eq!(
        next.summary.events,
        3 * crate::read_jsonl(&four).len() as u64
    );
    assert_eq!(
        crate::ledger_locations(&p.path().join(".ravenwatch")).len(),
        3
    );
}
