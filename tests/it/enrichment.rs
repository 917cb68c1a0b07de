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
