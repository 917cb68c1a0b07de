//! `ravenwatch worker --queue` against a real MiniStack (S3 notifications
//! into SQS, a dead-letter queue) that `scripts/test.sh` starts on
//! 127.0.0.1 and exports as `RAVENWATCH_TEST_SQS_ENDPOINT`. Without it the
//! test fails when `CI` is set and is skipped otherwise. The test arranges
//! buckets and queues with boto3 from the test venv
//! (`tests/data/queue/aws.py`).

use crate::{read_jsonl, repo, Output, Project};
use std::io::Read;
use std::path::Path;

fn endpoint() -> Option<String> {
    match std::env::var("RAVENWATCH_TEST_SQS_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("RAVENWATCH_TEST_SQS_ENDPOINT is not set: the queue test needs the MiniStack server that scripts/test.sh starts")
        }
        Err(_) => {
            eprintln!(
                "skipped: no MiniStack (run scripts/test.sh, or set RAVENWATCH_TEST_SQS_ENDPOINT)"
            );
            None
        }
    }
}

fn aws(endpoint: &str, args: &[&str]) -> String {
    let python = std::env::var("RAVENWATCH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/data/queue/aws.py"))
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run aws.py");
    assert!(
        out.status.success(),
        "aws.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The rows of `file` (`matches.jsonl`, `alerts.jsonl`) of every run in
/// the project's storage, oldest run first.
fn run_rows(project: &Project, file: &str) -> Vec<serde_json::Value> {
    let runs = project.path().join(".ravenwatch/runs");
    project
        .run_ids()
        .iter()
        // A run that was not committed is no run (`query` hides it too).
        .filter(|id| !runs.join(id).join("incomplete").exists())
        .flat_map(|id| read_jsonl(&runs.join(id).join(file)))
        .collect()
}

/// (`field`, the object and line it came from) of every match recorded.
fn match_places(project: &Project, field: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = run_rows(project, "matches.jsonl")
        .iter()
        .map(|m| {
            let source = m["source"].as_str().unwrap_or_default();
            // The object's place, whichever URL form reached it.
            let place = source.rsplit_once('/').map_or(source, |(_, tail)| tail);
            (
                m[field].as_str().unwrap_or_default().to_string(),
                place.to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// (rule, source) of every match of every run in the project's storage.
fn matched(project: &Project) -> Vec<(String, String)> {
    match_places(project, "rule")
}

fn sample_parts(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(repo().join("samples/events.jsonl.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(1000)
        .enumerate()
        .map(|(i, chunk)| {
            let path = dir.join(format!("part{i}.jsonl"));
            std::fs::write(&path, chunk.join("\n") + "\n").unwrap();
            path
        })
        .collect()
}

/// A bucket notifying a queue (with a dead-letter queue) on MiniStack.
struct Setup {
    endpoint: String,
    name: String,
    queue: String,
}

impl Setup {
    fn env(&self) -> [(&str, &str); 4] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    fn worker(&self, project: &Project) -> Output {
        let out = self.worker_env(project, &[]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out
    }

    fn worker_env(&self, project: &Project, extra: &[(&str, &str)]) -> Output {
        let args = [
            "worker",
            "--queue",
            &self.queue,
            "--until-empty",
            "--workers",
            "1",
            "--no-deliver",
            "--visibility-seconds",
            "3",
            "--settle-seconds",
            "2",
        ];
        let env: Vec<(&str, &str)> = self
            .env()
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        project.run_env(&args, &env)
    }

    /// A queue whose dead-letter queue takes a message after `receives`.
    fn new(endpoint: String, tag: &str, receives: u32) -> Self {
        let name = format!("rw-{tag}-{}", std::process::id());
        let queue = aws(&endpoint, &["setup", &name, &receives.to_string()]);
        Self {
            endpoint,
            name,
            queue,
        }
    }

    fn upload_sample(&self, keys: &[&str]) {
        let tmp = tempfile::tempdir().unwrap();
        for (key, path) in keys.iter().zip(sample_parts(tmp.path())) {
            aws(
                &self.endpoint,
                &["upload", &self.name, key, path.to_str().unwrap()],
            );
        }
    }

    fn run(&self, project: &Project) -> Output {
        let input = format!("s3://{}/events/", self.name);
        let args = ["run", "--input", &input, "--workers", "1", "--no-deliver"];
        project.run_env(&args, &self.env())
    }

    /// The matches of one `run` over `input` (a prefix or an object of the
    /// bucket) in a fresh copy of the example project.
    fn reference(&self, input: &str) -> Vec<(String, String)> {
        let reference = Project::example();
        let input = format!("s3://{}/{input}", self.name);
        let args = ["run", "--input", &input, "--workers", "1", "--no-deliver"];
        let one = reference.run_env(&args, &self.env());
        assert_eq!(one.code, 0, "{}{}", one.stdout, one.stderr);
        matched(&reference)
    }

    fn send(&self, body: &str) {
        aws(&self.endpoint, &["send", &self.queue, body]);
    }
}

#[test]
fn a_queue_worker_processes_each_notified_object_once() {
    let Some(endpoint) = endpoint() else { return };
    let setup = Setup::new(endpoint, "queue", 1);
    // One key with a space: notifications URL-encode it.
    setup.upload_sample(&[
        "events/part 0.jsonl",
        "events/part1.jsonl",
        "events/part2.jsonl",
    ]);
    let project = Project::example();
    let first = setup.worker(&project);
    assert!(
        first.stderr.contains("stopped: 3 objects, 3,000 events"),
        "{}",
        first.stderr
    );
    // What it cost, as AWS bills it: each object read once, messages
    // received and deleted in batches.
    let requests = first
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("requests sent: "))
        .unwrap_or_else(|| panic!("no request counts: {}", first.stderr));
    let sent = |op: &str| -> u64 {
        requests
            .split(&[',', '('][..])
            .find_map(|part| part.trim().strip_prefix(op)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(sent("GetObject "), 3, "{requests}");
    assert!(sent("ReceiveMessage ") >= 1, "{requests}");
    assert!(sent("DeleteMessageBatch ") >= 1, "{requests}");

    // The same objects in one `run`: the same matches.
    let expected = setup.reference("events/");
    assert!(
        expected.len() > 50,
        "the sample matches: {}",
        expected.len()
    );
    assert_eq!(matched(&project), expected);

    // Redelivered notifications (direct and wrapped in SNS), S3's test
    // event, and a message that is no notification.
    let record = serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": setup.name}, "object": {"key": "events/part+0.jsonl", "eTag": "x"}}}]})
    .to_string();
    setup.send(&record);
    setup.send(&serde_json::json!({"Type": "Notification", "Message": record}).to_string());
    setup.send(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"x"}"#);
    setup.send("not a notification");
    let again = setup.worker(&project);
    assert!(
        again.stdout.contains("0 objects, 0 events")
            && again.stdout.contains("1 object already processed"),
        "{}",
        again.stdout
    );
    assert!(
        again
            .stderr
            .contains("is left to the queue's redrive policy: the message is not JSON"),
        "{}",
        again.stderr
    );
    assert_eq!(matched(&project), expected, "nothing counted twice");

    // After its visibility timeout the bad message is handed out again; past
    // the redrive count (1) SQS moves it to the dead-letter queue.
    std::thread::sleep(std::time::Duration::from_secs(4));
    setup.worker(&project);
    assert_eq!(
        aws(&setup.endpoint, &["dead", &setup.name]),
        r#"["not a notification"]"#
    );

    // A `run` over the same prefix on the worker's storage reads nothing.
    let rerun = setup.run(&project);
    assert!(
        rerun.stdout.contains("0 events"),
        "{}{}",
        rerun.stdout,
        rerun.stderr
    );
}

#[test]
fn a_worker_killed_before_its_commit_loses_nothing_and_counts_nothing_twice() {
    let Some(endpoint) = endpoint() else { return };
    let setup = Setup::new(endpoint, "crash", 5);
    setup.upload_sample(&["events/a.jsonl", "events/b.jsonl"]);
    let project = Project::example();
    // Killed (as kill -9 would) after reading everything, with one of the
    // round's shard batches written and the rest (its ledger last) not:
    // the messages were not deleted, the inputs not claimed.
    let killed = setup.worker_env(&project, &[("RAVENWATCH_CRASH_AT", "between-batches")]);
    assert_ne!(killed.code, 0, "{}{}", killed.stdout, killed.stderr);
    assert!(
        !project.path().join(".ravenwatch/runs").exists(),
        "nothing was merged"
    );
    let batches = project.path().join(".ravenwatch/groups");
    assert!(batches.is_dir(), "one batch was left behind");
    // They come back after their visibility timeout; a new worker runs them.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let again = setup.worker(&project);
    assert!(
        again.stderr.contains("stopped: 2 objects, 2,000 events"),
        "{}",
        again.stderr
    );
    // The batch left behind was merged with the new round's: its matches
    // are recognised as the same objects', not counted again.
    let expected = setup.reference("events/");
    assert!(!expected.is_empty());
    assert_eq!(matched(&project), expected);
}

#[test]
fn the_lambda_runtime_answers_failed_messages_as_batch_item_failures() {
    use crate::http::{Reply, Server};
    let Some(endpoint) = endpoint() else { return };
    let setup = Setup::new(endpoint, "lambda", 5);
    setup.upload_sample(&["events/a.jsonl"]);
    let record = |id: &str, body: &str| {
        serde_json::json!({"messageId": id, "receiptHandle": format!("r-{id}"), "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"})
    };
    let notice =
        serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": setup.name}, "object": {"key": "events/a.jsonl"}}}]})
        .to_string();
    let event = serde_json::json!({"Records": [
        record("m-object", &notice),
        record("m-test", r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"x"}"#),
        record("m-bad", "not a notification"),
    ]});
    // The Lambda runtime API: one invocation, then an error (the runtime
    // exits, as it would be restarted on AWS).
    let mut handed_out = false;
    let api = Server::start(move |request| {
        if request.path.ends_with("/invocation/next") {
            if handed_out {
                return Reply::text(500, "no more");
            }
            handed_out = true;
            return Reply::json(200, event.clone())
                .with_header("Lambda-Runtime-Aws-Request-Id", "req-1");
        }
        Reply::text(202, "")
    });
    let project = Project::example();
    let address = api.url.trim_start_matches("http://").to_string();
    let mut env: Vec<(&str, &str)> = setup.env().to_vec();
    env.push(("AWS_LAMBDA_RUNTIME_API", &address));
    let out = project.run_env(&["lambda", "--workers", "1"], &env);
    assert!(
        out.stderr.contains("did not hand out the next invocation"),
        "{out:?}"
    );
    let answers = api.requests_to("POST", "/2018-06-01/runtime/invocation/req-1/response");
    assert_eq!(answers.len(), 1, "{:?}", api.requests());
    assert_eq!(
        answers[0].json(),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]})
    );
    let expected = setup.reference("events/a.jsonl");
    assert_eq!(matched(&project), expected);
    assert!(!expected.is_empty());
}

/// With a group queue (`group_queue:` in ravenwatch.yml), a Lambda
/// invocation of input records leaves the
/// round's batches for the shards and triggers them in the FIFO queue;
/// invocations from that queue (a second event source mapping) merge the
/// shards they name: the alerts of one run.
#[test]
fn the_lambda_runtime_groups_through_the_fifo_queue_it_is_mapped_to() {
    use crate::http::{Reply, Server};
    let Some(endpoint) = endpoint() else { return };
    let setup = Setup::new(endpoint, "lambda-groups", 5);
    setup.upload_sample(&["events/a.jsonl"]);
    let groups = aws(
        &setup.endpoint,
        &["fifo", &format!("{}-groups.fifo", setup.name)],
    );
    let notice =
        serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": setup.name}, "object": {"key": "events/a.jsonl"}}}]})
        .to_string();
    let record = |id: String, body: String, arn: &str| {
        serde_json::json!({"messageId": id, "receiptHandle": "r", "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs",
            "eventSourceARN": arn})
    };
    let detect = serde_json::json!({"Records": [
        record("m-object".into(), notice, "arn:aws:sqs:us-east-1:000000000000:objects"),
    ]});
    let merge = serde_json::json!({"Records": (0..4).map(|k| record(
        format!("g-{k}"), format!("{{\"shard\": {k}}}"),
        "arn:aws:sqs:us-east-1:000000000000:objects-groups.fifo")).collect::<Vec<_>>()});
    let mut invocations = vec![merge, detect];
    let api = Server::start(move |request| {
        if request.path.ends_with("/invocation/next") {
            return match invocations.pop() {
                Some(event) => Reply::json(200, event).with_header(
                    "Lambda-Runtime-Aws-Request-Id",
                    &format!("req-{}", invocations.len()),
                ),
                None => Reply::text(500, "no more"),
            };
        }
        Reply::text(202, "")
    });
    let project = Project::example();
    // Named in ravenwatch.yml (`--group-queue` would name it too).
    let settings = project.path().join("ravenwatch.yml");
    let mut yml = std::fs::read_to_string(&settings).unwrap();
    yml.push_str(&format!("\ngroup_queue: {groups}\n"));
    std::fs::write(&settings, yml).unwrap();
    let address = api.url.trim_start_matches("http://").to_string();
    let mut env: Vec<(&str, &str)> = setup.env().to_vec();
    env.push(("AWS_LAMBDA_RUNTIME_API", &address));
    let args = [
        "lambda",
        "--workers",
        "1",
        "--shards",
        "4",
        "--settle-seconds",
        "0",
    ];
    let out = project.run_env(&args, &env);
    assert!(
        out.stderr.contains("did not hand out the next invocation"),
        "{out:?}"
    );
    for request in ["req-1", "req-0"] {
        let answers = api.requests_to(
            "POST",
            &format!("/2018-06-01/runtime/invocation/{request}/response"),
        );
        assert_eq!(answers.len(), 1, "{:?}", api.requests());
        assert_eq!(
            answers[0].json(),
            serde_json::json!({"batchItemFailures": []})
        );
    }
    assert!(
        aws(&setup.endpoint, &["count", &groups])
            .parse::<u32>()
            .unwrap()
            > 0,
        "the detection round triggered its shards"
    );
    let expected = setup.reference("events/a.jsonl");
    assert!(!expected.is_empty());
    assert_eq!(matched(&project), expected);
}

/// A storage a `run` used (one state) is sharded by the first worker: the
/// run's ledger and open windows carry on, so the worker skips the object
/// the run read and continues its windows: the alerts of one run over both.
#[test]
fn a_worker_carries_on_from_the_state_a_run_left() {
    let Some(endpoint) = endpoint() else { return };
    let setup = Setup::new(endpoint, "migrate", 5);
    setup.upload_sample(&["events/a.jsonl", "events/b.jsonl"]);
    let project = Project::example();
    let input = format!("s3://{}/events/a.jsonl", setup.name);
    let first = project.run_env(
        &["run", "--input", &input, "--workers", "1", "--no-deliver"],
        &setup.env(),
    );
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let worker = setup.worker(&project);
    assert!(
        worker.stdout.contains("1 object already processed"),
        "{}",
        worker.stdout
    );
    let state = project.path().join(".ravenwatch/state");
    assert!(state.join("alerts.json.before-sharding").is_file());
    assert!(!state.join("alerts.json").exists());
    let reference = Project::example();
    let both = format!("s3://{}/events/", setup.name);
    let one = reference.run_env(
        &["run", "--input", &both, "--workers", "1", "--no-deliver"],
        &setup.env(),
    );
    assert_eq!(one.code, 0, "{}{}", one.stdout, one.stderr);
    assert_eq!(final_alerts(&project), final_alerts(&reference));
}

/// Every alert's last state across the project's runs (an alert a later
/// merge updated appears again there), by id.
fn final_alerts(project: &Project) -> std::collections::BTreeMap<String, serde_json::Value> {
    run_rows(project, "alerts.jsonl")
        .into_iter()
        .map(|a| {
            let kept = serde_json::json!({
                "rule": a["rule"], "dedupe": a["dedupe"], "match_count": a["match_count"],
                "activated": a["activated"], "window_start": a["window_start"],
                "first_match_time": a["first_match_time"], "last_match_time": a["last_match_time"],
            });
            (a["id"].as_str().unwrap_or_default().to_string(), kept)
        })
        .collect()
}

/// Three workers at once over 200 objects: their rounds finish out of
/// order, yet the shards merge them as one run groups them (same alerts,
/// ids and counts, each match in the same alert). Then late events: one
/// inside a window the state still keeps joins that alert; one older than
/// the grace period opens an alert of its own.
#[test]
fn three_workers_over_200_objects_alert_as_one_run_and_late_events_join_their_windows() {
    let Some(endpoint) = endpoint() else { return };
    let setup = Setup::new(endpoint, "three", 5);
    let sample = repo().join("samples/events.jsonl.gz");
    aws(
        &setup.endpoint,
        &[
            "split",
            &setup.name,
            "events/",
            sample.to_str().unwrap(),
            "200",
        ],
    );
    let project = Project::example();
    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ravenwatch"));
        cmd.current_dir(project.path())
            .args([
                "-p",
                ".",
                "worker",
                "--queue",
                &setup.queue,
                "--until-empty",
            ])
            .args(["--workers", "1", "--no-deliver", "--max-messages", "10"])
            // Longer than any pause between rounds, even on a loaded machine.
            .args(["--settle-seconds", "8", "--shards", "8"])
            .env_remove("VIRTUAL_ENV")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in setup.env() {
            cmd.env(k, v);
        }
        cmd.spawn().expect("start a worker")
    };
    let workers: Vec<_> = (0..3).map(|_| spawn()).collect();
    let mut events = 0;
    for w in workers {
        let out: Output = w.wait_with_output().expect("worker").into();
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        let stopped = out
            .stderr
            .lines()
            .find(|l| l.starts_with("stopped: "))
            .unwrap_or("");
        events += stopped
            .split(", ")
            .nth(1)
            .and_then(|e| e.split(' ').next())
            .map_or(0, |n| n.replace(',', "").parse::<u64>().unwrap_or(0));
    }
    assert_eq!(events, 3000, "every event read once across the workers");

    let reference = Project::example();
    let input = format!("s3://{}/events/", setup.name);
    let one = reference.run_env(
        &["run", "--input", &input, "--workers", "1", "--no-deliver"],
        &setup.env(),
    );
    assert_eq!(one.code, 0, "{}{}", one.stdout, one.stderr);
    let expected = final_alerts(&reference);
    assert!(expected.len() > 50, "{}", expected.len());
    assert_eq!(final_alerts(&project), expected);
    assert_eq!(
        match_places(&project, "alert_id"),
        match_places(&reference, "alert_id")
    );

    // Late events, sent after everything was merged.
    let first = run_rows(&project, "matches.jsonl")
        .into_iter()
        .min_by_key(|m| m["time"].as_str().unwrap_or_default().to_string())
        .expect("a match");
    let alert = first["alert_id"].as_str().unwrap().to_string();
    let mut very_late = first["event"].clone();
    very_late["ts"] = serde_json::json!("2024-04-28T00:00:00.000Z");
    let tmp = tempfile::tempdir().unwrap();
    let late = tmp.path().join("late.jsonl");
    std::fs::write(&late, format!("{}\n{very_late}\n", first["event"])).unwrap();
    aws(
        &setup.endpoint,
        &[
            "upload",
            &setup.name,
            "late/late.jsonl",
            late.to_str().unwrap(),
        ],
    );
    let before = final_alerts(&project);
    let again = setup.worker(&project);
    assert!(
        again.stderr.contains("stopped: 1 object, 2 events"),
        "{}",
        again.stderr
    );
    let after = final_alerts(&project);
    assert_eq!(
        after[&alert]["match_count"].as_u64().unwrap(),
        before[&alert]["match_count"].as_u64().unwrap() + 1,
        "the late event joined the window it falls in (same alert id)"
    );
    let new: Vec<&serde_json::Value> = after
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .map(|(_, a)| a)
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["window_start"], "2024-04-28T00:00:00Z");
    assert_eq!(new[0]["rule"], first["rule"]);
}
