//! SQL: `ravenwatch query` over enrichment tables, logs and past runs; SQL
//! detections; pre-filters of Python detections.

use crate::{read_jsonl, repo, Project};
use serde_json::Value;

fn sql_logs() -> Vec<String> {
    ["part1.jsonl", "part2.jsonl"]
        .iter()
        .map(|f| {
            repo()
                .join("tests/data/logs/sql")
                .join(f)
                .display()
                .to_string()
        })
        .collect()
}

#[test]
fn query_reads_an_enrichment_table_in_every_format() {
    let p = Project::example();
    let sql = "SELECT ip, threat, confidence FROM threat_ips WHERE confidence >= 80 ORDER BY ip";
    let table = p.run(&["query", sql]);
    assert_eq!(table.code, 0, "{table:?}");
    insta::assert_snapshot!(table.stdout, @r"
    +---------------+------------------+------------+
    | ip            | threat           | confidence |
    +---------------+------------------+------------+
    | 192.0.2.66    | Cobalt Strike C2 | 95         |
    | 192.0.2.77    | QakBot C2        | 80         |
    | 2001:db8::bad | Sliver C2        | 85         |
    +---------------+------------------+------------+
    (3 rows)
    ");
    let json = p.run(&["query", sql, "--format", "json"]);
    let rows: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        rows[0],
        serde_json::json!({"ip": "192.0.2.66", "threat": "Cobalt Strike C2", "confidence": 95})
    );
    assert_eq!(rows.as_array().unwrap().len(), 3);

    // Lists (several interface IPs) become JSON text in CSV; nulls stay empty.
    let csv = p.run(&[
        "query",
        "SELECT hostname, network_interfaces_ips, owner FROM axonius_assets WHERE hostname IN ('fin-laptop-042', 'legacy-build-01') ORDER BY hostname",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.code, 0, "{csv:?}");
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines[0], "hostname,network_interfaces_ips,owner");
    assert_eq!(
        lines[1],
        r#"fin-laptop-042,"[""10.20.1.15"",""10.20.9.15""]",maria.garcia"#
    );
    assert_eq!(lines.len(), 3, "{}", csv.stdout);
}

