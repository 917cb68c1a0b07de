//! Hostile input, hostile rules and interrupted runs: each case is one way
//! an attacker or an unlucky operator broke a run before.

use crate::{read_jsonl, Project};
use std::path::Path;

/// The example project with only the `probe` rule (matches events that
/// have a `probe` field).
fn probe_project() -> Project {
    let p = Project::with("hostile");
    p.only_detections(&["probe"]);
    p
}

fn write(p: &Project, name: &str, text: &str) -> String {
    let path = p.path().join(name);
    std::fs::write(&path, text).unwrap();
    name.to_string()
}

fn run_on(p: &Project, input: &str, out: &str) -> crate::Output {
    p.run(&["run", "--input", input, "--output", out])
}

#[test]
fn a_deeply_nested_line_is_refused_and_later_runs_still_read_the_state() {
    let p = probe_project();
    let deep = format!(
        r#"{{"ts":"2024-05-01T00:00:00Z","probe":1,"x":{}1{}}}"#,
        "[".repeat(124),
        "]".repeat(124)
    );
    let good = r#"{"ts":"2024-05-01T00:01:00Z","probe":2,"x":[[1]]}"#;
    let input = write(&p, "deep.jsonl", &format!("{deep}\n{good}\n"));
    let out = run_on(&p, &input, "out/1");
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/1/errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["source"], "deep.jsonl:1");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("nested deeper than 64 levels"),
        "{errors:?}"
    );
    assert_eq!(read_jsonl(&p.path().join("out/1/alerts.jsonl")).len(), 1);
    // The next run reads the state the first one left.
    let again = run_on(&p, &write(&p, "good.jsonl", good), "out/2");
    assert_eq!(again.code, 0, "{again:?}");
}

#[test]
fn an_unreadable_state_is_kept_and_the_message_says_how_to_recover() {
    let p = probe_project();
    let input = write(
        &p,
        "one.jsonl",
        "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":1}\n",
    );
    assert_eq!(run_on(&p, &input, "out/1").code, 0);
    let state = p.path().join(".ravenwatch/state/alerts.json");
    std::fs::write(&state, "{\"format\":1,\"watermark_us\":").unwrap();
    let out = run_on(&p, &input, "out/2");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("state/alerts.json: unreadable alert state"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(".unreadable`) and run again"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"format\":1,\"watermark_us\":"
    );
    assert!(!Path::new(&p.path().join("out/2/summary.json")).exists());
}

#[test]
fn a_future_dated_event_is_refused_and_keeps_open_windows() {
    let p = probe_project();
    // Two matches 10 minutes apart, threshold 2 within the default hour:
    // the second run's match must still join the first run's window.
    std::fs::write(
        p.path().join("detections/probe/detection.yml"),
        "name: probe\nenabled: true\ntables: [events]\nalert:\n  severity: high\n  threshold: 2\n",
    )
    .unwrap();
    let first = write(
        &p,
        "first.jsonl",
        "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":\"k\"}\n{\"ts\":\"2099-01-01T00:00:00Z\",\"probe\":\"k\"}\n{\"ts\":1e20,\"probe\":\"k\"}\n",
    );
    let out = run_on(&p, &first, "out/1");
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/1/errors.jsonl"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (e, line) in errors.iter().zip(["first.jsonl:2", "first.jsonl:3"]) {
        assert_eq!(e["source"], line);
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("outside the accepted range"),
            "{e}"
        );
    }
    let second = write(
        &p,
        "second.jsonl",
        "{\"ts\":\"2024-05-01T00:10:00Z\",\"probe\":\"k\"}\n",
    );
    assert_eq!(run_on(&p, &second, "out/2").code, 0);
    let alerts = read_jsonl(&p.path().join("out/2/alerts.jsonl"));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["match_count"], 2);
    assert_eq!(alerts[0]["activated"], true);
}

