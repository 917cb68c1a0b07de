//! S3 storage, dynamic tables and S3 logs against a real SeaweedFS server.
//!
//! `scripts/test.sh` starts the server on 127.0.0.1 and exports its
//! endpoint as `RAVENWATCH_TEST_S3_ENDPOINT`. Without it these tests fail
//! when `CI` is set, and are skipped (with a message) otherwise. Each test
//! uses its own bucket. The tests themselves talk to the server with plain
//! HTTP (SeaweedFS without IAM accepts unsigned requests); Ravenwatch goes
//! through the AWS SDK with signed requests.

use crate::{repo, Output, Project};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct S3 {
    host: String,
    pub endpoint: String,
}

/// The test server, or `None` (skip) outside CI when there is none.
pub fn s3() -> Option<S3> {
    match std::env::var("RAVENWATCH_TEST_S3_ENDPOINT") {
        Ok(endpoint) => Some(S3 {
            host: endpoint.trim_start_matches("http://").to_string(),
            endpoint,
        }),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "RAVENWATCH_TEST_S3_ENDPOINT is not set: the S3 tests need the SeaweedFS server that scripts/test.sh starts"
        ),
        Err(_) => {
            eprintln!("skipped: no S3 server (run scripts/test.sh, or set RAVENWATCH_TEST_S3_ENDPOINT)");
            None
        }
    }
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..end])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

static BUCKETS: AtomicUsize = AtomicUsize::new(0);

impl S3 {
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(&self.host).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = &raw[split + 4..];
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_vec()
        };
        Response { status, body }
    }

    /// A new, empty bucket for one test.
    pub fn bucket(&self) -> String {
        let name = format!(
            "rw-{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        let r = self.request("PUT", &format!("/{name}"), b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        name
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let r = self.request("PUT", &format!("/{bucket}/{key}"), body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self.request("GET", &format!("/{bucket}/{key}"), b"");
        (r.status == 200).then_some(r.body)
    }

    /// Every key under `prefix` (follows continuation tokens).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if !token.is_empty() {
                path.push_str(&format!(
                    "&continuation-token={}",
                    token
                        .replace('=', "%3D")
                        .replace('+', "%2B")
                        .replace('/', "%2F")
                ));
            }
            let body = String::from_utf8(self.request("GET", &path, b"").body).unwrap();
            keys.extend(tags(&body, "Key"));
            match tags(&body, "NextContinuationToken").pop() {
                Some(next) if body.contains("<IsTruncated>true</IsTruncated>") => token = next,
                _ => return keys,
            }
        }
    }

    /// Environment for `ravenwatch`: the test server's credentials, and
    /// nothing that could reach a real AWS endpoint.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "ravenwatch-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "ravenwatch-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/nonexistent/ravenwatch-test".into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/ravenwatch-test".into(),
            ),
        ]
    }
}

fn tags(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| {
            rest.split_once(&close)
                .map(|(v, _)| v.replace("&amp;", "&"))
        })
        .collect()
}

/// A project whose storage is `s3://<bucket>/store` on the test server.
fn s3_project(s3: &S3, bucket: &str, overlay: &str, keep: &[&str]) -> Project {
    let p = Project::with(overlay);
    p.only_detections(keep);
    write_settings(&p, &format!("s3://{bucket}/store"), &s3.endpoint, 4);
    p
}

fn write_settings(p: &Project, storage: &str, endpoint: &str, attempts: u32) {
    std::fs::write(
        p.path().join("ravenwatch.yml"),
        format!(
            "name: s3-test\nstorage: {storage}\naws: {{ endpoint: \"{endpoint}\", force_path_style: true, max_attempts: {attempts} }}\n"
        ),
    )
    .unwrap();
}

fn run(p: &Project, s3: &S3, args: &[&str]) -> Output {
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.run_env(args, &env)
}

/// `ravenwatch enrichment upload TABLE tests/data/uploads/FILE`.
fn upload(p: &Project, s3: &S3, table: &str, file: &str) -> Output {
    run(p, s3, &["enrichment", "upload", table, &upload_file(file)])
}

fn upload_file(name: &str) -> String {
    repo()
        .join("tests/data/uploads")
        .join(name)
        .display()
        .to_string()
}

