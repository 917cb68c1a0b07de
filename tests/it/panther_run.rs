//! `ravenwatch run` with Panther rules: a Panther directory runs over a
//! CloudTrail `Records` file as its own unit tests say it should, and
//! Panther's alert semantics (Threshold, dedup, DEFAULT severity,
//! CreateAlert, Enabled, InlineFilters, caching helpers kept across runs)
//! map onto Ravenwatch alerts.

use super::panther::venv;
use super::{repo, Output};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn run(dir: &Path, input: &Path, storage: &Path, output: &Path, venv: &str) -> Output {
    run_as(dir, "AWS.CloudTrail", input, (storage, output), &[], venv)
}

fn run_as(
    dir: &Path,
    log_type: &str,
    input: &Path,
    (storage, output): (&Path, &Path),
    args: &[&str],
    venv: &str,
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .arg("-p")
        .arg(dir)
        .args(["run", "--log-type", log_type, "--input"])
        .arg(input)
        .arg("--storage")
        .arg(storage)
        .arg("--output")
        .arg(output)
        .args(args)
        .env("VIRTUAL_ENV", venv)
        .output()
        .expect("run ravenwatch")
        .into()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// (rule, position of the event in the input) of every match.
fn matched(output: &Path) -> BTreeSet<(String, u64)> {
    lines(&output.join("matches.jsonl"))
        .iter()
        .map(|m| {
            let source = m["source"].as_str().expect("source");
            let position = source
                .rsplit(['#', ':'])
                .next()
                .expect("#")
                .parse()
                .expect("n");
            (m["rule"].as_str().expect("rule").to_string(), position)
        })
        .collect()
}

/// Panther's rules over their own test events, one file per log type:
/// each rule matches the events its tests expect it to (a disabled rule
/// none), and derived filters drop no event a rule would match or raise on
/// (`--verify-filters` sends every dropped event to the rule anyway).
#[test]
fn panther_rules_match_the_events_their_tests_expect() {
    let Some(venv) = venv() else { return };
    let data = repo().join("tests/data/panther");
    let expected: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(data.join("run/expected.json")).expect("expected.json"),
    )
    .expect("JSON");
    let mut matching = 0;
    for (file, log_type) in [
        ("cloudtrail.json", "AWS.CloudTrail"),
        ("okta.jsonl", "Okta.SystemLog"),
        ("github.jsonl", "GitHub.Audit"),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = run_as(
            &data.join("corpus-dev"),
            log_type,
            &data.join("run").join(file),
            (&tmp.path().join("storage"), &tmp.path().join("out")),
            &["--verify-filters"],
            &venv,
        );
        // Exit 3: some rules raise on other rules' test events (reported).
        assert!(out.code == 0 || out.code == 3, "{file}: {}", out.stderr);
        let errors = lines(&tmp.path().join("out/errors.jsonl"));
        let unsound: Vec<&Value> = errors
            .iter()
            .filter(|e| e.to_string().contains("filter derived from"))
            .collect();
        assert!(unsound.is_empty(), "{file}: {unsound:#?}");
        let got = matched(&tmp.path().join("out"));
        let mut wrong = Vec::new();
        for (i, case) in expected[file].as_array().expect("cases").iter().enumerate() {
            let rule = case["rule"].as_str().expect("rule");
            // A disabled rule does not run; the others match as their test says.
            let want = case["match"] == true && case["enabled"] != false;
            matching += usize::from(want);
            if got.contains(&(rule.to_string(), i as u64 + 1)) != want {
                wrong.push(format!(
                    "#{} {rule} / {}: expected {want}",
                    i + 1,
                    case["test"]
                ));
            }
        }
        assert_eq!(wrong, Vec::<String>::new(), "{file}: {}", out.stdout);
    }
    assert!(matching > 180, "the fixture holds the matching cases");
}

