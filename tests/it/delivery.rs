//! Delivery to Jira, Slack and webhooks, against servers on 127.0.0.1 that
//! speak the real shapes (Jira REST v3 create issue / comment / JQL search,
//! Slack incoming webhooks and `chat.postMessage`, a JSON webhook).
//!
//! The project is the example's `login_on_stale_asset` rule with automatic
//! Axonius enrichment (`tests/data/auto_enrich`), so tickets carry asset
//! intelligence: hostname, last seen, interface addresses.

use crate::http::{base64, free_port, Reply, Request, Server};
use crate::{read_jsonl, Output, Project};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USER: &str = "soc-bot@example.com";
const TOKEN: &str = "jira-token-s3cr3t-0a9f";
const ENV: [(&str, &str); 2] = [("JIRA_USER", USER), ("JIRA_API_TOKEN", TOKEN)];
const RULE: &str = "login_on_stale_asset";

fn project(destinations: &str) -> Project {
    let p = Project::with("auto_enrich");
    p.only_detections(&[RULE]);
    std::fs::write(
        p.path().join("ravenwatch.yml"),
        format!("name: delivery-test\nstorage: .ravenwatch\n{destinations}"),
    )
    .unwrap();
    p
}

fn jira_yaml(url: &str, delivery: &str) -> String {
    format!(
        r#"destinations:
  jira_main:
    type: jira
    url: {url}
    project: SEC
    issue_type: Security Alert
    user_env: JIRA_USER
    token_env: JIRA_API_TOKEN
    priority: {{ critical: Highest, high: High, medium: Medium, low: Low, info: Lowest }}
    fields:
      customfield_10050: "{{context.enrichment}}"
      labels: ["ravenwatch", "{{rule}}"]
delivery: {{ default_destinations: [jira_main], {delivery} }}
"#
    )
}

fn logs(name: &str) -> String {
    crate::repo()
        .join("tests/data/logs/delivery")
        .join(name)
        .display()
        .to_string()
}

/// `ravenwatch run` on delivery fixture logs with outputs in `out/<name>`.
fn run(p: &Project, log: &str, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let input = logs(log);
    let output = format!("out/{name}");
    let mut args = vec!["run", "--input", &input, "--output", &output];
    args.extend_from_slice(extra);
    p.run_env(&args, env)
}

fn summary(p: &Project, name: &str) -> Value {
    let text =
        std::fs::read_to_string(p.path().join("out").join(name).join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A Jira Cloud site: Basic auth, `POST /rest/api/3/issue` (201 with the
/// key; 400 with Jira's `errors` for an unknown field), comments, and JQL
/// search by label. `create_failures` are answered to creates first.
#[derive(Default)]
struct Jira {
    issues: Vec<(String, Value)>,
    comments: Vec<(String, Value)>,
    create_failures: VecDeque<Reply>,
    known_fields: Vec<String>,
}

fn fake_jira(state: Arc<Mutex<Jira>>) -> impl FnMut(&Request) -> Reply + Send {
    move |r: &Request| {
        let expected = format!("Basic {}", base64(format!("{USER}:{TOKEN}").as_bytes()));
        if r.header("authorization") != Some(expected.as_str()) {
            return Reply::json(
                401,
                json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}}),
            );
        }
        let mut jira = state.lock().unwrap();
        let path = r.path.as_str();
        match (r.method.as_str(), path) {
            ("POST", "/rest/api/3/search/jql") => {
                let jql = r.json()["jql"].as_str().unwrap_or_default().to_string();
                let label = jql
                    .split("labels = \"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_string();
                let found: Vec<Value> = jira
                    .issues
                    .iter()
                    .filter(|(_, f)| {
                        f["labels"]
                            .as_array()
                            .is_some_and(|l| l.contains(&json!(label)))
                    })
                    .map(|(key, _)| json!({"id": "10000", "key": key}))
                    .collect();
                Reply::json(200, json!({"issues": found, "isLast": true}))
            }
            ("POST", "/rest/api/3/issue") => {
                if let Some(failure) = jira.create_failures.pop_front() {
                    return failure;
                }
                let fields = r.json()["fields"].clone();
                if fields["project"]["key"] != "SEC"
                    || fields["summary"].as_str().is_none_or(str::is_empty)
                {
                    return Reply::json(
                        400,
                        json!({"errorMessages": [], "errors": {"summary": "You must specify a summary of the issue."}}),
                    );
                }
                for key in fields.as_object().unwrap().keys() {
                    if key.starts_with("customfield_") && !jira.known_fields.contains(key) {
                        return Reply::json(
                            400,
                            json!({"errorMessages": [], "errors": {
                            key.clone(): format!("Field '{key}' cannot be set. It is not on the appropriate screen, or unknown.")}}),
                        );
                    }
                }
                let n = jira.issues.len() + 1;
                let key = format!("SEC-{n}");
                jira.issues.push((key.clone(), fields));
                Reply::json(
                    201,
                    json!({"id": format!("{}", 10000 + n), "key": key, "self": format!("http://127.0.0.1/rest/api/3/issue/{}", 10000 + n)}),
                )
            }
            ("POST", p) if p.starts_with("/rest/api/3/issue/") && p.ends_with("/comment") => {
                let key = p
                    .trim_start_matches("/rest/api/3/issue/")
                    .trim_end_matches("/comment")
                    .to_string();
                if !jira.issues.iter().any(|(k, _)| *k == key) {
                    return Reply::json(
                        404,
                        json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}),
                    );
                }
                jira.comments.push((key, r.json()["body"].clone()));
                Reply::json(201, json!({"id": "20001"}))
            }
            _ => Reply::json(404, json!({"errorMessages": ["not found"]})),
        }
    }
}