fn jsonl(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn upload_sync_run_with_append_and_overwrite_tables() {
    let Some(s3) = s3() else { return };
    let bucket = s3.bucket();
    let p = s3_project(&s3, &bucket, "s3_project", &["intel_ip_traffic"]);
    append_uploads_keep_every_row(&p, &s3);
    an_overwriting_upload_replaces_the_table(&p, &s3);
    logs_and_alerts_in_s3(&p, &s3, &bucket);
    query_over_s3_logs_and_snapshots(&p, &s3, &bucket);
}

/// Uploads to an append table add rows (the newest answers `get`), and a
/// second sync ingests nothing twice.
fn append_uploads_keep_every_row(p: &Project, s3: &S3) {
    let up = upload(p, s3, "intel_ips", "threats-1.csv");
    assert_eq!(up.code, 0, "{up:?}");
    let sync = run(p, s3, &["enrichment", "sync"]);
    assert_eq!(sync.code, 0, "{sync:?}");
    assert!(
        sync.stdout
            .contains("intel_ips: ingested 1 upload, table has 2 rows"),
        "{}",
        sync.stdout
    );

    // Append: a second upload with a duplicate key; the newest row wins.
    for (table, file) in [
        ("intel_ips", "threats-2.jsonl"),
        ("allowlisted_hosts", "allow-1.csv"),
    ] {
        let up = upload(p, s3, table, file);
        assert_eq!(up.code, 0, "{up:?}");
    }
    let sync = run(p, s3, &["enrichment", "sync"]);
    assert_eq!(sync.code, 0, "{sync:?}");
    assert!(
        sync.stdout
            .contains("intel_ips: ingested 1 upload, table has 4 rows"),
        "{}",
        sync.stdout
    );
    assert!(
        sync.stdout
            .contains("allowlisted_hosts: ingested 1 upload, table has 1 row"),
        "{}",
        sync.stdout
    );
    let get = run(p, s3, &["enrichment", "get", "intel_ips", "198.51.100.66"]);
    assert!(get.stdout.contains("new intel: ransomware C2"), "{get:?}");
    let all = run(
        p,
        s3,
        &["enrichment", "get", "intel_ips", "198.51.100.66", "--all"],
    );
    assert!(
        all.stdout.contains("old intel: scanner"),
        "both rows are kept: {all:?}"
    );

    // Syncing again ingests nothing twice.
    let again = run(p, s3, &["enrichment", "sync"]);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("intel_ips: unchanged (4 rows)"),
        "{}",
        again.stdout
    );
    assert!(
        again
            .stdout
            .contains("allowlisted_hosts: unchanged (1 row)"),
        "{}",
        again.stdout
    );
}

fn an_overwriting_upload_replaces_the_table(p: &Project, s3: &S3) {
    let up = upload(p, s3, "allowlisted_hosts", "allow-2.csv");
    assert_eq!(up.code, 0, "{up:?}");
    let sync = run(p, s3, &["enrichment", "sync", "allowlisted_hosts"]);
    assert!(
        sync.stdout
            .contains("allowlisted_hosts: ingested 1 upload, table has 1 row"),
        "{}",
        sync.stdout
    );
    assert_eq!(
        run(
            p,
            s3,
            &["enrichment", "get", "allowlisted_hosts", "sandbox-01"]
        )
        .code,
        1
    );
    assert_eq!(
        run(
            p,
            s3,
            &["enrichment", "get", "allowlisted_hosts", "sandbox-02"]
        )
        .code,
        0
    );
}

