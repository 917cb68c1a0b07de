use crate::Project;

#[test]
fn sync_writes_snapshot_then_skips_unchanged_files() {
    let p = Project::example();
    let first = p.run(&["enrichment", "sync"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stdout.contains("axonius_assets: loaded 8 rows"),
        "{}",
        first.stdout
    );
    let second = p.run(&["enrichment", "sync"]);
    assert!(
        second.stdout.contains("axonius_assets: unchanged (8 rows)"),
        "{}",
        second.stdout
    );
    // Touching a file without changing it does not reload; changing it does.
    let data = p.path().join("enrichment/known_ip_info/data.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, &text).unwrap();
    assert!(p
        .run(&["enrichment", "sync"])
        .stdout
        .contains("known_ip_info: unchanged"));
    std::fs::write(
        &data,
        format!("{text}{{\"ip\": \"192.0.2.99\", \"description\": \"new\"}}\n"),
    )
    .unwrap();
    let third = p.run(&["enrichment", "sync"]);
    assert!(
        third.stdout.contains("known_ip_info: loaded 8 rows"),
        "{}",
        third.stdout
    );
    let snapshots = std::fs::read_dir(
        p.path()
            .join(".ravenwatch/enrichment/known_ip_info/snapshots"),
    )
    .unwrap()
    .count();
    assert_eq!(snapshots, 2, "snapshots are immutable; a reload adds one");
}

#[test]
fn get_by_secondary_key_and_list() {
    let p = Project::example();
    let out = p.run(&[
        "enrichment",
        "get",
        "axonius_assets",
        "172.16.4.19",
        "--key",
        "network_interfaces_ips",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("\"hostname\": \"eng-laptop-019\""),
        "{}",
        out.stdout
    );
    let missing = p.run(&["enrichment", "get", "known_ip_info", "10.9.9.9"]);
    assert_eq!(missing.code, 1);
    let list = p.run(&["enrichment", "list"]);
    assert!(list.stdout.contains("axonius_assets"), "{}", list.stdout);
    assert!(
        list.stdout.contains("hostname,network_interfaces_ips"),
        "{}",
        list.stdout
    );
}

#[test]
fn dynamic_tables_work_on_local_storage() {
    let p = Project::with("s3_project");
    p.only_detections(&["intel_ip_traffic"]);
    let upload = |table: &str, file: &str| {
        let path = crate::repo().join("tests/data/uploads").join(file);
        p.run(&["enrichment", "upload", table, &path.display().to_string()])
    };
    // Before any upload the table is empty, and a run still works.
    let logs = crate::repo().join("tests/data/logs/threat_traffic.jsonl");
    let empty = p.run(&[
        "run",
        "--input",
        &logs.display().to_string(),
        "--output",
        "out/empty",
    ]);
    assert_eq!(empty.code, 0, "{empty:?}");
    assert!(crate::read_jsonl(&p.path().join("out/empty/alerts.jsonl")).is_empty());

    assert_eq!(upload("intel_ips", "threats-1.csv").code, 0);
    assert_eq!(upload("intel_ips", "threats-2.jsonl").code, 0);
    let uploads = std::fs::read_dir(p.path().join(".ravenwatch/uploads/intel_ips")).unwrap();
    assert_eq!(uploads.count(), 2);
    // `run` does not ingest uploads; `enrichment sync` does, both at once.
    let sync = p.run(&["enrichment", "sync", "intel_ips"]);
    assert!(
        sync.stdout
            .contains("intel_ips: ingested 2 uploads, table has 4 rows"),
        "{sync:?}"
    );
    let get = p.run(&["enrichment", "get", "intel_ips", "198.51.100.66"]);
    assert!(get.stdout.contains("new intel: ransomware C2"), "{get:?}");
    let again = p.run(&["enrichment", "sync", "intel_ips"]);
    assert!(
        again.stdout.contains("intel_ips: unchanged (4 rows)"),
        "{again:?}"
    );

    let refused = p.run(&["enrichment", "upload", "known_ip_info", "x.csv"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("table `known_ip_info` is static"),
        "{refused:?}"
    );
}

#[test]
fn cidr_case_insensitive_composite_and_typed_keys_from_python() {
    let p = Project::with("key_kinds");
    p.only_detections(&["key_kinds_demo"]);
    let out = p.run(&["test"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.ends_with("3 passed, 0 failed\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn cidr_composite_and_select_from_the_cli() {
    let p = Project::with("key_kinds");
    let get = |args: &[&str]| {
        let mut all = vec!["enrichment", "get"];
        all.extend_from_slice(args);
        p.run(&all)
    };
    let out = get(&["networks", "10.20.1.1", "--all", "--select", "name"]);
    assert_eq!(out.code, 0, "{out:?}");
    let names: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out.stdout)
        .into_iter::<serde_json::Value>()
        .map(|v| v.unwrap()["name"].clone())
        .collect();
    assert_eq!(names, ["office-lan", "corp"]);
    let out = get(&[
        "account_regions",
        "111122223333",
        "us-east-1",
        "--key",
        "account_region",
    ]);
    assert!(out.stdout.contains("vpc-a"), "{out:?}");
    assert_eq!(get(&["networks", "172.16.0.1"]).code, 1);
    assert!(get(&["hosts", "Host-2.Corp"]).stdout.contains("bob"));
}

#[test]
fn invalid_cidr_is_a_load_error_with_row_and_column() {
    let p = Project::with("key_kinds");
    std::fs::write(
        p.path().join("enrichment/networks/data.csv"),
        "network,name,zone\n10.0.0.0/8,corp,internal\n10.0.0.300/8,typo,internal\n",
    )
    .unwrap();
    let out = p.run(&["enrichment", "sync", "networks"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "enrichment/networks/data.csv:3: column `network`: \"10.0.0.300/8\" is not a CIDR range or IP address"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn feed_formats_load_as_published() {
    let p = Project::with("axonius_export");
    let sync = p.run(&["enrichment", "sync"]);
    assert_eq!(sync.code, 0, "{sync:?}");
    let get = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["enrichment", "get"];
        all.extend_from_slice(args);
        let out = p.run(&all);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        serde_json::Deserializer::from_str(&out.stdout)
            .into_iter::<serde_json::Value>()
            .map(Result::unwrap)
            .collect()
    };
    // CISA KEV: rows under `vulnerabilities`; case-insensitive CVE ids.
    let kev = get(&["cisa_kev", "cve-2021-44228"]);
    assert_eq!(kev[0]["product"], "Log4j2");
    assert_eq!(
        kev[0]["cwes"],
        serde_json::json!(["CWE-20", "CWE-400", "CWE-502"])
    );
    assert_eq!(kev[0]["dueDate"], "2021-12-24");
    // AWS ip-ranges.json: IPv4 and IPv6 arrays, renamed onto one CIDR key.
    let aws = get(&[
        "aws_ip_ranges",
        "18.210.4.4",
        "--all",
        "--select",
        "service",
    ]);
    assert_eq!(
        aws,
        [
            serde_json::json!({"service": "AMAZON"}),
            serde_json::json!({"service": "EC2"})
        ]
    );
    let v6 = get(&["aws_ip_ranges", "2600:1f18::5"]);
    assert_eq!(v6[0]["service"], "EC2");
    assert_eq!(v6[0]["ip_prefix"], "2600:1f18::/33");
    // abuse.ch URLhaus: commented header, columns named in the YAML.
    let url = get(&["urlhaus", "http://198.51.100.23:45870/Mozi.m"]);
    assert_eq!(url[0]["id"], 2849101);
    assert_eq!(url[0]["tags"], serde_json::json!(["elf", "Mozi"]));
    assert_eq!(url[0]["dateadded"], "2024-05-10T11:58:05Z");
    // Axonius export columns renamed onto schema names.
    let asset = get(&[
        "axonius_export",
        "10.20.9.15",
        "--key",
        "network_interfaces_ips",
    ]);
    assert_eq!(asset[0]["hostname"], "fin-laptop-042");
    assert_eq!(asset[0]["os"], "macOS 14.4");
}

#[test]
fn a_missing_records_path_names_the_path() {
    let p = Project::example();
    let yml = p.path().join("enrichment/cisa_kev/enrichment.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(
        &yml,
        text.replace("records: vulnerabilities", "records: vulns"),
    )
    .unwrap();
    let out = p.run(&["enrichment", "sync", "cisa_kev"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("enrichment/cisa_kev/data.json: source.records: the document has no `vulns`"),
        "{}",
        out.stderr
    );
}