fn jira_server() -> (Server, Arc<Mutex<Jira>>) {
    let state = Arc::new(Mutex::new(Jira {
        known_fields: vec!["customfield_10050".into()],
        ..Default::default()
    }));
    (Server::start(fake_jira(Arc::clone(&state))), state)
}

/// Every text node of an ADF document, in order.
fn adf_text(doc: &Value) -> String {
    let mut out = String::new();
    fn walk(v: &Value, out: &mut String) {
        if let Some(t) = v["text"].as_str() {
            out.push_str(t);
            out.push('\n');
        }
        for child in v["content"].as_array().into_iter().flatten() {
            walk(child, out);
        }
    }
    walk(doc, &mut out);
    out
}

fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if String::from_utf8_lossy(&bytes).contains(needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn jira_ticket_is_created_once_with_context_and_priority_then_commented() {
    let (server, jira) = jira_server();
    let p = project(&jira_yaml(&server.url, "backoff_ms: 50"));

    let first = run(&p, "first.jsonl", "first", &[], &ENV);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stdout.contains("sent jira_main login_on_stale_asset"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("SEC-1"), "{}", first.stdout);
    {
        let jira = jira.lock().unwrap();
        assert_eq!(jira.issues.len(), 1);
        let fields = &jira.issues[0].1;
        assert_eq!(fields["issuetype"]["name"], "Security Alert");
        assert_eq!(fields["priority"]["name"], "Medium");
        assert_eq!(
            fields["summary"],
            "sam.jones logged in on hr-desktop-003, last seen by Axonius 2024-03-02"
        );
        let alert_id = read_jsonl(&p.path().join("out/first/alerts.jsonl"))[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            fields["labels"],
            json!([format!("rw-{alert_id}"), "ravenwatch", RULE])
        );
        // Additional Context: the automatic enrichment as a readable document.
        let context = &fields["customfield_10050"];
        assert_eq!(context["type"], "doc");
        let text = adf_text(context);
        for expected in [
            "axonius_assets",
            "host.hostname",
            "hostname: ",
            "hr-desktop-003",
            "last_seen: ",
            "2024-03-02T08:00:00Z",
            "network_interfaces_ips: ",
            "10.20.3.3",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
        assert!(!text.contains('{'), "not a JSON dump: {text}");
        // The description: title, rule, severity, count, context, runbook.
        let description = adf_text(&fields["description"]);
        for expected in [
            "Rule: ",
            RULE,
            "Severity: ",
            "MEDIUM",
            "Matches: ",
            "2 (threshold 1)",
            "Context",
            "days_since_seen: ",
            "Runbook",
            "Confirm it is still managed",
        ] {
            assert!(
                description.contains(expected),
                "{expected} not in {description}"
            );
        }
    }
    let s = summary(&p, "first");
    assert_eq!(s["delivery"]["delivered"], 1);
    assert_eq!(s["delivery"]["pending"], 0);
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join(".ravenwatch/state/deliveries.json")).unwrap(),
    )
    .unwrap();
    let (_, entry) = state["alerts"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(entry["destinations"]["jira_main"]["reference"], "SEC-1");

    // The same input again is skipped (the input ledger); read again on
    // purpose, its matches join the alert: no second ticket, a comment.
    let again = run(&p, "first.jsonl", "again", &[], &ENV);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.starts_with(
            "1 input already processed, skipped; --reprocess to run it again\n0 events"
        ),
        "{}",
        again.stdout
    );
    let again = run(&p, "first.jsonl", "again", &["--reprocess"], &ENV);
    assert_eq!(again.code, 0, "{again:?}");
    let more = run(&p, "second.jsonl", "more", &[], &ENV);
    assert_eq!(more.code, 0, "{more:?}");
    assert!(more.stdout.contains("updated jira_main"), "{}", more.stdout);
    let jira = jira.lock().unwrap();
    assert_eq!(jira.issues.len(), 1, "one ticket for one alert");
    assert_eq!(
        server
            .requests_to("POST", "/rest/api/3/issue")
            .iter()
            .filter(|r| r.path == "/rest/api/3/issue")
            .count(),
        1
    );
    assert_eq!(jira.comments.len(), 2);
    assert!(jira.comments.iter().all(|(key, _)| key == "SEC-1"));
    let last = adf_text(&jira.comments[1].1);
    assert!(last.contains("Ravenwatch: 6 matches"), "{last}");
    assert!(last.contains("(was 4)"), "{last}");
    assert!(last.contains("Newest context"), "{last}");
    assert_eq!(summary(&p, "more")["delivery"]["updated"], 1);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let (server, jira) = jira_server();
    {
        let mut j = jira.lock().unwrap();
        j.create_failures.push_back(Reply::json(
            500,
            json!({"errorMessages": ["Internal server error"]}),
        ));
        j.create_failures
            .push_back(Reply::text(503, "upstream unavailable"));
    }
    let p = project(&jira_yaml(&server.url, "backoff_ms: 200, max_attempts: 4"));
    let out = run(&p, "first.jsonl", "retry", &[], &ENV);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(jira.lock().unwrap().issues.len(), 1);
    let creates: Vec<Request> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/rest/api/3/issue")
        .collect();
    assert_eq!(creates.len(), 3, "500, 503, then 201");
    // Backoff with equal jitter: at least half of 200 ms, then of 400 ms.
    let gap1 = creates[1].at - creates[0].at;
    let gap2 = creates[2].at - creates[1].at;
    assert!(gap1 >= Duration::from_millis(100), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(200), "{gap2:?}");
    assert_eq!(summary(&p, "retry")["delivery"]["failures"], json!([]));
}

