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

/// (rule, source) of every match of every run in the project's storage.
fn matched(project: &Project) -> Vec<(String, String)> {
    let runs = project.path().join(".ravenwatch/runs");
    let mut out: Vec<(String, String)> = project
        .run_ids()
        .iter()
        // A run that was not committed is no run (`query` hides it too).
        .filter(|id| !runs.join(id).join("incomplete").exists())
        .flat_map(|id| {
            read_jsonl(
                &project
                    .path()
                    .join(format!(".ravenwatch/runs/{id}/matches.jsonl")),
            )
        })
        .map(|m| {
            let source = m["source"].as_str().unwrap_or_default();
            // The object's place, whichever URL form reached it.
            let place = source.rsplit_once('/').map_or(source, |(_, tail)| tail);
            (
                m["rule"].as_str().unwrap_or_default().to_string(),
                place.to_string(),
            )
        })
        .collect();
    out.sort();
    out
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
    // Killed (as kill -9 would) after reading everything, before the state
    // commit: the messages were not deleted.
    let killed = setup.worker_env(&project, &[("RAVENWATCH_CRASH_AT", "before-state-commit")]);
    assert_ne!(killed.code, 0, "{}{}", killed.stdout, killed.stderr);
    assert!(matched(&project).is_empty(), "nothing was committed");
    // They come back after their visibility timeout; a new worker runs them.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let again = setup.worker(&project);
    assert!(
        again.stderr.contains("stopped: 2 objects, 2,000 events"),
        "{}",
        again.stderr
    );
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
