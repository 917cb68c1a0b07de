//! What a newcomer meets in the first hour: `init`, commands run in the
//! wrong folder, selections that run nothing, the run summary, stdin, and
//! `query` on a storage with past runs.

use crate::{repo, Output, Project};
use std::io::Write;
use std::process::{Command, Stdio};

/// An empty folder to run commands in.
fn empty() -> Project {
    Project {
        dir: tempfile::tempdir().unwrap(),
    }
}

/// A project as `ravenwatch init . [args]` writes it.
fn initialised(args: &[&str]) -> Project {
    let p = empty();
    let mut init = vec!["init", "."];
    init.extend(args);
    let out = p.run(&init);
    assert_eq!(out.code, 0, "{out:?}");
    p
}

#[test]
fn commands_outside_a_project_are_usage_errors() {
    let p = empty();
    for args in [
        &["validate"][..],
        &["test"],
        &["run", "--input", "."],
        &["query", "SELECT 1"],
        &["enrichment", "list"],
    ] {
        let out = p.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing claims success");
        if args == ["validate"] {
            insta::assert_snapshot!(out.stderr, @"error: . is not a Ravenwatch project: it has no ravenwatch.yml and none of detections/, schemas/, enrichment/ (use -p to point at a project, or create one with `ravenwatch init`)");
        }
    }
    let out: Output = Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .current_dir(p.path())
        .args(["-p", "no/such/folder", "validate"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("project folder no/such/folder does not exist"),
        "{out:?}"
    );
}

#[test]
fn a_test_selection_that_runs_nothing_says_why() {
    let p = Project::example();
    let out = p.run(&["test", "-k", "no such case anywhere"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("error: no test case matches -k `no such case anywhere` ("),
        "{out:?}"
    );

    let p = initialised(&[]);
    std::fs::remove_dir_all(p.path().join("detections/failed_login/tests")).unwrap();
    let out = p.run(&["test"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("no test cases in the selected detections: add detections/<rule>/tests/"),
        "{out:?}"
    );
}

#[test]
fn init_writes_a_gitignore_for_storage_and_keeps_one_there() {
    let p = empty();
    std::fs::write(p.path().join(".gitignore"), "target/").unwrap();
    assert_eq!(p.run(&["init", "."]).code, 0);
    let ignore = std::fs::read_to_string(p.path().join(".gitignore")).unwrap();
    assert_eq!(ignore, "target/\n.ravenwatch/\n");
    // A second init writes nothing and says why.
    let again = p.run(&["init", "."]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("nothing was written"), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(p.path().join(".gitignore")).unwrap(),
        ignore
    );
}

#[test]
fn a_cloudtrail_project_from_init_tests_and_runs() {
    let p = initialised(&["--schema", "cloudtrail"]);
    assert!(p.path().join("schemas/cloudtrail.yml").is_file());
    let test = p.run(&["test"]);
    assert_eq!(test.code, 0, "{test:?}");
    assert!(test.stdout.contains("3 passed"), "{test:?}");
    let run = p.run(&["run", "--input", "samples/"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("3 events, 1 rule, "), "{run:?}");
    assert!(
        run.stdout
            .contains("1 rule match -> 1 alert (1 activated), 0 errors"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("Root console login to 111122223333 from 198.51.100.7"),
        "{run:?}"
    );
}

/// Severities of the alerts a run's summary lists, in order.
fn listed_severities(out: &Output) -> Vec<String> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let word = l.strip_prefix("  ")?.split_whitespace().next()?;
            ["CRITICAL", "HIGH", "MEDIUM", "LOW", "NOTICE", "INFO"]
                .contains(&word)
                .then(|| word.to_string())
        })
        .collect()
}

#[test]
fn the_summary_lists_the_most_severe_alerts_first() {
    let p = Project::example();
    let samples = repo().join("samples").display().to_string();
    let run = p.run(&["run", "--input", &samples, "--show", "3"]);
    assert_eq!(run.code, 0, "{run:?}");
    let shown = listed_severities(&run);
    assert_eq!(shown.len(), 3, "{run:?}");
    let all = p.run(&[
        "query",
        "--format",
        "csv",
        "SELECT severity, match_count FROM alerts WHERE activated",
    ]);
    assert_eq!(all.code, 0, "{all:?}");
    let rank = |s: &str| {
        ["info", "notice", "low", "medium", "high", "critical"]
            .iter()
            .position(|x| x.eq_ignore_ascii_case(s))
            .unwrap()
    };
    let mut severities: Vec<usize> = all
        .stdout
        .lines()
        .skip(1)
        .map(|l| rank(l.split(',').next().unwrap()))
        .collect();
    severities.sort_unstable_by(|a, b| b.cmp(a));
    let shown_ranks: Vec<usize> = shown.iter().map(|s| rank(s)).collect();
    assert_eq!(
        shown_ranks,
        severities[..3],
        "the three most severe: {run:?}"
    );
    assert!(
        run.stdout.contains("more (every alert is in the outputs)"),
        "{run:?}"
    );
}

/// `alerts.jsonl` of a run as (rule, dedupe, match_count), sorted.
fn alert_keys(dir: &std::path::Path) -> Vec<(String, String, u64)> {
    let mut keys: Vec<(String, String, u64)> = crate::read_jsonl(&dir.join("alerts.jsonl"))
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_string(),
                a["dedupe"].as_str().unwrap_or_default().to_string(),
                a["match_count"].as_u64().unwrap(),
            )
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn stdin_is_an_input_compressed_or_not() {
    let p = Project::example();
    let file = p.run(&[
        "run",
        "--input",
        &repo().join("samples").display().to_string(),
        "--output",
        "out/file",
    ]);
    assert_eq!(file.code, 0, "{file:?}");
    let gz = std::fs::read(repo().join("samples/events.jsonl.gz")).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut gunzip(&gz), &mut plain).unwrap();
    for (name, bytes) in [("gz", gz.clone()), ("plain", plain)] {
        // Each run starts from no state, so both see the same windows.
        let _ = std::fs::remove_dir_all(p.path().join(".ravenwatch"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
            .current_dir(p.path())
            .args(["-p", ".", "run", "--input", "-", "--output"])
            .arg(format!("out/{name}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("3,000 events, "));
        assert_eq!(
            alert_keys(&p.path().join(format!("out/{name}"))),
            alert_keys(&p.path().join("out/file")),
            "{name}"
        );
        let matches = crate::read_jsonl(&p.path().join(format!("out/{name}/matches.jsonl")));
        assert!(matches[0]["source"].as_str().unwrap().starts_with("stdin:"));
    }
}

/// `gz` decompressed by the system's `gzip -dc`.
fn gunzip(gz: &[u8]) -> std::io::Cursor<Vec<u8>> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    std::io::Cursor::new(out.stdout)
}

#[test]
fn a_missing_input_is_a_usage_error() {
    let p = Project::example();
    let out = p.run(&["run", "--input", "no/such/logs"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "error: input `no/such/logs` does not exist"
    );
    let out = p.run(&[
        "query",
        "SELECT count(*) FROM events",
        "--input",
        "no/such/logs",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn query_reads_only_the_tables_and_runs_it_names() {
    let p = Project::example();
    let samples = repo().join("samples").display().to_string();
    for _ in 0..2 {
        // The same input twice: the second run reprocesses it on purpose.
        let run = p.run(&["run", "--input", &samples, "--reprocess"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let runs = p.run_ids();
    assert_eq!(runs.len(), 2);
    // `query` reads the runs' Parquet outputs: the JSON lines can go.
    let csv = |sql: &str| {
        let out = p.run(&["query", "--format", "csv", sql]);
        assert_eq!(out.code, 0, "{sql}: {out:?}");
        out.stdout
    };
    let counts = "SELECT (SELECT count(*) FROM alerts) AS a, (SELECT count(*) FROM matches) AS m";
    let before = csv(counts);
    let contexts = csv("SELECT rule, context FROM alerts ORDER BY id, run_id");
    for id in &runs {
        for file in ["alerts.jsonl", "matches.jsonl"] {
            std::fs::remove_file(p.path().join(format!(".ravenwatch/runs/{id}/{file}"))).unwrap();
        }
    }
    assert_eq!(csv(counts), before);
    assert_eq!(
        csv("SELECT rule, context FROM alerts ORDER BY id, run_id"),
        contexts
    );
    // The first run's alerts become unreadable: only queries that read
    // them may notice.
    std::fs::write(
        p.path()
            .join(format!(".ravenwatch/runs/{}/alerts.parquet", runs[0])),
        "not parquet\n",
    )
    .unwrap();
    let one = p.run(&["query", "SELECT 1 AS one"]);
    assert_eq!(one.code, 0, "{one:?}");
    let second = p.run(&[
        "query",
        "--format",
        "csv",
        &format!(
            "SELECT count(*) AS n FROM alerts WHERE run_id = '{}'",
            runs[1]
        ),
    ]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_ne!(second.stdout.trim(), "n\n0", "{second:?}");
    let matches = p.run(&["query", "SELECT count(*) FROM matches"]);
    assert_eq!(matches.code, 0, "{matches:?}");
    let all = p.run(&["query", "SELECT count(*) FROM alerts"]);
    assert_eq!(all.code, 1, "{all:?}");
    assert!(
        all.stderr
            .contains(&format!("runs/{}/alerts.parquet: ", runs[0])),
        "{all:?}"
    );
}

#[test]
fn query_typos_get_did_you_mean() {
    let p = Project::example();
    let column = p.run(&["query", "SELECT descripton FROM known_ip_info"]);
    assert_eq!(column.code, 1, "{column:?}");
    assert!(
        column.stderr.contains("(did you mean `description`?)"),
        "{column:?}"
    );
    let table = p.run(&["query", "SELECT * FROM known_ip_infos"]);
    assert_eq!(table.code, 1, "{table:?}");
    assert!(
        table.stderr.contains("(did you mean `known_ip_info`?)"),
        "{table:?}"
    );
}

#[test]
fn s3_without_credentials_says_what_was_checked() {
    let p = Project::example();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ravenwatch"));
    cmd.current_dir(p.path())
        .args(["-p", ".", "run", "--input", "s3://some-bucket/logs/"]);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(var);
    }
    let home = tempfile::tempdir().unwrap();
    // Nothing may leave loopback: no instance metadata, a local endpoint.
    cmd.env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no AWS credentials found (checked: "),
        "{stderr}"
    );
    assert!(!stderr.contains("IMDS is disabled"), "{stderr}");
}

#[test]
fn runs_written_before_parquet_outputs_are_read_from_json_lines() {
    let p = Project::example();
    let samples = repo().join("samples").display().to_string();
    assert_eq!(p.run(&["run", "--input", &samples]).code, 0);
    let sql = "SELECT count(*) AS n, max(match_count) AS m FROM alerts";
    let with_parquet = p.run(&["query", "--format", "csv", sql]);
    assert_eq!(with_parquet.code, 0, "{with_parquet:?}");
    let id = &p.run_ids()[0];
    for file in ["alerts.parquet", "matches.parquet"] {
        std::fs::remove_file(p.path().join(format!(".ravenwatch/runs/{id}/{file}"))).unwrap();
    }
    let from_jsonl = p.run(&["query", "--format", "csv", sql]);
    assert_eq!(from_jsonl.code, 0, "{from_jsonl:?}");
    assert_eq!(from_jsonl.stdout, with_parquet.stdout);
    assert!(
        with_parquet.stdout.starts_with("n,m\n94,"),
        "{with_parquet:?}"
    );
}