#[test]
fn a_truncated_gzip_file_delivers_every_event_before_the_break() {
    use std::io::Write;
    let p = probe_project();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..10_000 {
        // Distinct-looking lines so the stream does not compress to nothing.
        writeln!(
            gz,
            "{{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":{i},\"pad\":\"{:x}\"}}",
            i * 7919
        )
        .unwrap();
    }
    let bytes = gz.finish().unwrap();
    std::fs::write(p.path().join("cut.jsonl.gz"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = run_on(&p, "cut.jsonl.gz", "out/1");
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/1/errors.jsonl"));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/1/summary.json")).unwrap(),
    )
    .unwrap();
    let events = summary["events"].as_u64().unwrap();
    let matches = read_jsonl(&p.path().join("out/1/matches.jsonl")).len() as u64;
    assert_eq!(matches, events, "every decoded event matched");
    let stream = errors
        .iter()
        .find(|e| {
            e["error"]
                .as_str()
                .unwrap()
                .contains("read failed after line")
        })
        .unwrap_or_else(|| panic!("{errors:?}"));
    let line: u64 = stream["error"].as_str().unwrap()["read failed after line ".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Every complete line before the break was read; at most the cut
    // line itself is reported separately.
    assert!(events > 5000, "{events}");
    assert_eq!(events + (errors.len() as u64 - 1), line, "{errors:?}");
}

/// Syncs, breaks `aws_account_info`'s data file with `data`, syncs again:
/// the second sync's stderr (it must fail and keep the snapshot).
fn resync_with(data: &[u8]) -> String {
    let p = Project::example();
    assert_eq!(p.run(&["enrichment", "sync"]).code, 0);
    let current = p
        .path()
        .join(".ravenwatch/enrichment/aws_account_info/current.json");
    let before = std::fs::read_to_string(&current).unwrap();
    std::fs::write(p.path().join("enrichment/aws_account_info/data.csv"), data).unwrap();
    let out = p.run(&["enrichment", "sync", "aws_account_info"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(std::fs::read_to_string(&current).unwrap(), before);
    out.stderr
}

#[test]
fn an_unclosed_csv_quote_fails_the_sync_and_keeps_the_snapshot() {
    let good = std::fs::read_to_string(crate::repo().join("enrichment/aws_account_info/data.csv"))
        .unwrap();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    // Open a quote in the second data row's first cell and never close it.
    lines[2] = format!("\"{}", lines[2]);
    let stderr = resync_with(lines.join("\n").as_bytes());
    assert!(
        stderr.contains(
            "enrichment/aws_account_info/data.csv: line 3: a quoted field is never closed"
        ),
        "{stderr}"
    );
}

#[test]
fn an_empty_data_file_does_not_replace_a_populated_table() {
    let stderr = resync_with(b"");
    assert!(
        stderr.contains("enrichment/aws_account_info/data.csv: the file is empty (0 bytes)"),
        "{stderr}"
    );
}

#[test]
fn a_cyclic_context_and_a_huge_title_are_stored_bounded_with_errors() {
    let p = Project::with("hostile_returns");
    p.only_detections(&["returns"]);
    let input = write(
        &p,
        "one.jsonl",
        "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":1}\n",
    );
    let out = run_on(&p, &input, "out/1");
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.len() < 20_000, "the title is printed bounded");
    let alerts = read_jsonl(&p.path().join("out/1/alerts.jsonl"));
    assert_eq!(alerts.len(), 1);
    let title = alerts[0]["title"].as_str().unwrap();
    assert!(
        title.len() < 9 * 1024 && title.ends_with("…[truncated]"),
        "{}",
        title.len()
    );
    assert_eq!(
        alerts[0]["context"],
        serde_json::json!({"ip": "10.0.0.1", "a": "<cycle>", "b": "<cycle>"})
    );
    let errors: Vec<String> = read_jsonl(&p.path().join("out/1/errors.jsonl"))
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["function"].as_str().unwrap(),
                e["error"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.contains(&"dedupe dedupe() must return a str, got int".to_string()),
        "{errors:?}"
    );
    assert_eq!(alerts[0]["dedupe"], alerts[0]["title"], "the fallback");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("title title() returned 20971520 bytes")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e
            .starts_with("alert_context alert_context() was stored in part: it contains itself")),
        "{errors:?}"
    );
}

