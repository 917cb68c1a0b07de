//! Automatic enrichment (`enrich:` selectors) and switching to a newer
//! snapshot in the middle of a run.

use crate::{read_jsonl, Project};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

fn alert<'a>(alerts: &'a [Value], dedupe: &str) -> &'a Value {
    alerts
        .iter()
        .find(|a| a["dedupe"] == dedupe)
        .unwrap_or_else(|| panic!("no alert {dedupe} in {alerts:#?}"))
}

#[test]
fn selectors_written_on_the_enrichment_table_work_as_on_the_log_table() {
    let p = Project::with("auto_enrich");
    p.overlay("enrich_on_table");
    p.only_detections(&["enrich_probe"]);
    let run = p.detect(&["auto_enrich.jsonl"], "auto");
    assert_eq!(run.output.code, 0, "{:?}", run.output);
    let alerts = read_jsonl(&run.dir.join("alerts.jsonl"));
    let e1 = &alert(&alerts, "e1")["context"];
    assert_eq!(
        e1["tables"],
        json!(["aws_ip_ranges", "axonius_assets", "geoip"])
    );
    assert_eq!(e1["aws_region"], "us-west-2");

    // A log table the enrichment table names but the project lacks.
    std::fs::write(
        p.path().join("enrichment/aws_ip_ranges/enrichment.yml"),
        std::fs::read_to_string(p.path().join("enrichment/aws_ip_ranges/enrichment.yml"))
            .unwrap()
            .replace("table: events", "table: event"),
    )
    .unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("enrich: no log table `event` in schemas/ (did you mean `events`?)"),
        "{out:?}"
    );
}

#[test]
fn selectors_enrich_events_for_python_and_alerts() {
    let p = Project::with("auto_enrich");
    p.only_detections(&["enrich_probe"]);
    let run = p.detect(&["auto_enrich.jsonl"], "auto");
    assert_eq!(run.output.code, 0, "{:?}", run.output);
    let alerts = read_jsonl(&run.dir.join("alerts.jsonl"));

    // The detection read r.enrichment without calling any table.
    let e1 = &alert(&alerts, "e1")["context"];
    assert_eq!(
        e1["tables"],
        json!(["aws_ip_ranges", "axonius_assets", "geoip"])
    );
    assert_eq!(e1["country"], "BR");
    assert_eq!(e1["host_owner"], "maria.garcia");
    // A list field: one row per matching element, in order; misses left out.
    assert_eq!(
        e1["related_hosts"],
        json!(["fin-laptop-042", "eng-laptop-019"])
    );
    // Rows come typed, as from table.get(): timestamps are datetimes.
    assert_eq!(e1["last_seen_type"], "datetime");
    assert_eq!(e1["aws_region"], "us-west-2");

    // The alert carries what the selectors found, without the detection asking.
    let enrichment = &e1["enrichment"];
    assert_eq!(
        enrichment["geoip"]["source.ip"]["country"]["iso_code"],
        "BR"
    );
    assert_eq!(
        enrichment["axonius_assets"]["host.hostname"]["hostname"],
        "fin-laptop-042"
    );
    assert_eq!(
        enrichment["axonius_assets"]["host.hostname"]["last_seen"],
        "2024-04-30T18:22:00Z"
    );
    let related = enrichment["axonius_assets"]["related.ip"]
        .as_array()
        .unwrap();
    assert_eq!(related.len(), 2);
    assert_eq!(
        enrichment["aws_ip_ranges"]["destination.ip"]["ip_prefix"],
        "52.94.76.0/22"
    );
    // source.ip is also looked up in aws_ip_ranges, and is in no range.
    assert!(enrichment["aws_ip_ranges"].get("source.ip").is_none());

    // Events that match nothing carry nothing.
    for quiet in ["e2", "e3"] {
        let context = &alert(&alerts, quiet)["context"];
        assert_eq!(context["tables"], json!([]), "{quiet}");
        assert!(context.get("enrichment").is_none(), "{quiet}: {context}");
    }

    // Every non-null value was looked up once per selector field:
    // e1: 1 geo + 1 host + 3 related + 2 aws; e2: 1 + 1 + 1 + 2; e3: none.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run.dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["enrichment_lookups"], 12);
    assert_eq!(summary["enrichment_hits"], 4);
}