#[test]
fn query_joins_a_log_file_with_an_enrichment_table() {
    let p = Project::example();
    let logs = sql_logs();
    let sql =
        "SELECT e.source.ip AS src, t.threat, count(*) AS connections, min(e._source) AS first \
               FROM events e JOIN threat_ips t ON e.destination.ip = t.ip \
               GROUP BY 1, 2 ORDER BY connections DESC, src";
    let out = p.run(&[
        "query", sql, "--input", &logs[0], &logs[1], "--format", "csv",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let first = format!("{}:1", logs[0]);
    let third = format!("{}:3", logs[0]);
    let second_file = format!("{}:1", logs[1]);
    assert_eq!(
        out.stdout,
        format!(
            "src,threat,connections,first\n\
             10.20.2.7,Cobalt Strike C2,3,{first}\n\
             10.20.1.15,AsyncRAT host,1,{third}\n\
             10.20.9.15,QakBot C2,1,{second_file}\n"
        )
    );
}

#[test]
fn query_reads_alerts_and_matches_of_runs() {
    let p = Project::example();
    let logs = sql_logs();
    let run = p.run(&["run", "--input", &logs[0], "--input", &logs[1]]);
    assert_eq!(run.code, 0, "{run:?}");
    let runs = p.run_ids();
    assert_eq!(runs.len(), 1);

    let sql = "SELECT rule, dedupe, match_count, activated, context.threat AS threat FROM alerts \
               WHERE rule = 'threat_ip_traffic' ORDER BY dedupe, first_match_time";
    let out = p.run(&["query", sql, "--format", "csv", "--run", &runs[0]]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "rule,dedupe,match_count,activated,threat\n\
         threat_ip_traffic,192.0.2.66,2,true,Cobalt Strike C2\n\
         threat_ip_traffic,192.0.2.66,1,true,Cobalt Strike C2\n\
         threat_ip_traffic,192.0.2.77,1,true,QakBot C2\n"
    );
    // Matches: nested event fields, event time as a timestamp, the run id.
    let out = p.run(&[
        "query",
        "SELECT event.source.port AS port, time > TIMESTAMP '2024-05-10T10:30:00Z' AS later, run_id FROM matches \
         WHERE rule = 'threat_ip_traffic' ORDER BY time",
        "--format",
        "json",
    ]);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let ports: Vec<i64> = rows.iter().map(|r| r["port"].as_i64().unwrap()).collect();
    assert_eq!(ports, vec![50001, 50005, 51001, 51002]);
    assert_eq!(rows[2]["later"], true);
    assert_eq!(rows[0]["run_id"], runs[0].as_str());

    let unknown = p.run(&["query", "SELECT 1 FROM alerts", "--run", "19990101T000000Z"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains(&format!("(latest: {})", runs[0])),
        "{}",
        unknown.stderr
    );
}

#[test]
fn bad_sql_is_reported_at_its_position() {
    let p = Project::example();
    let out = p.run(&["query", "SELECT ip,\n  descripton\nFROM known_ip_info"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stderr, @r"
    error: SQL line 2, column 3: column 'descripton' not found (did you mean `description`?)
        descripton
        ^
    ");
    let parse = p.run(&["query", "SELECT ip FROM known_ip_info WHERE ip = = '1'"]);
    assert_eq!(parse.code, 1);
    assert!(
        parse
            .stderr
            .starts_with("error: SQL line 1, column 41: Expected: an expression, found: ="),
        "{}",
        parse.stderr
    );
    let geo = p.run(&["query", "SELECT * FROM geoip"]);
    assert!(
        geo.stderr
            .contains("`geoip` is an MMDB (GeoIP) table, which SQL cannot read"),
        "{}",
        geo.stderr
    );
    let logs = p.run(&["query", "SELECT count(*) FROM events"]);
    assert!(
        logs.stderr
            .contains("log table `events` is read from files: add --input PATH"),
        "{}",
        logs.stderr
    );
    let write = p.run(&["query", "CREATE TABLE x AS SELECT 1"]);
    assert_eq!(write.code, 1, "{write:?}");
}

#[test]
fn sql_errors_in_detections_are_located_in_detection_yml() {
    let p = Project::with("sql_errors");
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stdout, @r"
    detections/mixed/detection.yml:3:1: the detection has both `query:` and detect.py; keep one (a SQL detection has no detect.py)
    detections/mixed/detection.yml:4:1: `filter:` is for Python detections; put the condition in the query's WHERE clause
    detections/bad_sql/detection.yml:5:57: query: column 'addr' not found in 't'
        FROM events e JOIN threat_ips t ON e.destination.ip = t.addr
                                                              ^
    detections/bad_template/detection.yml:4:1: dedupe: `destination.address`: no field `address` there; fields: ip, port
    detections/bad_template/detection.yml:5:1: title: `src.ip`: the query's result has no column `src` (did you mean `source`?); columns: ts, event, source, destination, user, host, cloud, threat
    detections/no_row/detection.yml:3:9: query: the result must keep each event's `_row` column (select `e.*`, or `e._row` beside your columns), so every result row leads to its event
    6 errors found
    ");
    // `run` stops before reading any input and writes nothing.
    std::fs::remove_dir_all(p.path().join("detections/mixed")).unwrap();
    let logs = sql_logs();
    let run = p.run(&["run", "--input", &logs[0], "--output", "out/x"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("detections/bad_sql/detection.yml:5:57: query: column 'addr' not found"),
        "{}",
        run.stderr
    );
    assert!(!p.path().join("out/x").exists());
}

/// Alert fields that do not name the rule.
fn comparable(alert: &Value) -> Value {
    let mut a = alert.clone();
    let map = a.as_object_mut().unwrap();
    for field in [
        "id",
        "rule",
        "created_at",
        "runbook",
        "reference",
        "tags",
        "reports",
    ] {
        map.remove(field);
    }
    a
}

#[test]
fn sql_detection_alerts_equal_those_of_the_python_twin() {
    let p = Project::with("sql_vs_python");
    p.only_detections(&["threat_ip_traffic", "threat_py"]);
    let logs = ["sql/part1.jsonl", "sql/part2.jsonl", "threat_traffic.jsonl"];
    let r = p.detect(&logs, "x");
    assert_eq!(r.output.code, 0, "{:?}", r.output);
    let sql: Vec<Value> = r
        .alerts_of("threat_ip_traffic")
        .iter()
        .map(comparable)
        .collect();
    let python: Vec<Value> = r.alerts_of("threat_py").iter().map(comparable).collect();
    // 192.0.2.66 at 10:00 and 10:04, again at 11:01 (a new 30-minute
    // window), and 192.0.2.77.
    assert_eq!(sql.len(), 3, "{sql:#?}");
    assert_eq!(sql, python);
    assert_eq!(
        sql[0]["title"],
        "Connection to Cobalt Strike C2 at 192.0.2.66 from 10.20.2.7"
    );
    assert_eq!(sql[0]["match_count"], 2);
    assert_eq!(sql[0]["context"]["threat"], "Cobalt Strike C2");
    // The schema's GeoIP selectors reach SQL matches too.
    assert_eq!(
        sql[0]["context"]["enrichment"]["geoip"]["destination.ip"]["country"]["iso_code"],
        "DE"
    );

    let summary = r.summary();
    let rule = &summary["rules"]["threat_ip_traffic"];
    assert_eq!(rule["matches"], 4);
    assert_eq!(rule["python_calls"], 0);
    // Planned once, executed on each of the three files' batches.
    assert_eq!(rule["sql_plans"], 1);
    assert_eq!(rule["sql_batches"], 3);
}

#[test]
fn a_self_join_is_evaluated_per_batch() {
    let p = Project::with("sql_self_join");
    p.only_detections(&["paired_connections"]);
    let r = p.detect(&["sql/part1.jsonl", "sql/part2.jsonl"], "x");
    assert_eq!(r.output.code, 0, "{:?}", r.output);
    let matches = read_jsonl(&r.dir.join("matches.jsonl"));
    let pairs: Vec<(String, String)> = matches
        .iter()
        .map(|m| {
            (
                m["event"]["destination"]["ip"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["context"]["onward"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Batch 1 pairs 192.0.2.66 twice (two events lead to it, one leaves it);
    // batch 2 pairs 192.0.2.77 once. Nothing pairs across batches.
    assert_eq!(
        pairs,
        vec![
            ("192.0.2.66".to_string(), "10.20.3.3".to_string()),
            ("192.0.2.66".to_string(), "10.20.3.3".to_string()),
            ("192.0.2.77".to_string(), "10.30.0.10".to_string()),
        ]
    );
}

/// Replaces (or with `None` removes) the `filter:` line of `rule`.
fn set_filter(p: &Project, rule: &str, filter: Option<&str>) {
    let file = p.path().join("detections").join(rule).join("detection.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| match (l.starts_with("filter:"), filter) {
            (false, _) => Some(l.to_string()),
            (true, Some(f)) => Some(format!("filter: {f:?}")),
            (true, None) => None,
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
}

/// The example project with every `filter:` line removed.
fn without_filters(p: &Project) {
    for entry in std::fs::read_dir(p.path().join("detections")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("detection.yml").is_file() {
            set_filter(p, &path.file_name().unwrap().to_string_lossy(), None);
        }
    }
}

#[test]
fn prefilters_keep_the_alerts_and_call_python_less() {
    let samples = repo().join("samples").display().to_string();
    // Hand-written filters alone: derived ones would remove the same events.
    let filtered = Project::example();
    let with = filtered.run(&[
        "run",
        "--input",
        &samples,
        "--output",
        "out/x",
        "--no-auto-filter",
    ]);
    assert_eq!(with.code, 0, "{with:?}");
    let plain = Project::example();
    without_filters(&plain);
    let without = plain.run(&[
        "run",
        "--input",
        &samples,
        "--output",
        "out/x",
        "--no-auto-filter",
    ]);
    assert_eq!(without.code, 0, "{without:?}");

    let alerts = |p: &Project| -> Vec<Value> {
        read_jsonl(&p.path().join("out/x/alerts.jsonl"))
            .into_iter()
            .map(|mut a| {
                a.as_object_mut().unwrap().remove("created_at");
                a
            })
            .collect()
    };
    let (a, b) = (alerts(&filtered), alerts(&plain));
    assert!(a.len() > 50, "{}", a.len());
    assert_eq!(a, b);

    let summary = |p: &Project| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p.path().join("out/x/summary.json")).unwrap())
            .unwrap()
    };
    let (s_with, s_without) = (summary(&filtered), summary(&plain));
    let events = s_with["events"].as_u64().unwrap();
    for rule in [
        "failed_login_known_ip",
        "disable_ebs_encryption_production",
        "smb_lateral_movement",
    ] {
        let calls_with = s_with["rules"][rule]["python_calls"].as_u64().unwrap();
        let calls_without = s_without["rules"][rule]["python_calls"].as_u64().unwrap();
        let filtered_out = s_with["rules"][rule]["filtered_out"].as_u64().unwrap();
        // Without the filter detect() runs on every event; with it, only on
        // those that pass, so the difference is exactly the events removed.
        assert!(calls_without >= events, "{rule}: {calls_without}");
        assert_eq!(calls_without - calls_with, filtered_out, "{rule}");
        assert!(
            calls_with * 5 < calls_without,
            "{rule}: {calls_with} vs {calls_without}"
        );
    }
    assert!(s_without["rules"]["smb_lateral_movement"]
        .get("filtered_out")
        .is_none());
}

#[test]
fn a_filter_that_contradicts_a_test_case_is_reported() {
    let p = Project::example();
    set_filter(
        &p,
        "failed_login_known_ip",
        Some("event.outcome = 'success'"),
    );
    let out = p.run(&["test", "failed_login_known_ip", "-k", "VPN egress"]);
    assert_eq!(out.code, 1, "{out:?}");
    insta::assert_snapshot!(out.stdout, @r"
    failed_login_known_ip F

    FAILED failed_login_known_ip::failures from the VPN egress are low severity (detections/failed_login_known_ip/tests/cases.yml:22)
        match: expected true, got false
        filter `event.outcome = 'success'` rejects log[0], which detect() matches: a filter may only remove events that detect() rejects
        the case expects a match, but filter `event.outcome = 'success'` rejects every event of it
    0 passed, 1 failed
    ");
}

#[test]
fn a_filter_naming_an_unknown_field_fails_validation() {
    let p = Project::example();
    set_filter(&p, "smb_lateral_movement", Some("destination.prot = 445"));
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout.lines().next().unwrap(),
        "detections/smb_lateral_movement/detection.yml:4:10: filter: `destination.prot`: no field `prot` there (did you mean `port`?); fields: ip, port",
        "{}",
        out.stdout
    );
}

#[test]
fn joins_keep_the_enrichment_hash_table_unless_the_batch_is_the_build_side() {
    use ravenwatch::config::Project as Config;
    use ravenwatch::query::{RulePlan, RunPlan};
    let p = Project::with("sql_self_join");
    let project = Config::load(p.path()).unwrap();
    let storage = ravenwatch::storage::LocalStorage::new(p.path().join(".ravenwatch"));
    let (tables, errors) = ravenwatch::engine::prepare_tables(&project, &storage);
    assert!(errors.is_empty(), "{errors:?}");
    let log = project.log_table("events").unwrap();
    let plan = |rule: &str| {
        let def = project.detections.iter().find(|d| d.name == rule).unwrap();
        let plan = RunPlan::new(&[def], log, &tables, None).unwrap();
        match &plan.rules()[0].plan {
            RulePlan::Sql(rule) => rule.resets_each_batch(),
            RulePlan::Python { .. } => panic!("`{rule}` is a SQL rule"),
        }
    };
    // events ⋈ threat_ips: the 4-row table is the build side, built once.
    assert!(!plan("threat_ip_traffic"));
    // events ⋈ events: both sides are the batch, so the plan is reset per batch.
    assert!(plan("paired_connections"));
}

#[test]
fn query_takes_input_before_the_sql() {
    let p = Project::example();
    let logs = sql_logs();
    let sql = "SELECT count(*) AS n FROM events";
    // The order a new user writes: the flag first, then the statement.
    let before = p.run(&[
        "query", "--input", &logs[0], &logs[1], sql, "--format", "csv",
    ]);
    assert_eq!(before.code, 0, "{before:?}");
    let repeated = p.run(&[
        "query", "--input", &logs[0], "-i", &logs[1], sql, "--format", "csv",
    ]);
    assert_eq!(repeated.code, 0, "{repeated:?}");
    let after = p.run(&[
        "query", sql, "--input", &logs[0], &logs[1], "--format", "csv",
    ]);
    assert_eq!(after.code, 0, "{after:?}");
    assert_eq!(before.stdout, after.stdout);
    assert_eq!(repeated.stdout, after.stdout);
    assert!(before.stdout.starts_with("n\n"), "{}", before.stdout);
    // Only paths and no statement: said plainly, not parsed as SQL.
    let none = p.run(&["query", "--input", &logs[0]]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(
        none.stderr.contains("query needs one SQL statement"),
        "{}",
        none.stderr
    );
}

#[test]
fn query_finds_the_alerts_of_a_run_written_elsewhere() {
    let p = Project::example();
    let logs = sql_logs();
    let run = p.run(&[
        "run",
        "--input",
        &logs[0],
        "--input",
        &logs[1],
        "--output",
        "out/elsewhere",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(p.path().join("out/elsewhere/alerts.jsonl").is_file());
    let runs = p.run_ids();
    assert_eq!(runs.len(), 1, "the run is recorded in storage");
    let pointer: Value = serde_json::from_str(
        &std::fs::read_to_string(
            p.path()
                .join(".ravenwatch/runs")
                .join(&runs[0])
                .join("location.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        pointer["location"]
            .as_str()
            .unwrap()
            .ends_with("out/elsewhere"),
        "{pointer}"
    );
    let sql =
        "SELECT count(*) AS n, min(run_id) AS run FROM alerts WHERE rule = 'threat_ip_traffic'";
    let out = p.run(&["query", sql, "--format", "csv"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("n,run\n3,{}\n", runs[0]));
}

#[test]
fn query_counts_a_reused_output_folder_once_for_the_run_that_wrote_it_last() {
    let p = Project::example();
    let logs = sql_logs();
    for _ in 0..2 {
        let run = p.run(&[
            "run",
            "--input",
            &logs[0],
            "--input",
            &logs[1],
            "--output",
            "out/same",
            "--reprocess",
        ]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let runs = p.run_ids();
    assert_eq!(runs.len(), 2);
    // The folder holds the second run's alerts only; the first run's are gone.
    let written = crate::read_jsonl(&p.path().join("out/same/alerts.jsonl")).len();
    let sql = "SELECT count(*) AS n, min(run_id) AS first, max(run_id) AS last FROM alerts";
    let out = p.run(&["query", sql, "--format", "csv"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("n,first,last\n{written},{},{}\n", runs[1], runs[1])
    );
}

#[test]
fn query_input_shows_undeclared_fields_with_their_json_types() {
    // The schema declares only `ts`: like DuckDB's read_json_auto, the other
    // top-level fields are columns, typed by what they hold (`id` is text,
    // a mix of object and string is JSON text).
    let p = Project::with("json_types");
    let log = crate::repo()
        .join("tests/data/logs/json_types.jsonl")
        .display()
        .to_string();
    let sql = "SELECT id, kind, actor, arrow_typeof(id) AS t, arrow_typeof(big) AS b \
               FROM events WHERE kind = 'probe' ORDER BY id";
    let out = p.run(&["query", sql, "--input", &log, "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows:#}");
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[0]["t"], "Utf8");
    assert_eq!(rows[0]["actor"], "\"alice\"");
    assert_eq!(rows[1]["actor"], r#"{"name":"bob","id":7}"#);
    assert_eq!(rows[2]["actor"], serde_json::Value::Null);
    assert_eq!(rows[0]["b"], "Utf8");
}