#[test]
fn panther_alert_semantics_and_caching_state_across_runs() {
    let Some(venv) = venv() else { return };
    let dir = repo().join("tests/data/panther/run-rules");
    let tmp = tempfile::tempdir().expect("tempdir");
    let storage = tmp.path().join("storage");
    let day1 = run(
        &dir,
        &dir.join("day1.json"),
        &storage,
        &tmp.path().join("o1"),
        &venv,
    );
    assert_eq!(day1.code, 0, "{}{}", day1.stdout, day1.stderr);
    assert!(
        day1.stdout.contains("8 events, 6 rules"),
        "Test.Disabled does not run: {}",
        day1.stdout
    );
    let alerts1 = lines(&tmp.path().join("o1/alerts.jsonl"));
    let by_rule = |alerts: &[Value], rule: &str| -> Vec<Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == rule)
            .cloned()
            .collect()
    };
    // Two failures of alice, one of bob: no login after failures yet.
    assert!(by_rule(&alerts1, "Test.LoginAfterFailures").is_empty());
    // InlineFilters drop the health.amazonaws.com denial; Threshold 2 not reached.
    let denied = by_rule(&alerts1, "Test.DeniedCalls");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["match_count"], 1);
    assert_eq!(denied[0]["activated"], false);
    // CreateAlert: false records the signal, never activates it.
    let signal = by_rule(&alerts1, "Test.ListBuckets");
    assert_eq!(
        (signal.len(), &signal[0]["activated"]),
        (1, &Value::Bool(false))
    );
    // No dedup() and no title(): Panther's default dedup string; p_* fields set.
    let fields = by_rule(&alerts1, "Test.PantherFields");
    assert_eq!(fields[0]["dedupe"], "defaultDedupString:Test.PantherFields");
    let context = &fields[0]["context"];
    assert_eq!(context["log_type"], "AWS.CloudTrail");
    assert_eq!(context["event_time"], "2026-11-30 10:06:00.000000000");
    assert_eq!(context["ips"], serde_json::json!(["203.0.113.7"]));
    assert_eq!(context["accounts"], serde_json::json!(["123456789012"]));
    assert_eq!(
        context["arns"],
        serde_json::json!(["arn:aws:iam::123456789012:user/alice"])
    );
    // Lookup tables: a `p_any_*` selector over a CIDR table gives a list of
    // rows with `p_match`, keyed by the LookupName.
    assert_eq!(
        context["office"],
        serde_json::json!([{"cidr": "203.0.113.0/24", "site": "office", "vpn": false, "p_match": "203.0.113.7"}])
    );
    let scanner = by_rule(&alerts1, "Test.ScannerActivity");
    assert_eq!(scanner.len(), 1, "{alerts1:?}");
    assert_eq!(
        scanner[0]["title"],
        "API call from known scanner Example Scanning Co"
    );
    assert_eq!(scanner[0]["context"]["match"], "198.51.100.9");
    assert!(
        day1.stderr.contains(
            "refreshed lookup table not read yet, so empty: tor_exit_nodes (s3://example-bucket/tor_exit_nodes.csv)"
        ),
        "{}",
        day1.stderr
    );

    let day2 = run(
        &dir,
        &dir.join("day2.json"),
        &storage,
        &tmp.path().join("o2"),
        &venv,
    );
    assert_eq!(day2.code, 0, "{}{}", day2.stdout, day2.stderr);
    let alerts2 = lines(&tmp.path().join("o2/alerts.jsonl"));
    // alice's counter kept day 1's two failures: the third, then a success.
    let login = by_rule(&alerts2, "Test.LoginAfterFailures");
    assert_eq!(login.len(), 1, "{alerts2:?}");
    assert_eq!(login[0]["title"], "alice logged in after repeated failures");
    assert_eq!(login[0]["severity"], "high", "DEFAULT is the YAML Severity");
    assert_eq!(login[0]["activated"], true);
    // The second denial (its key spelled `ErrorCode`: Panther's keys match
    // in any case, and so does the derived filter) joins day 1's window:
    // Threshold 2 reached.
    let denied = by_rule(&alerts2, "Test.DeniedCalls");
    assert_eq!(
        (denied[0]["match_count"].as_u64(), &denied[0]["activated"]),
        (Some(2), &Value::Bool(true))
    );
    let signal = by_rule(&alerts2, "Test.ListBuckets");
    assert_eq!(
        (signal[0]["match_count"].as_u64(), &signal[0]["activated"]),
        (Some(2), &Value::Bool(false))
    );

    // unique(): Threshold 7 counts distinct eventNames (6 so far), not the
    // 11 calls of alice.
    let spread = by_rule(&alerts2, "Test.ApiSpread");
    assert_eq!(spread[0]["match_count"], 11);
    assert_eq!(spread[0]["activated"], false);
    assert_eq!(spread[0]["unique_values"].as_array().map(Vec::len), Some(6));

    // The store is committed with the state: one file, named by it.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(storage.join("state/alerts.json")).expect("state"),
    )
    .expect("JSON");
    let kv = state["kv"].as_str().expect("the state names the store");
    let stores: Vec<_> = std::fs::read_dir(storage.join("state/kv"))
        .expect("state/kv")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stores.len(), 1, "the previous store is removed: {stores:?}");
    assert!(kv.ends_with(&stores[0]));

    // The same input again: skipped, and the counters stay as they were.
    let again = run(
        &dir,
        &dir.join("day2.json"),
        &storage,
        &tmp.path().join("o3"),
        &venv,
    );
    assert!(
        again.stdout.contains("1 input already processed"),
        "{}",
        again.stdout
    );
    assert!(matched(&tmp.path().join("o3")).is_empty());
}

