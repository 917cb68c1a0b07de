"""Writes the corpus' events (fixed seed, so the files are reproducible):
logs/mixed.jsonl.gz, where most fields change type from event to event
(the engine holds them as JSON text), and logs/clean.jsonl.gz, where each
field keeps one type besides null and missing (typed columns).
    python3 generate.py"""
import gzip
import json
import random

rng = random.Random(17)
MISSING = object()

CHOICES = {
    "event.kind": ["alert", "event", None, 3, MISSING],
    "event.action": ["ConsoleLogin", "DeleteTrail", "StopLogging", "RunInstances", "CreateUser",
                     "AdminAddUser", "RootLogin", "Heartbeat", "CreateAccessKey", "consolelogin", None, MISSING],
    "event.outcome": ["success", "failure", "Failure", None, MISSING],
    "event.category": [["authentication"], ["network"], ["authentication", "network"], [], None, MISSING],
    "destination.ip": ["203.0.113.66", "10.0.0.1", "192.0.2.9", None, MISSING],
    "destination.port": [22, 443, 445, 3389, 5985, 23, None, MISSING],
    "source.ip": ["10.1.2.3", "203.0.113.66", "203.0.113.9", "198.51.100.7", "192.0.2.1", "", None, 7, MISSING],
    "user.name": ["root", "ROOT", "Root", "admin", "mallory", "eve", "svc", "İstanbul", "i\u0307stanbul", "", None, 5, MISSING],
    "user.email": ["mallory", "a@b.c", None, MISSING],
    "user.roles": [["admin"], ["user", "admin"], ["user"], [], "superadmin", "user", None, 1, {"admin": True}, MISSING],
    "process.cmd": ["powershell -enc xyz", "bash -c ls", "", None, 42, ["powershell"], MISSING],
    "host.hostname": ["dc-01", "DC-01", "Dc-01", "kiosk-7", "KIOSK-7", "laptop", "dc-02", None, 12, ["dc-01"], MISSING],
    "email": ["x@evil.example", "y@bad.example", "z@good.example", "", None, 9, MISSING],
    "user_agent.name": ["sqlmap", "curl", "nikto", None, ["sqlmap"], MISSING],
    "cloud.region": ["us-east-1", "eu-west-1", "ap-south-1", None, MISSING],
    "cloud.account.id": ["123456789012", 123456789012, 42, "42", 42.0, "999", None, True, MISSING],
    "http.status": [200, 404, 404.0, "404", 500, 500.0, 503, 418, "418", None, True, MISSING],
    "score": [0.1, 0.2, 0.25, 0.5, 0.95, 1, 1.0, True, "0.1", None, float("1e300"), MISSING],
    "flag": [True, False, 1, 0, 1.0, "1", None, MISSING],
    "mfa": [True, False, None, MISSING],
    "severity_hint": ["high", "low", None, MISSING],
    "tags": ["prod-db", "dev", ["prod"], None, MISSING],
    "meta": [{"debug": 1}, {"other": 2}, {}, "debug mode", ["debug"], None, MISSING],
    "eventName": ["ConsoleLogin", "GetObject", None, MISSING],
    "errorMessage": [None, "denied", MISSING],
}


def put(event, path, value):
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(event.get(part), dict):
            event[part] = {}
        event = event[part]
    event[parts[-1]] = value


def one_type(values):
    """The values of the first non-null value's type, with null and missing."""
    kind = next(type(v) for v in values if v is not None and v is not MISSING)
    return [v for v in values if v is None or v is MISSING or type(v) is kind]


def write(path, count, choices, hour):
    with gzip.open(path, "wt") as out:
        for i in range(count):
            event = {"ts": f"2024-05-01T{hour + i // 3600:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z"}
            for field, values in choices.items():
                value = rng.choice(values)
                if value is not MISSING:
                    put(event, field, value)
            if choices is CHOICES and rng.random() < 0.02:
                event["user"] = rng.choice([None, "root", ["root"]])  # not a dict at all
            out.write(json.dumps(event) + "\n")


write("logs/mixed.jsonl.gz", 1500, CHOICES, 0)
write("logs/clean.jsonl.gz", 1500, {k: one_type(v) for k, v in CHOICES.items()}, 6)