#[test]
fn a_rule_past_its_time_budget_skips_that_event_and_the_run_goes_on() {
    let p = Project::with("hostile_loop");
    p.only_detections(&["loops"]);
    let settings = p.path().join("ravenwatch.yml");
    let mut yml = std::fs::read_to_string(&settings).unwrap();
    yml.push_str("\nrule_timeout_seconds: 0.3\n");
    std::fs::write(&settings, yml).unwrap();
    let input = write(
        &p,
        "spin.jsonl",
        "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":\"spin\"}\n{\"ts\":\"2024-05-01T00:00:01Z\",\"probe\":\"sleep\"}\n{\"ts\":\"2024-05-01T00:00:02Z\",\"probe\":\"ok\"}\n",
    );
    let started = std::time::Instant::now();
    let out = run_on(&p, &input, "out/1");
    assert_eq!(out.code, 3, "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let errors = read_jsonl(&p.path().join("out/1/errors.jsonl"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (e, line) in errors.iter().zip(["spin.jsonl:1", "spin.jsonl:2"]) {
        assert_eq!(e["rule"], "loops");
        assert_eq!(e["source"], line);
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with("detect() ran past its time budget of 0.3s and was stopped"),
            "{e}"
        );
    }
    assert_eq!(read_jsonl(&p.path().join("out/1/alerts.jsonl")).len(), 1);
    // `ravenwatch test` bounds calls the same way (in-process).
}