#[test]
fn a_panther_directory_needs_the_log_type() {
    let dir = repo().join("tests/data/panther/run-rules");
    let out: Output = Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .arg("-p")
        .arg(&dir)
        .args(["run", "--input"])
        .arg(dir.join("day1.json"))
        .output()
        .expect("run ravenwatch")
        .into();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("name the inputs' log type with --log-type"),
        "{}",
        out.stderr
    );
    let unknown: Output = Command::new(env!("CARGO_BIN_EXE_ravenwatch"))
        .arg("-p")
        .arg(&dir)
        .args(["run", "--log-type", "AWS.CloudTrial", "--input"])
        .arg(dir.join("day1.json"))
        .output()
        .expect("run ravenwatch")
        .into();
    assert!(
        unknown.stderr.contains("did you mean `AWS.CloudTrail`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn panther_rules_run_beside_native_detections_in_a_project() {
    let Some(venv) = venv() else { return };
    let p = crate::Project::with("panther_mixed");
    let rules = repo().join("tests/data/panther/run-rules");
    super::copy_dir(
        &rules.join("rules"),
        &p.path().join("detections/panther/rules"),
    );
    super::copy_dir(
        &rules.join("lookups"),
        &p.path().join("detections/panther/lookups"),
    );
    let input = rules.join("day1.json").display().to_string();
    let out = p.run_env(
        &[
            "run",
            "--log-type",
            "AWS.CloudTrail",
            "--input",
            &input,
            "--output",
            "out",
        ],
        &[("VIRTUAL_ENV", venv.as_str())],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let got = matched(&p.path().join("out"));
    let rules_matched: BTreeSet<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        rules_matched,
        BTreeSet::from([
            "Test.ApiSpread",
            "Test.DeniedCalls",
            "Test.ListBuckets",
            "Test.PantherFields",
            "Test.ScannerActivity",
            "cloudtrail_list_buckets",
        ])
    );
    // The native rules of the example's `events` table do not run on it,
    // and `validate` checks both kinds.
    let validate = p.run_env(&["validate"], &[("VIRTUAL_ENV", venv.as_str())]);
    assert_eq!(validate.code, 0, "{validate:?}");
}

/// A Panther directory with a lookup table refreshed from a test bucket.
struct Refreshed {
    tmp: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    venv: String,
}

impl Refreshed {
    fn new(s3: &super::s3::S3, bucket: &str, venv: String) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("panther");
        super::copy_dir(&repo().join("tests/data/panther/refresh"), &dir);
        let yml = dir.join("lookups/tor_exit_nodes.yml");
        let text = std::fs::read_to_string(&yml).expect("yml");
        std::fs::write(&yml, text.replace("BUCKET", bucket)).expect("write yml");
        let mut env = s3.env();
        env.push(("AWS_ENDPOINT_URL", s3.endpoint.clone()));
        Self { tmp, env, venv }
    }

    fn ravenwatch(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ravenwatch"));
        cmd.arg("-p")
            .arg(self.tmp.path().join("panther"))
            .arg("--storage")
            .arg(self.tmp.path().join("storage"))
            .args(["--log-type", "AWS.CloudTrail"])
            .args(args)
            .env("VIRTUAL_ENV", &self.venv);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run ravenwatch").into()
    }

    /// A run over a day of run-rules' events (again, if already run: the
    /// ledger would skip it), and its alerts.
    fn run_day(&self, day: &str, out: &str) -> (Output, Vec<Value>) {
        let input = repo().join("tests/data/panther/run-rules").join(day);
        let output = self.tmp.path().join(out);
        let run = self.ravenwatch(&[
            "run",
            "--input",
            input.to_str().expect("utf-8"),
            "--output",
            output.to_str().expect("utf-8"),
            "--reprocess",
        ]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        (run, lines(&output.join("alerts.jsonl")))
    }

    fn sync(&self) -> Output {
        self.ravenwatch(&["enrichment", "sync"])
    }
}

/// A lookup table refreshed from S3 (`Refresh.ObjectPath`, schema managed
/// by Panther so not in the repository): empty, with a note, until
/// `enrichment sync` reads the object; its columns are inferred (ints stay
/// ints); a new ETag is read again, the same one is not; a bad object
/// fails the sync naming it and keeps the previous snapshot.
#[test]
fn lookup_tables_refreshed_from_s3_are_read_by_enrichment_sync() {
    let Some(venv) = venv() else { return };
    let Some(s3) = super::s3::s3() else { return };
    let bucket = s3.bucket();
    let fixture = Refreshed::new(&s3, &bucket, venv);
    let object = format!("s3://{bucket}/feeds/tor_exit_nodes.jsonl");
    let put = |body: &[u8]| s3.put(&bucket, "feeds/tor_exit_nodes.jsonl", body);

    // Not read yet: the run says so, and nothing matches.
    let (before, alerts) = fixture.run_day("day1.json", "o0");
    assert!(
        before.stderr.contains(&format!(
            "1 refreshed lookup table not read yet, so empty: tor_exit_nodes ({object})"
        )),
        "{}",
        before.stderr
    );
    assert!(alerts.is_empty());

    put(b"{\"ip\": \"198.51.100.9\", \"nickname\": \"relay1\", \"first_seen\": 1700000000, \"guard\": true}\n");
    let first = fixture.sync();
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first
            .stdout
            .contains(&format!("tor_exit_nodes: read {object}, table has 1 row")),
        "{}",
        first.stdout
    );
    let (day1, alerts) = fixture.run_day("day1.json", "o1");
    assert!(!day1.stderr.contains("not read yet"), "{}", day1.stderr);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0]["title"],
        "API call from tor exit node 198.51.100.9"
    );
    assert_eq!(
        alerts[0]["context"]["node"],
        serde_json::json!({"ip": "198.51.100.9", "nickname": "relay1", "first_seen": 1_700_000_000, "guard": true, "p_match": "198.51.100.9"})
    );

    // Unchanged object: not read again. A new one (new ETag): read.
    let same = fixture.sync();
    assert!(
        same.stdout.contains("tor_exit_nodes: unchanged (1 row)"),
        "{}",
        same.stdout
    );
    put(b"{\"ip\": \"198.51.100.9\", \"nickname\": \"relay1\"}\n{\"ip\": \"203.0.113.7\", \"nickname\": \"relay2\"}\n");
    let second = fixture.sync();
    assert!(
        second.stdout.contains("table has 2 rows"),
        "{}",
        second.stdout
    );
    let (_, alerts) = fixture.run_day("day2.json", "o2");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["match_count"], 5);
    assert_eq!(alerts[0]["context"]["node"]["nickname"], "relay2");

    // An object without the PrimaryKey column: the sync fails naming it,
    // and the table keeps its previous snapshot.
    put(b"{\"address\": \"192.0.2.1\"}\n");
    let bad = fixture.sync();
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    assert!(
        bad.stderr.contains(&format!(
            "{object}: PrimaryKey `ip` is not a column of the object"
        )),
        "{}",
        bad.stderr
    );
    let get = fixture.ravenwatch(&["enrichment", "get", "tor_exit_nodes", "203.0.113.7"]);
    assert!(
        get.stdout.contains("relay2"),
        "{}{}",
        get.stdout,
        get.stderr
    );
}