#[test]
fn rate_limits_wait_for_retry_after() {
    let mut calls = 0;
    let server = Server::start(move |_r: &Request| {
        calls += 1;
        if calls == 1 {
            Reply::json(429, json!({"message": "slow down"})).with_header("Retry-After", "1")
        } else {
            Reply::json(200, json!({"accepted": true}))
        }
    });
    let p = project(&format!(
        "destinations:\n  soar: {{ type: webhook, url: \"{}/hooks/ravenwatch\", headers_env: {{ Authorization: SOAR_TOKEN }} }}\ndelivery: {{ default_destinations: [soar], backoff_ms: 10 }}\n",
        server.url
    ));
    let out = run(
        &p,
        "first.jsonl",
        "limited",
        &[],
        &[("SOAR_TOKEN", "Bearer soar-secret-7781")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let hooks = server.requests();
    assert_eq!(hooks.len(), 2);
    let waited = hooks[1].at - hooks[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    // The webhook's shape: event, alert, idempotency key, header from the environment.
    let body = hooks[1].json();
    assert_eq!(body["event"], "alert.activated");
    assert_eq!(body["alert"]["rule"], RULE);
    assert_eq!(body["alert"]["match_count"], 2);
    let id = body["alert"]["id"].as_str().unwrap();
    assert_eq!(
        hooks[1].header("Idempotency-Key"),
        Some(format!("{id}-2").as_str())
    );
    assert_eq!(
        hooks[1].header("Authorization"),
        Some("Bearer soar-secret-7781")
    );
}

#[test]
fn a_permanent_rejection_stays_pending_and_is_reported() {
    let (server, jira) = jira_server();
    jira.lock().unwrap().known_fields.clear();
    let p = project(&jira_yaml(&server.url, "backoff_ms: 10"));
    let out = run(&p, "first.jsonl", "rejected", &[], &ENV);
    assert_eq!(out.code, 3, "{out:?}");
    let creates = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/rest/api/3/issue")
        .count();
    assert_eq!(creates, 1, "a 400 is not retried");
    let errors = read_jsonl(&p.path().join("out/rejected/errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["kind"], "delivery");
    assert_eq!(errors[0]["rule"], RULE);
    let message = errors[0]["error"].as_str().unwrap();
    assert!(
        message.starts_with("jira_main: create issue: HTTP 400 Bad Request: "),
        "{message}"
    );
    assert!(
        message.contains("Field 'customfield_10050' cannot be set"),
        "{message}"
    );
    let s = summary(&p, "rejected");
    assert_eq!(s["delivery"]["pending"], 1);
    assert_eq!(s["delivery"]["failures"][0]["transient"], false);
    assert_eq!(s["errors"], 1);
    assert!(out.stdout.contains("1 pending"), "{}", out.stdout);
    let pending_dir = p.path().join(".ravenwatch/state/pending");
    assert_eq!(
        std::fs::read_dir(&pending_dir).unwrap().count(),
        1,
        "the alert waits in state/pending/"
    );

    // Once Jira accepts the field, `deliver` sends what was kept.
    jira.lock()
        .unwrap()
        .known_fields
        .push("customfield_10050".into());
    let deliver = p.run_env(&["deliver"], &ENV);
    assert_eq!(deliver.code, 0, "{deliver:?}");
    assert!(
        deliver.stdout.contains("1 sent, 0 updated, 0 pending"),
        "{}",
        deliver.stdout
    );
    assert_eq!(jira.lock().unwrap().issues.len(), 1);
    assert_eq!(
        std::fs::read_dir(&pending_dir).map_or(0, |d| d.count()),
        0,
        "delivered: the copy is gone"
    );
}

#[test]
fn a_server_that_is_down_leaves_it_pending_until_deliver() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let p = project(&jira_yaml(&url, "backoff_ms: 10, max_attempts: 3"));
    let out = run(&p, "first.jsonl", "down", &[], &ENV);
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/down/errors.jsonl"));
    let message = errors[0]["error"].as_str().unwrap();
    assert!(
        message.starts_with("jira_main: search issues: cannot connect"),
        "{message}"
    );
    assert!(message.ends_with("(after 3 attempts)"), "{message}");
    assert_eq!(summary(&p, "down")["delivery"]["pending"], 1);
    let list = p.run_env(&["deliver", "--list"], &ENV);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout
            .contains("jira_main login_on_stale_asset alert "),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout
            .contains("1 failed attempt(s), last: jira_main: search issues: cannot connect"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.ends_with("1 pending\n"), "{}", list.stdout);

    let jira = Arc::new(Mutex::new(Jira {
        known_fields: vec!["customfield_10050".into()],
        ..Default::default()
    }));
    let _server = Server::start_on(port, fake_jira(Arc::clone(&jira)));
    let deliver = p.run_env(&["deliver"], &ENV);
    assert_eq!(deliver.code, 0, "{deliver:?}");
    assert_eq!(jira.lock().unwrap().issues.len(), 1);
    // Nothing left: a second `deliver` sends nothing.
    let again = p.run_env(&["deliver"], &ENV);
    assert!(
        again.stdout.contains("0 sent, 0 updated, 0 pending"),
        "{}",
        again.stdout
    );
    assert_eq!(jira.lock().unwrap().issues.len(), 1);
}

#[test]
fn no_deliver_queues_and_deliver_run_sends() {
    let (server, jira) = jira_server();
    let p = project(&jira_yaml(&server.url, "backoff_ms: 10"));
    let input = logs("first.jsonl");
    let out = p.run_env(&["run", "--input", &input, "--no-deliver"], &ENV);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        server.requests().is_empty(),
        "nothing sent with --no-deliver"
    );
    assert!(
        out.stdout.contains("0 sent, 0 updated, 1 pending"),
        "{}",
        out.stdout
    );
    let run_id = p.run_ids().remove(0);
    let unknown = p.run_env(&["deliver", "--run", "20000101T000000.000Z"], &ENV);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no run `20000101T000000.000Z`"),
        "{}",
        unknown.stderr
    );
    let sent = p.run_env(&["deliver", "--run", &run_id], &ENV);
    assert_eq!(sent.code, 0, "{sent:?}");
    assert_eq!(jira.lock().unwrap().issues.len(), 1);

    // Losing the delivery record does not open a second ticket: the JQL
    // search finds the labelled issue.
    std::fs::remove_file(p.path().join(".ravenwatch/state/deliveries.json")).unwrap();
    let requeued = p.run_env(&["deliver", "--run", &run_id], &ENV);
    assert_eq!(requeued.code, 0, "{requeued:?}");
    assert!(requeued.stdout.contains(": SEC-1"), "{}", requeued.stdout);
    assert_eq!(jira.lock().unwrap().issues.len(), 1);
}

#[test]
fn slack_webhook_and_api_threads() {
    let slack = Server::start(|r: &Request| {
        if r.path == "/api/chat.postMessage" {
            if r.header("authorization") != Some("Bearer xoxb-bot-token-1234") {
                return Reply::json(200, json!({"ok": false, "error": "invalid_auth"}));
            }
            Reply::json(
                200,
                json!({"ok": true, "channel": "C0SOC", "ts": "1714554000.000100"}),
            )
        } else if r.json()["text"].is_string() {
            Reply::text(200, "ok")
        } else {
            Reply::text(400, "no_text")
        }
    });
    let p = project(&format!(
        "destinations:\n  slack_soc: {{ type: slack, webhook_url_env: SLACK_WEBHOOK_URL }}\n  slack_bot: {{ type: slack, token_env: SLACK_BOT_TOKEN, channel: C0SOC, api_url: \"{}/api\" }}\ndelivery: {{ default_destinations: [slack_soc, slack_bot], backoff_ms: 10 }}\n",
        slack.url
    ));
    let hook = format!("{}/services/T000/B000/XXXXXXXXXXXXXXXX", slack.url);
    let env = [
        ("SLACK_WEBHOOK_URL", hook.as_str()),
        ("SLACK_BOT_TOKEN", "xoxb-bot-token-1234"),
    ];
    let first = run(&p, "first.jsonl", "first", &[], &env);
    assert_eq!(first.code, 0, "{first:?}");
    let second = run(&p, "second.jsonl", "second", &[], &env);
    assert_eq!(second.code, 0, "{second:?}");

    let hooks = slack.requests_to("POST", "/services/");
    assert_eq!(hooks.len(), 2, "a message, then an update");
    let message = hooks[0].json();
    assert_eq!(message["blocks"][0]["type"], "header");
    assert!(message["text"]
        .as_str()
        .unwrap()
        .starts_with("[MEDIUM] sam.jones logged in"));
    let context = message["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        context.contains("• *hostname:* hr-desktop-003"),
        "{context}"
    );
    assert!(
        context.contains("• *network_interfaces_ips:* 10.20.3.3"),
        "{context}"
    );
    let update = hooks[1].json();
    assert!(update["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("now 4 matches (was 2)"));

    let posts = slack.requests_to("POST", "/api/chat.postMessage");
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].json()["channel"], "C0SOC");
    assert!(posts[0].json().get("thread_ts").is_none());
    assert_eq!(
        posts[1].json()["thread_ts"],
        "1714554000.000100",
        "the update replies in the thread"
    );
}

#[test]
fn secrets_never_reach_outputs_or_messages() {
    // Jira answers 401 (wrong user), the webhook echoes its Authorization
    // header back in a 403, and Slack's webhook host is down: every error
    // path that could carry a secret.
    let (jira_server, _jira) = jira_server();
    let echo = Server::start(|r: &Request| {
        Reply::text(
            403,
            &format!("forbidden for {}", r.header("authorization").unwrap_or("-")),
        )
    });
    let down = free_port();
    let p = project(&format!(
        r#"destinations:
  jira_main: {{ type: jira, url: "{}", project: SEC, user_env: JIRA_USER, token_env: JIRA_API_TOKEN }}
  soar: {{ type: webhook, url: "{}/hook", headers_env: {{ Authorization: SOAR_TOKEN }} }}
  slack_soc: {{ type: slack, webhook_url_env: SLACK_WEBHOOK_URL }}
delivery: {{ default_destinations: [jira_main, soar, slack_soc], backoff_ms: 10, max_attempts: 2 }}
"#,
        jira_server.url, echo.url
    ));
    let slack_url = format!("http://127.0.0.1:{down}/services/T1/B1/slack-hook-secret-99");
    let soar = "Bearer soar-token-secret-5521";
    let env = [
        ("JIRA_USER", "someone-else@example.com"),
        ("JIRA_API_TOKEN", TOKEN),
        ("SOAR_TOKEN", soar),
        ("SLACK_WEBHOOK_URL", slack_url.as_str()),
    ];
    let out = run(&p, "first.jsonl", "secrets", &[], &env);
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/secrets/errors.jsonl"));
    assert_eq!(errors.len(), 3, "{errors:?}");
    let messages: Vec<&str> = errors
        .iter()
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("jira_main: search issues: HTTP 401 Unauthorized")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("forbidden for [redacted]")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("slack_soc: post message: cannot connect")),
        "{messages:?}"
    );
    let deliver = p.run_env(&["deliver"], &env);
    assert_eq!(deliver.code, 3);
    for secret in [TOKEN, "soar-token-secret-5521", "slack-hook-secret-99"] {
        assert_eq!(
            files_containing(p.path(), secret),
            Vec::<String>::new(),
            "{secret} written to a file"
        );
        for o in [&out, &deliver] {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "{secret} printed: {o:?}"
            );
        }
    }
}