/// Logs read from S3, alerts written to S3 (and found by `query` through
/// the run's location in storage).
fn logs_and_alerts_in_s3(p: &Project, s3: &S3, bucket: &str) {
    let logs = std::fs::read(repo().join("tests/data/logs/threat_traffic.jsonl")).unwrap();
    s3.put(bucket, "logs/2024/05/10/threat_traffic.jsonl", &logs);
    let out = run(
        p,
        s3,
        &[
            "run",
            "--input",
            &format!("s3://{bucket}/logs"),
            "--output",
            &format!("s3://{bucket}/alerts-out"),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let alerts = jsonl(&s3.get(bucket, "alerts-out/alerts.jsonl").unwrap());
    let titles: Vec<&str> = alerts
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Traffic to 198.51.100.66: new intel: ransomware C2",
            // sandbox-01 left the allowlist with the overwriting upload.
            "Traffic to 203.0.113.99: botnet C2",
        ]
    );
    let matches = jsonl(&s3.get(bucket, "alerts-out/matches.jsonl").unwrap());
    assert_eq!(
        matches[0]["source"],
        format!("s3://{bucket}/logs/2024/05/10/threat_traffic.jsonl#1")
    );
    assert!(s3.get(bucket, "alerts-out/summary.json").is_some());
    assert!(s3.get(bucket, "alerts-out/alerts.parquet").is_some());
    let found = run(
        p,
        s3,
        &[
            "query",
            "SELECT count(*) AS n FROM alerts",
            "--format",
            "csv",
        ],
    );
    assert_eq!(found.code, 0, "{found:?}");
    assert_eq!(found.stdout, "n\n2\n", "alerts written to S3 are queryable");
}

