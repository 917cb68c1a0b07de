use crate::Project;

#[test]
fn unknown_yaml_field_names_nearest_and_position() {
    let p = Project::with("bad_unknown_field");
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stdout, @r"
    detections/failed_login_known_ip/detection.yml:5:3: alert: unknown field `treshold`, expected one of `severity`, `threshold`, `deduplication_window_minutes`, `destinations` (did you mean `threshold`?)
    1 error found
    ");
}

#[test]
fn csv_boolean_maybe_is_rejected_with_file_line_column() {
    let p = Project::with("bad_csv_bool");
    let out = p.run(&["enrichment", "sync", "aws_account_info"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stderr, @r#"
    aws_account_info: FAILED, previous snapshot kept
    table `aws_account_info`: 1 bad row
      enrichment/aws_account_info/data.csv:3: column `is_production`: "maybe" is not a valid boolean (expected true/false, yes/no or 1/0)
    "#);
}

#[test]
fn bad_reload_keeps_previous_snapshot() {
    let p = Project::example();
    assert_eq!(p.run(&["enrichment", "sync"]).code, 0);
    let before = std::fs::read_to_string(
        p.path()
            .join(".ravenwatch/enrichment/aws_account_info/current.json"),
    )
    .unwrap();
    crate::copy_dir(&crate::repo().join("tests/data/bad_csv_bool"), p.path());
    assert_eq!(p.run(&["enrichment", "sync"]).code, 1);
    let after = std::fs::read_to_string(
        p.path()
            .join(".ravenwatch/enrichment/aws_account_info/current.json"),
    )
    .unwrap();
    assert_eq!(before, after);
    // Lookups still answer from the previous snapshot.
    let get = p.run(&["enrichment", "get", "aws_account_info", "222233334444"]);
    assert!(get.stdout.contains("\"is_production\": true"), "{get:?}");
}

#[test]
fn syntax_error_fails_validate_and_aborts_run_before_input() {
    let p = Project::with("bad_syntax");
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stdout, @r"
    detections/syntax_error/detect.py:5: SyntaxError: expected ':'
    1 error found
    ");
    // A missing input is a usage error, found before the detections load.
    let run = p.run(&["run", "--input", "does-not-matter.jsonl"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = p.run(&[
        "run",
        "--input",
        &crate::repo()
            .join("tests/data/logs/four_failures.jsonl")
            .display()
            .to_string(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("detections/syntax_error/detect.py:5: SyntaxError"),
        "{}",
        run.stderr
    );
    assert!(
        !p.path().join(".ravenwatch/runs").exists(),
        "nothing is written"
    );
}

#[test]
fn importing_undefined_table_names_known_tables() {
    let p = Project::with("bad_import");
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stdout, @r"
    detections/imports_missing_table/detect.py:1: imports enrichment table `threat_intel_ips`, which is not defined (did you mean `threat_ips`?); known tables: aws_account_info, aws_ip_ranges, axonius_assets, cisa_kev, geoip, known_ip_info, threat_ips, urlhaus
    1 error found
    ");
    // At run time the import itself fails with the same facts.
    let run = p.detect(&["four_failures.jsonl"], "import");
    assert_eq!(run.output.code, 1);
    assert!(
        run.output.stderr.contains("detections/imports_missing_table/detect.py:1: ImportError: enrichment table 'threat_intel_ips' is not defined; known tables: aws_account_info, aws_ip_ranges, axonius_assets, cisa_kev, geoip, known_ip_info, threat_ips, urlhaus"),
        "{}",
        run.output.stderr
    );
}

#[test]
fn raising_detection_is_isolated() {
    let p = Project::with("raising");
    let r = p.detect(&["failed_logins.jsonl"], "raise");
    assert_eq!(r.output.code, 3, "{:?}", r.output);
    // The other rule still alerts on both events.
    assert_eq!(r.alerts_of("failed_login_known_ip").len(), 2);
    // The raising rule matched the event it could handle, with the YAML severity as fallback.
    let mine = r.alerts_of("raises_sometimes");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["severity"], "low");
    let errors = r.errors();
    let detect_error = errors.iter().find(|e| e["function"] == "detect").unwrap();
    assert_eq!(detect_error["rule"], "raises_sometimes");
    assert!(detect_error["source"]
        .as_str()
        .unwrap()
        .ends_with("failed_logins.jsonl:1"));
    assert_eq!(
        detect_error["error"],
        "ValueError: cannot handle the VPN address"
    );
    let tb = detect_error["traceback"].as_str().unwrap();
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(
        tb.contains("detections/raises_sometimes/detect.py\", line 3, in detect"),
        "{tb}"
    );
    let severity_error = errors.iter().find(|e| e["function"] == "severity").unwrap();
    insta::assert_snapshot!(severity_error["traceback"].as_str().unwrap(), @r#"severity() returned "catastrophic"; expected one of info, notice, low, medium, high, critical"#);
    assert_eq!(r.summary()["errors"], 2);
}

#[test]
fn bad_lookup_key_specs_are_named() {
    let p = Project::with("key_kinds");
    std::fs::write(
        p.path().join("enrichment/ports/enrichment.yml"),
        "name: ports\nschema:\n  fields:\n    - { name: port, type: int }\n    - { name: service, type: string }\nlookup_keys:\n  - { name: port, match: cidr }\n  - { name: svc, columns: [service, protocol] }\n",
    )
    .unwrap();
    std::fs::write(
        p.path().join("enrichment/hosts/enrichment.yml"),
        "name: hosts\nschema:\n  fields:\n    - { name: hostname, type: string }\nlookup_keys:\n  - { name: hostname, case_sensitiv: false }\n",
    )
    .unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(out.stdout, @r"
    enrichment/hosts/enrichment.yml:6:23: lookup_keys[0]: unknown field `case_sensitiv`, expected one of `name`, `match`, `case_sensitive`, `column`, `columns` (did you mean `case_sensitive`?)
    enrichment/ports/enrichment.yml:7:7: lookup key `port`: `match: cidr` needs one string column (or list of strings) of CIDRs or IPs
    enrichment/ports/enrichment.yml:8:7: lookup key `svc`: column `protocol` is not a field of the schema
    3 errors found
    ");
}