#[test]
fn secrets_echoed_in_derived_forms_are_redacted() {
    // Jira echoes its Basic credentials, the webhook echoes the bare token
    // of its `Bearer` header, Slack's webhook host echoes the secret path.
    let echo_auth = Server::start(|r: &Request| {
        Reply::text(
            401,
            &format!(
                "bad credentials {}",
                r.header("authorization").unwrap_or("-")
            ),
        )
    });
    let echo_token = Server::start(|r: &Request| {
        let auth = r.header("authorization").unwrap_or("-");
        Reply::text(
            403,
            &format!("token {} revoked", auth.trim_start_matches("Bearer ")),
        )
    });
    let echo_path =
        Server::start(|r: &Request| Reply::text(404, &format!("no such hook {}", r.path)));
    let p = project(&format!(
        r#"destinations:
  jira_main: {{ type: jira, url: "{}", project: SEC, user_env: JIRA_USER, token_env: JIRA_API_TOKEN }}
  soar: {{ type: webhook, url: "{}/hook", headers_env: {{ Authorization: SOAR_TOKEN }} }}
  slack_soc: {{ type: slack, webhook_url_env: SLACK_WEBHOOK_URL }}
delivery: {{ default_destinations: [jira_main, soar, slack_soc], backoff_ms: 10, max_attempts: 1 }}
"#,
        echo_auth.url, echo_token.url
    ));
    let slack_url = format!("{}/services/T1/B1/slack-hook-secret-99", echo_path.url);
    let env = [
        ("JIRA_USER", "analyst@example.com"),
        ("JIRA_API_TOKEN", TOKEN),
        ("SOAR_TOKEN", "Bearer soar-token-secret-5521"),
        ("SLACK_WEBHOOK_URL", slack_url.as_str()),
    ];
    let out = run(&p, "first.jsonl", "echo", &[], &env);
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/echo/errors.jsonl"));
    assert_eq!(errors.len(), 3, "{errors:?}");
    // base64("analyst@example.com:" + TOKEN), with and without padding.
    let basic = "YW5hbHlzdEBleGFtcGxlLmNvbTpqaXJhLXRva2VuLXMzY3IzdC0wYTlm";
    for secret in [
        TOKEN,
        basic,
        "soar-token-secret-5521",
        "slack-hook-secret-99",
    ] {
        assert_eq!(
            files_containing(p.path(), secret),
            Vec::<String>::new(),
            "{secret} written to a file"
        );
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{secret} printed: {out:?}"
        );
    }
}

