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
    p.only_detections(&["threat_ip_traffic"]);
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

    assert_eq!(upload("threat_ips", "threats-1.csv").code, 0);
    assert_eq!(upload("threat_ips", "threats-2.jsonl").code, 0);
    let uploads = std::fs::read_dir(p.path().join(".ravenwatch/uploads/threat_ips")).unwrap();
    assert_eq!(uploads.count(), 2);
    // `run` does not ingest uploads; `enrichment sync` does, both at once.
    let sync = p.run(&["enrichment", "sync", "threat_ips"]);
    assert!(
        sync.stdout
            .contains("threat_ips: ingested 2 upload(s), table has 4 rows"),
        "{sync:?}"
    );
    let get = p.run(&["enrichment", "get", "threat_ips", "198.51.100.66"]);
    assert!(get.stdout.contains("new intel: ransomware C2"), "{get:?}");
    let again = p.run(&["enrichment", "sync", "threat_ips"]);
    assert!(
        again.stdout.contains("threat_ips: unchanged (4 rows)"),
        "{again:?}"
    );

    let refused = p.run(&["enrichment", "upload", "known_ip_info", "x.csv"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("table `known_ip_info` is static"),
        "{refused:?}"
    );
}