#[test]
fn selectors_work_in_detection_tests() {
    // The example's GeoIP test cases check context.enrichment, so the
    // runner applies selectors (and fixtures) like `run` does.
    let p = Project::example();
    let out = p.run(&["test", "login_from_unexpected_country"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("4 passed, 0 failed"), "{out:?}");
}

#[test]
fn selector_mistakes_are_located() {
    let p = Project::example();
    let schema = p.path().join("schemas/events.yml");
    let mut text = std::fs::read_to_string(&schema).unwrap();
    text.push_str(
        "  - { table: geoipp, fields: [source.ip] }\n  - { table: known_ip_info, fields: [source.port] }\n  - { table: known_ip_info, fields: [user.name], key: nope }\n  - { table: aws_account_info, fields: [source.ip.octet] }\n  - { table: known_ip_info, fields: [source.nothing] }\n",
    );
    std::fs::write(&schema, text).unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    for expected in [
        "schemas/events.yml:38:14: enrich: no enrichment table `geoipp` (did you mean `geoip`?)",
        "schemas/events.yml:40:50: enrich: table `known_ip_info` has no lookup key `nope` (keys: ip)",
        "schemas/events.yml:41:41: enrich: field `source.ip.octet` goes through `source.ip`, which is declared as string",
    ] {
        assert!(out.stdout.contains(expected), "{expected}\n{out:?}");
    }
    // An int field is a valid selector field (keys compare as text), and
    // so is an undeclared one (decoded as a column of what it holds).
    assert!(!out.stdout.contains("source.port"), "{out:?}");
    assert!(!out.stdout.contains("source.nothing"), "{out:?}");
}

#[test]
fn a_snapshot_switched_mid_run_is_seen_from_the_next_batch_on() {
    let p = Project::with("refresh_probe");
    p.only_detections(&["refresh_probe", "refresh_probe_sql"]);
    let schema = p.path().join("schemas/events.yml");
    let mut text = std::fs::read_to_string(&schema).unwrap();
    text.push_str("  - { table: known_ip_info, fields: [source.ip] }\n");
    std::fs::write(&schema, text).unwrap();
    assert_eq!(p.run(&["enrichment", "sync"]).code, 0);

    let event = |id: &str| {
        format!(
            r#"{{"ts":"2024-05-01T10:00:00Z","event":{{"id":"{id}"}},"source":{{"ip":"203.0.113.10"}}}}"#
        )
    };
    std::fs::write(p.path().join("a.jsonl"), event("before") + "\n").unwrap();
    // The second input is a named pipe: the run reads `a.jsonl` (one batch),
    // then blocks on the pipe until this test writes the next batch.
    let fifo = p.path().join("b.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .current_dir(p.path())
        .args([
            "-p",
            ".",
            "run",
            "--input",
            "a.jsonl",
            "--input",
            "b.jsonl",
            "--refresh-seconds",
            "0",
            "--output",
            "out/refresh",
        ])
        .env_remove("VIRTUAL_ENV")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the pipe for writing returns once the run opened it for
    // reading, i.e. after the first batch was read and stamped.
    let (opened, wait) = std::sync::mpsc::channel();
    let fifo_path = fifo.clone();
    std::thread::spawn(move || {
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(fifo_path)
            .unwrap();
        let _ = opened.send(writer);
    });
    let mut writer = wait
        .recv_timeout(Duration::from_secs(120))
        .expect("the run never opened the named pipe");

    // Now publish a new snapshot of known_ip_info.
    let data = p.path().join("enrichment/known_ip_info/data.jsonl");
    let changed = std::fs::read_to_string(&data).unwrap().replace(
        "Corporate VPN egress (us-east)",
        "Decommissioned VPN egress",
    );
    std::fs::write(&data, changed).unwrap();
    let sync = p.run(&["enrichment", "sync", "known_ip_info"]);
    assert_eq!(sync.code, 0, "{sync:?}");

    writer
        .write_all((event("after") + "\n").as_bytes())
        .unwrap();
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let alerts = read_jsonl(&p.path().join("out/refresh/alerts.jsonl"));
    // Each batch saw one snapshot, through get() and the selector alike.
    // The inputs are framed ahead of the batch being prepared, so the pipe
    // may open before the first batch was stamped: that batch saw the old
    // snapshot or (rarely, on a busy machine) already the new one; the batch
    // read after the sync always sees the new one.
    let before = alert(&alerts, "before")["context"]["via_get"].clone();
    assert!(
        before == "Corporate VPN egress (us-east)" || before == "Decommissioned VPN egress",
        "{before}"
    );
    assert_eq!(alert(&alerts, "before")["context"]["via_enrich"], before);
    assert_eq!(
        alert(&alerts, "after")["context"]["via_get"],
        "Decommissioned VPN egress"
    );
    assert_eq!(
        alert(&alerts, "after")["context"]["via_enrich"],
        "Decommissioned VPN egress"
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/refresh/summary.json")).unwrap(),
    )
    .unwrap();
    let refreshes = summary["table_refreshes"].as_array().unwrap();
    assert_eq!(refreshes.len(), 1, "{summary}");
    assert_eq!(refreshes[0]["table"], "known_ip_info");
    assert_eq!(refreshes[0]["generation"], 1);

    // The SQL detection was planned again for the new generation and joined
    // each batch with the same snapshot as the Python rule.
    let matches = read_jsonl(&p.path().join("out/refresh/matches.jsonl"));
    let via_sql: Vec<(&str, &str)> = matches
        .iter()
        .filter(|m| m["rule"] == "refresh_probe_sql")
        .map(|m| {
            (
                m["event"]["event"]["id"].as_str().unwrap(),
                m["context"]["via_sql"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        via_sql,
        vec![
            ("before", before.as_str().unwrap()),
            ("after", "Decommissioned VPN egress")
        ]
    );
    assert_eq!(summary["rules"]["refresh_probe_sql"]["sql_plans"], 2);
}

#[test]
fn polling_without_a_new_snapshot_reloads_nothing() {
    // The tables a run synced itself at its start are the current ones:
    // polling before every batch must not reload them.
    let p = Project::with("refresh_probe");
    p.only_detections(&["refresh_probe"]);
    std::fs::write(
        p.path().join("a.jsonl"),
        r#"{"ts":"2024-05-01T10:00:00Z","event":{"id":"x"},"source":{"ip":"203.0.113.10"}}"#,
    )
    .unwrap();
    let out = p.run(&[
        "run",
        "--input",
        "a.jsonl",
        "--refresh-seconds",
        "0",
        "--output",
        "out/plain",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/plain/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["table_refreshes"], json!([]));
    assert_eq!(summary["events"], 1);
}