#[test]
fn validate_names_unknown_destinations() {
    let p = project(
        "destinations:\n  jira_main: { type: webhook, url: \"https://soar.example/hook\" }\n",
    );
    let file = p.path().join("detections").join(RULE).join("detection.yml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        yaml.replace(
            "  severity: medium\n",
            "  severity: medium\n  destinations: [jira_mian]\n",
        ),
    )
    .unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("detections/login_on_stale_asset/detection.yml:7:18: alert.destinations: unknown destination `jira_mian` (did you mean `jira_main`?); ravenwatch.yml defines jira_main"),
        "{}",
        out.stdout
    );
}

#[test]
fn delivery_state_in_an_s3_bucket() {
    let Some(s3) = crate::s3::s3() else { return };
    let bucket = s3.bucket();
    let hook = Server::start(|_r: &Request| Reply::json(202, json!({"queued": true})));
    let p = project(&format!(
        "aws: {{ endpoint: \"{}\", force_path_style: true }}\ndestinations:\n  soar: {{ type: webhook, url: \"{}/hook\" }}\ndelivery: {{ default_destinations: [soar] }}\n",
        s3.endpoint, hook.url
    ));
    let yml = p.path().join("ravenwatch.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(
        &yml,
        text.replace(
            "storage: .ravenwatch",
            &format!("storage: s3://{bucket}/store"),
        ),
    )
    .unwrap();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (log, name) in [("first.jsonl", "s3a"), ("second.jsonl", "s3b")] {
        let out = run(&p, log, name, &[], &env);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let events: Vec<String> = hook
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.json()["event"].as_str().unwrap(),
                r.json()["alert"]["match_count"]
            )
        })
        .collect();
    assert_eq!(events, ["alert.activated 2", "alert.updated 4"]);
    let state: Value =
        serde_json::from_slice(&s3.get(&bucket, "store/state/deliveries.json").unwrap()).unwrap();
    let (_, entry) = state["alerts"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(entry["destinations"]["soar"]["sent_match_count"], 4);
    assert!(entry.get("alert").is_none());
    assert_eq!(
        s3.keys(&bucket, "store/state/pending/"),
        Vec::<String>::new(),
        "nothing owed, no copy kept"
    );
}