/// SQL over the same S3 logs and the dynamic table's S3 snapshot.
fn query_over_s3_logs_and_snapshots(p: &Project, s3: &S3, bucket: &str) {
    let out = run(
        p,
        s3,
        &[
            "query",
            "SELECT e.destination.ip AS ip, t.description, e._source AS source \
             FROM events e JOIN intel_ips t ON e.destination.ip = t.ip ORDER BY ip, description",
            "--input",
            &format!("s3://{bucket}/logs"),
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    // SQL sees every row of an append table: 198.51.100.66's older row too
    // (get() answers with the newest).
    let object = format!("s3://{bucket}/logs/2024/05/10/threat_traffic.jsonl");
    assert_eq!(
        out.stdout,
        format!(
            "ip,description,source\n\
             192.0.2.250,phishing kit host,{object}#3\n\
             198.51.100.66,new intel: ransomware C2,{object}#1\n\
             198.51.100.66,old intel: scanner,{object}#1\n\
             203.0.113.99,botnet C2,{object}#2\n"
        )
    );
    let state = s3
        .get(bucket, "store/state/alerts.json")
        .expect("state in S3");
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(
        s3.keys(bucket, "store/enrichment/intel_ips/snapshots/")
            .len(),
        2
    );
    ledger_skips_known_objects(p, s3, bucket);
}

/// The ledger knows an object by URL and ETag: a second run over a prefix
/// skips what the first read and reads only what is new.
fn ledger_skips_known_objects(p: &Project, s3: &S3, bucket: &str) {
    let logs = std::fs::read(repo().join("tests/data/logs/threat_traffic.jsonl")).unwrap();
    s3.put(bucket, "ledger/a.jsonl", &logs);
    let prefix = format!("s3://{bucket}/ledger");
    let first = run(p, s3, &["run", "--input", &prefix, "--output", "ledger-1"]);
    assert_eq!(first.code, 0, "{first:?}");
    s3.put(bucket, "ledger/b.jsonl", &logs);
    let again = run(p, s3, &["run", "--input", &prefix, "--output", "ledger-2"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stdout
            .starts_with("1 input already processed, skipped; --reprocess to run it again\n"),
        "{}",
        again.stdout
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join("ledger-2/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["inputs_skipped"], 1);
    let lines = logs
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(summary["events"], lines);
    // Named exactly (as a notification names it: one HEAD, no listing),
    // the object is the same input with the same ETag.
    let object = format!("s3://{bucket}/ledger/b.jsonl");
    let exact = run(p, s3, &["run", "--input", &object, "--output", "ledger-3"]);
    assert!(
        exact.stdout.starts_with("1 input already processed"),
        "{exact:?}"
    );
}

#[test]
fn a_bad_upload_is_refused_or_keeps_the_previous_snapshot() {
    let Some(s3) = s3() else { return };
    let bucket = s3.bucket();
    let p = s3_project(&s3, &bucket, "s3_project", &["intel_ip_traffic"]);

    let refused = upload(&p, &s3, "intel_ips", "threats-bad.csv");
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("threats-bad.csv:3: column `first_seen`"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("nothing uploaded"));
    assert!(s3.keys(&bucket, "store/uploads/").is_empty());

    assert_eq!(upload(&p, &s3, "intel_ips", "threats-1.csv").code, 0);
    assert_eq!(run(&p, &s3, &["enrichment", "sync"]).code, 0);

    // A bad file put straight into the bucket (as `aws s3 cp` would).
    let bad = std::fs::read(upload_file("threats-bad.csv")).unwrap();
    s3.put(&bucket, "store/uploads/intel_ips/zz-threats-bad.csv", &bad);
    assert_eq!(upload(&p, &s3, "allowlisted_hosts", "allow-1.csv").code, 0);
    let sync = run(&p, &s3, &["enrichment", "sync"]);
    assert_eq!(sync.code, 1, "{sync:?}");
    assert!(
        sync.stderr.contains(&format!(
            "s3://{bucket}/store/uploads/intel_ips/zz-threats-bad.csv:3: column `first_seen`"
        )),
        "{}",
        sync.stderr
    );
    assert!(
        sync.stdout.contains("allowlisted_hosts: ingested 1 upload"),
        "{}",
        sync.stdout
    );
    // The previous snapshot still answers.
    let get = run(&p, &s3, &["enrichment", "get", "intel_ips", "203.0.113.99"]);
    assert_eq!(get.code, 0, "{get:?}");
    // Nothing was recorded: the next sync tries the bad upload again.
    assert_eq!(run(&p, &s3, &["enrichment", "sync"]).code, 1);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn logs_from_1200_objects_and_cloudtrail_records_alert_as_locally() {
    let Some(s3) = s3() else { return };
    let bucket = s3.bucket();
    let p = Project::example();
    p.only_detections(&["failed_login_known_ip", "disable_ebs_encryption_production"]);
    write_settings(&p, ".ravenwatch", &s3.endpoint, 4);
    let local = p.path().join("local-logs");
    std::fs::create_dir_all(&local).unwrap();
    for i in 0..1200u32 {
        let line = format!(
            "{{\"ts\": \"2024-05-01T10:{:02}:{:02}Z\", \"event\": {{\"category\": [\"authentication\"], \"outcome\": \"failure\"}}, \"source\": {{\"ip\": \"198.51.100.{}\"}}, \"user\": {{\"name\": \"u{i}\"}}}}\n",
            i / 60 % 60,
            i % 60,
            i % 7
        );
        let name = format!("auth/{i:05}.jsonl.gz");
        let body = gzip(line.as_bytes());
        s3.put(&bucket, &format!("logs/{name}"), &body);
        std::fs::create_dir_all(local.join("auth")).unwrap();
        std::fs::write(local.join(&name), &body).unwrap();
    }
    let records = br#"{"Records": [
        {"ts": "2024-05-01T11:00:00Z", "event": {"action": "DisableEbsEncryptionByDefault"}, "cloud": {"account": {"id": "111122223333"}, "region": "us-east-1"}},
        {"ts": "2024-05-01T11:00:05Z", "event": {"action": "DescribeInstances"}, "cloud": {"account": {"id": "111122223333"}}}
    ]}"#;
    let name = "cloudtrail/111122223333_CloudTrail_us-east-1_20240501T1100Z.json.gz";
    s3.put(&bucket, &format!("logs/{name}"), &gzip(records));
    std::fs::create_dir_all(local.join("cloudtrail")).unwrap();
    std::fs::write(local.join(name), gzip(records)).unwrap();
    assert_eq!(
        s3.keys(&bucket, "logs/").len(),
        1201,
        "listing follows continuation tokens"
    );

    let from_s3 = run(
        &p,
        &s3,
        &[
            "--storage",
            "store-s3",
            "run",
            "--input",
            &format!("s3://{bucket}/logs"),
            "--output",
            "out/s3",
        ],
    );
    assert_eq!(from_s3.code, 0, "{from_s3:?}");
    let from_disk = run(
        &p,
        &s3,
        &[
            "--storage",
            "store-local",
            "run",
            "--input",
            "local-logs",
            "--output",
            "out/local",
        ],
    );
    assert_eq!(from_disk.code, 0, "{from_disk:?}");

    let key = |a: &serde_json::Value| {
        (
            a["id"].clone(),
            a["title"].clone(),
            a["match_count"].clone(),
            a["activated"].clone(),
        )
    };
    let s3_alerts: Vec<_> = crate::read_jsonl(&p.path().join("out/s3/alerts.jsonl"))
        .iter()
        .map(key)
        .collect();
    let disk_alerts: Vec<_> = crate::read_jsonl(&p.path().join("out/local/alerts.jsonl"))
        .iter()
        .map(key)
        .collect();
    assert!(!s3_alerts.is_empty());
    assert_eq!(s3_alerts, disk_alerts);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/s3/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["events"], 1202);
    let matches = crate::read_jsonl(&p.path().join("out/s3/matches.jsonl"));
    let ebs = matches
        .iter()
        .find(|m| m["rule"] == "disable_ebs_encryption_production")
        .unwrap();
    assert_eq!(ebs["source"], format!("s3://{bucket}/logs/{name}#1"));
}

#[test]
fn unreachable_endpoint_and_missing_bucket_fail_cleanly() {
    let Some(s3) = s3() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Project::example();
    write_settings(
        &p,
        "s3://ravenwatch-state/store",
        &format!("http://127.0.0.1:{port}"),
        2,
    );
    let logs = repo()
        .join("tests/data/logs/four_failures.jsonl")
        .display()
        .to_string();
    let out = run(&p, &s3, &["run", "--input", &logs, "--output", "out/run"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot reach the S3 endpoint http://127.0.0.1:{port}"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("s3://ravenwatch-state/store"),
        "{}",
        out.stderr
    );
    assert!(!p.path().join("out").exists(), "nothing written");

    write_settings(&p, "s3://no-such-bucket-ravenwatch/store", &s3.endpoint, 2);
    let out = run(&p, &s3, &["enrichment", "sync"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("NoSuchBucket"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("bucket `no-such-bucket-ravenwatch` does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_racing_writer_of_the_alert_state_is_refused() {
    let Some(s3) = s3() else { return };
    let bucket = s3.bucket();
    let p = s3_project(
        &s3,
        &bucket,
        "s3_race",
        &["race_state", "failed_login_known_ip"],
    );
    let logs = repo()
        .join("tests/data/logs/four_failures.jsonl")
        .display()
        .to_string();
    let first = run(&p, &s3, &["run", "--input", &logs]);
    assert_eq!(first.code, 0, "{first:?}");
    let committed = s3.get(&bucket, "store/state/alerts.json").unwrap();

    let url = format!("{}/{bucket}/store/state/alerts.json", s3.endpoint);
    let mut env = s3.env();
    env.push(("RACE_STATE_URL", url));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let raced = p.run_env(&["run", "--input", &logs, "--reprocess"], &env);
    assert_eq!(raced.code, 1, "{raced:?}");
    assert!(
        raced.stderr.contains("changed by another run"),
        "{}",
        raced.stderr
    );
    let state = String::from_utf8(s3.get(&bucket, "store/state/alerts.json").unwrap()).unwrap();
    assert!(
        state.contains("the other run"),
        "the other writer's state is kept: {state}"
    );
    assert_ne!(state.as_bytes(), committed.as_slice());
    // The refused run's outputs were removed; only the first run's remain.
    let summaries: Vec<String> = s3
        .keys(&bucket, "store/runs/")
        .into_iter()
        .filter(|k| k.ends_with("summary.json"))
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
}

#[test]
fn large_uploads_use_multipart_and_stream_back() {
    let Some(s3) = s3() else { return };
    let bucket = s3.bucket();
    let p = s3_project(&s3, &bucket, "s3_project", &["intel_ip_traffic"]);
    let file = p.path().join("allow-large.csv");
    let mut csv = String::from("hostname,reason\n");
    let mut i = 0;
    while csv.len() < 17 * 1024 * 1024 {
        csv.push_str(&format!(
            "host-{i:08}.corp.example,bulk allowlist entry number {i}\n"
        ));
        i += 1;
    }
    std::fs::write(&file, &csv).unwrap();
    let up = run(
        &p,
        &s3,
        &[
            "enrichment",
            "upload",
            "allowlisted_hosts",
            &file.display().to_string(),
        ],
    );
    assert_eq!(up.code, 0, "{up:?}");
    let keys = s3.keys(&bucket, "store/uploads/allowlisted_hosts/");
    assert_eq!(keys.len(), 1);
    assert_eq!(s3.get(&bucket, &keys[0]).unwrap().len(), csv.len());
    let sync = run(&p, &s3, &["enrichment", "sync", "allowlisted_hosts"]);
    assert!(
        sync.stdout.contains(&format!(
            "table has {} rows",
            ravenwatch::text::thousands(i as u64)
        )),
        "{sync:?}"
    );
    let last = format!("host-{:08}.corp.example", i - 1);
    assert_eq!(
        run(&p, &s3, &["enrichment", "get", "allowlisted_hosts", &last]).code,
        0
    );
}

/// `run --follow` over an S3 prefix of CloudTrail-like folders lists each
/// account's dated folders from its own cursor: a new object of the first
/// account (sorting before the last account's keys) is seen, a new
/// account is found by the next walk, and a poll lists only what is past
/// the cursors.
#[test]
fn follow_over_s3_lists_each_account_from_its_own_cursor() {
    let Some(s3) = s3() else { return };
    let bucket = s3.bucket();
    let p = Project::example();
    write_settings(&p, ".ravenwatch", &s3.endpoint, 4);
    let logs = std::fs::read(repo().join("tests/data/logs/four_failures.jsonl")).unwrap();
    let key = |account: &str, day: &str, n: u32| {
        format!("AWSLogs/{account}/CloudTrail/us-east-1/2026/12/{day}/{account}_CloudTrail_us-east-1_202612{day}T{n:04}Z.jsonl")
    };
    let (a, b, c) = ("111111111111", "222222222222", "333333333333");
    for k in [key(a, "01", 1), key(a, "01", 2), key(b, "01", 1)] {
        s3.put(&bucket, &k, &logs);
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ravenwatch"));
    cmd.current_dir(p.path())
        .args(["-p", ".", "run", "--input"])
        .arg(format!("s3://{bucket}/AWSLogs"))
        .args(["--follow", "--poll-seconds", "1", "--lookback-seconds", "0"])
        .args(["--discover-seconds", "1", "--no-deliver"])
        .env_remove("VIRTUAL_ENV")
        .envs(s3.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let state = |name: &str| -> serde_json::Value {
        std::fs::read(p.path().join(".ravenwatch/state").join(name))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default()
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !done() {
            assert!(
                std::time::Instant::now() < until,
                "the follower never {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let storage = p.path().join(".ravenwatch");
    let processed = |n: usize| {
        let storage = storage.clone();
        move || crate::ledger_locations(&storage).len() >= n
    };
    wait_until("processed the first 3 objects", &processed(3));
    s3.put(&bucket, &key(a, "02", 1), &logs);
    wait_until("processed account a's new object", &processed(4));
    s3.put(&bucket, &key(c, "02", 1), &logs);
    wait_until("found the new account", &processed(5));
    let partition = |account: &str| format!("s3://{bucket}/AWSLogs/{account}/CloudTrail/us-east-1");
    wait_until("moved every cursor", &|| {
        state("follow-cursors.json")
            .as_object()
            .is_some_and(|m| m.len() == 3)
    });
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}");

    let cursors = state("follow-cursors.json");
    assert_eq!(cursors[partition(a)], key(a, "02", 1), "{cursors}");
    assert_eq!(cursors[partition(b)], key(b, "01", 1), "{cursors}");
    assert_eq!(cursors[partition(c)], key(c, "02", 1), "{cursors}");
    // The round that read account c's object listed at most that object
    // and account a's newest (not yet passed), never all five.
    let last = &state("follow.json")["last_listing"];
    assert_eq!(last["s3_partitions"], 3, "{last}");
    assert!(last["s3_objects"].as_u64().unwrap() <= 2, "{last}");
    // Each object's events counted once.
    let matches = p.stored_matches();
    let once = crate::read_jsonl(&repo().join("tests/data/logs/four_failures.jsonl")).len();
    assert_eq!(matches, 5 * once, "{stdout}");
}