/// `SELECT count(*) FROM alerts` over every committed run.
fn alert_count(p: &Project) -> u64 {
    let out = p.run(&[
        "query",
        "SELECT count(*) AS n FROM alerts",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    rows[0]["n"].as_u64().unwrap_or_else(|| panic!("{rows}"))
}

fn run_crashing_at(p: &Project, input: &str, point: &str) -> crate::Output {
    p.run_env(
        &["run", "--input", input],
        &[("RAVENWATCH_CRASH_AT", point)],
    )
}

const THREE_PROBES: &str = "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":1}\n{\"ts\":\"2024-05-01T00:01:00Z\",\"probe\":2}\n{\"ts\":\"2024-05-01T00:02:00Z\",\"probe\":3}\n";

#[test]
fn killed_before_the_state_commit_the_run_is_not_counted_and_a_rerun_counts_once() {
    let p = probe_project();
    let input = write(&p, "three.jsonl", THREE_PROBES);
    let killed = run_crashing_at(&p, &input, "before-state-commit");
    assert_ne!(killed.code, 0, "{killed:?}");
    assert_eq!(
        alert_count(&p),
        0,
        "outputs of an uncommitted run are not counted"
    );
    let again = p.run(&["run", "--input", &input]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(alert_count(&p), 3);
    // gc removes the killed run (and only it); a dry run removes nothing.
    let ids = p.run_ids();
    assert_eq!(ids.len(), 2);
    let dry = p.run(&["gc", "--dry-run"]);
    assert!(
        dry.stdout.contains(&format!("would remove run {}", ids[0])),
        "{dry:?}"
    );
    assert_eq!(p.run_ids().len(), 2);
    let gc = p.run(&["gc"]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert!(gc.stdout.contains("removed 1 uncommitted run(s)"), "{gc:?}");
    assert_eq!(p.run_ids(), [ids[1].clone()]);
    assert_eq!(alert_count(&p), 3);
}

#[test]
fn killed_after_the_state_commit_the_run_counts_and_the_next_run_repairs_its_marker() {
    let p = probe_project();
    let input = write(&p, "three.jsonl", THREE_PROBES);
    let killed = run_crashing_at(&p, &input, "after-state-commit");
    assert_ne!(killed.code, 0, "{killed:?}");
    assert_eq!(
        alert_count(&p),
        3,
        "the state names the run: it is committed"
    );
    let ids = p.run_ids();
    let marker = p
        .path()
        .join(".ravenwatch/runs")
        .join(&ids[0])
        .join("incomplete");
    assert!(marker.exists());
    let other = write(
        &p,
        "other.jsonl",
        "{\"ts\":\"2024-05-01T00:05:00Z\",\"probe\":9}\n",
    );
    assert_eq!(p.run(&["run", "--input", &other]).code, 0);
    assert!(!marker.exists(), "repaired by the next run");
    assert_eq!(alert_count(&p), 4);
}

#[test]
fn killed_holding_the_state_lock_the_next_run_proceeds_at_once() {
    let p = probe_project();
    let input = write(&p, "three.jsonl", THREE_PROBES);
    let killed = run_crashing_at(&p, &input, "state-write-locked");
    assert_ne!(killed.code, 0, "{killed:?}");
    assert!(p
        .path()
        .join(".ravenwatch/state/.alerts.json.lock")
        .exists());
    let gc = p.run(&["gc", "--dry-run"]);
    assert!(
        gc.stdout
            .contains(".alerts.json.lock (left by a process that no longer runs)"),
        "{gc:?}"
    );
    let again = p.run(&["run", "--input", &input]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(alert_count(&p), 3);
}

#[test]
fn killed_before_the_table_pointer_switch_the_pointer_is_unchanged_and_a_sync_succeeds() {
    let p = Project::example();
    assert_eq!(p.run(&["enrichment", "sync"]).code, 0);
    let current = p
        .path()
        .join(".ravenwatch/enrichment/aws_account_info/current.json");
    let before = std::fs::read_to_string(&current).unwrap();
    let data = p.path().join("enrichment/aws_account_info/data.csv");
    let mut csv = std::fs::read_to_string(&data).unwrap();
    csv.push_str("999988887777,new-account,true,sec,production\n");
    std::fs::write(&data, csv).unwrap();
    let killed = p.run_env(
        &["enrichment", "sync", "aws_account_info"],
        &[("RAVENWATCH_CRASH_AT", "before-pointer-switch")],
    );
    assert_ne!(killed.code, 0, "{killed:?}");
    assert_eq!(std::fs::read_to_string(&current).unwrap(), before);
    assert_eq!(p.run(&["enrichment", "sync", "aws_account_info"]).code, 0);
    let new = p.run(&["enrichment", "get", "aws_account_info", "999988887777"]);
    assert!(new.stdout.contains("new-account"), "{new:?}");
}

#[test]
fn what_rules_print_is_labelled_on_stderr_and_machine_output_stays_clean() {
    let p = Project::with("hostile_print");
    p.only_detections(&["prints"]);
    let test = p.run(&["test", "--format", "json"]);
    assert_eq!(test.code, 0, "{test:?}");
    let report: serde_json::Value = serde_json::from_str(&test.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", test.stdout));
    assert!(report.is_object() || report.is_array());
    assert!(
        test.stderr.contains("[prints::a probe] looking at 7"),
        "{test:?}"
    );
    let input = write(
        &p,
        "one.jsonl",
        "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":5}\n",
    );
    let run = run_on(&p, &input, "out/1");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("looking at"), "{run:?}");
    assert!(run.stderr.contains("[prints] looking at 5"), "{run:?}");
}

#[test]
fn a_named_pipe_in_an_input_folder_is_skipped_and_an_empty_folder_is_an_error() {
    let p = probe_project();
    let logs = p.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let empty = p.run(&["run", "--input", "logs"]);
    assert_ne!(empty.code, 0, "{empty:?}");
    assert!(
        empty.stderr.contains("the folder holds no log files"),
        "{empty:?}"
    );
    std::fs::write(
        logs.join("a.jsonl"),
        "{\"ts\":\"2024-05-01T00:00:00Z\",\"probe\":1}\n",
    )
    .unwrap();
    let fifo = logs.join("pipe.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = p.run(&["run", "--input", "logs", "--output", "out/1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("pipe.jsonl: skipped, not a regular file"),
        "{out:?}"
    );
    assert_eq!(read_jsonl(&p.path().join("out/1/alerts.jsonl")).len(), 1);
}

#[test]
fn two_processes_loading_the_same_table_data_at_once_both_succeed() {
    let p = Project::example();
    let pause = p.path().join("paused");
    // The first sync stops just before switching the table's pointer…
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .current_dir(p.path())
        .args(["-p", ".", "enrichment", "sync", "aws_account_info"])
        .env_remove("VIRTUAL_ENV")
        .env("RAVENWATCH_PAUSE_AT", "before-pointer-switch")
        .env("RAVENWATCH_PAUSE_FILE", &pause)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !pause.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first sync never paused"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // …a second process (a worker starting beside it) loads the same files
    // and makes its snapshot current first.
    let second = p.run(&["enrichment", "sync", "aws_account_info"]);
    assert_eq!(second.code, 0, "{second:?}");
    std::fs::remove_file(&pause).unwrap();
    let first = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    // Its write lost the race, but the winner holds the same data: no error.
    assert!(first.status.success(), "{stderr}");
    assert!(!stderr.contains("changed since it was read"), "{stderr}");
    let rows = p.run(&["enrichment", "get", "aws_account_info", "111122223333"]);
    assert_eq!(rows.code, 0, "{rows:?}");
}