#[test]
fn the_example_destinations_block_is_valid_once_uncommented() {
    let p = Project::example();
    let text = std::fs::read_to_string(crate::repo().join("ravenwatch.yml")).unwrap();
    let start = text.find("# destinations:").expect("the commented block");
    let uncommented: String = text[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        p.path().join("ravenwatch.yml"),
        format!("{}{uncommented}\n", &text[..start]),
    )
    .unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn info_alerts_go_only_where_destinations_r_sends_them() {
    let hook = Server::start(|_r: &Request| Reply::json(200, json!({})));
    let p = project(&format!(
        "destinations:\n  soar: {{ type: webhook, url: \"{}/hook\" }}\n",
        hook.url
    ));
    p.overlay("delivery_routes");
    p.only_detections(&["info_by_yaml", "info_by_function"]);
    let first = run(&p, "first.jsonl", "first", &[], &[]);
    assert_eq!(first.code, 0, "{first:?}");
    let second = run(&p, "second.jsonl", "second", &[], &[]);
    assert_eq!(
        second.code, 3,
        "an unknown destination is an error: {second:?}"
    );
    let rules: Vec<String> = hook
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.json()["alert"]["rule"].as_str().unwrap(),
                r.json()["alert"]["dedupe"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rules,
        ["info_by_function 81.2.69.160", "info_by_function 10.20.3.3"]
    );
    let errors = read_jsonl(&p.path().join("out/second/errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["function"], "destinations");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown destination `pager`; ravenwatch.yml defines soar"),
        "{errors:?}"
    );
}

#[test]
fn an_unreadable_delivery_state_is_reported_and_kept() {
    let hook = Server::start(|_r: &Request| Reply::json(200, json!({})));
    let p = project(&format!(
        "destinations:\n  soar: {{ type: webhook, url: \"{}/hook\" }}\ndelivery: {{ default_destinations: [soar] }}\n",
        hook.url
    ));
    let state = p.path().join(".ravenwatch/state/deliveries.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "{\"format\": 1, \"alerts\":\n").unwrap();
    let out = run(&p, "first.jsonl", "corrupt", &[], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    let errors = read_jsonl(&p.path().join("out/corrupt/errors.jsonl"));
    let message = errors[0]["error"].as_str().unwrap();
    assert!(
        message.contains(".ravenwatch/state/deliveries.json: unreadable delivery state: EOF while parsing a value at line 2"),
        "{message}"
    );
    assert!(message.contains("ravenwatch deliver --run"), "{message}");
    assert!(hook.requests().is_empty());
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"format\": 1, \"alerts\":\n",
        "never replaced: it holds the ticket keys"
    );
    let deliver = p.run(&["deliver"]);
    assert_eq!(deliver.code, 1, "{deliver:?}");
    assert!(
        deliver.stderr.contains("unreadable delivery state"),
        "{}",
        deliver.stderr
    );
}

#[test]
fn outputs_that_cannot_be_updated_after_delivery_are_reported_on_the_terminal() {
    let p = project("");
    let out_dir = p.path().join("out/gone");
    let moved = out_dir.clone();
    // The webhook takes the alert, then the output folder disappears (a
    // file takes its place), so the run cannot rewrite its outputs.
    let server = Server::start(move |_| {
        let _ = std::fs::remove_dir_all(&moved);
        std::fs::write(&moved, "not a folder").unwrap();
        Reply::json(200, serde_json::json!({}))
    });
    std::fs::write(
        p.path().join("ravenwatch.yml"),
        format!(
            "name: delivery-test\nstorage: .ravenwatch\ndestinations:\n  hook: {{ type: webhook, url: \"{}/hook\" }}\ndelivery: {{ default_destinations: [hook], backoff_ms: 10 }}\n",
            server.url
        ),
    )
    .unwrap();
    let out = run(&p, "first.jsonl", "gone", &[], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(server.requests().len(), 1);
    assert!(out_dir.is_file());
    assert!(
        out.stdout
            .contains("the run's outputs could not be updated with the delivery results"),
        "{}",
        out.stdout
    );
}

#[test]
fn deliver_run_requeues_from_outputs_written_elsewhere() {
    let (server, jira) = jira_server();
    let p = project(&jira_yaml(&server.url, "backoff_ms: 10"));
    let out = run(&p, "first.jsonl", "elsewhere", &["--no-deliver"], &ENV);
    assert_eq!(out.code, 0, "{out:?}");
    let run_id = p.run_ids().remove(0);
    // The queue is lost (as when it could not be saved): only the run's
    // alerts.jsonl, in out/elsewhere, still knows the alert.
    std::fs::remove_dir_all(p.path().join(".ravenwatch/state/pending")).unwrap();
    std::fs::remove_file(p.path().join(".ravenwatch/state/deliveries.json")).unwrap();
    let requeued = p.run_env(&["deliver", "--run", &run_id], &ENV);
    assert_eq!(requeued.code, 0, "{requeued:?}");
    assert_eq!(jira.lock().unwrap().issues.len(), 1);
}
