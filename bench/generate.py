#!/usr/bin/env python3
"""Deterministic data for the example project and the benchmark (stdlib only).

  generate.py events  --count N --out FILE[.gz] [--seed S]
      ECS-style events: authentication, CloudTrail-like API calls, network
      connections, with the scenarios that make every example detection fire.
  generate.py project --out DIR [--known-ips 100000 --accounts 1000 --assets 50000]
                      [--no-enrich] [--timestamp-only]
      A copy of the example project whose enrichment tables have realistic sizes.
  generate.py table   --rows N --out DIR
      A project with one N-row JSON-lines table, to time a table load.
  generate.py threat-ips --rows N --out FILE
      The example's threat_ips data.csv grown to N rows.
"""
import argparse
import gzip
import json
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2024, 5, 1, tzinfo=timezone.utc)

USERS = ["maria.garcia", "dev.patel", "lee.wong", "sam.jones", "alex.kim", "root", "admin", "svc-deploy"]
HOSTS = ["fin-laptop-042", "eng-laptop-007", "eng-laptop-019", "dc-01", "files-01", "web-01"]
ACCOUNTS = ["111122223333", "222233334444", "333344445555", "444455556666", "555566667777"]
API_CALLS = ["DescribeInstances", "GetObject", "PutObject", "AssumeRole", "ListBuckets", "CreateUser",
             "AttachRolePolicy", "RunInstances", "StopInstances", "GetCallerIdentity"]
INTERNAL = ["10.20.1.15", "10.20.9.15", "10.20.2.7", "10.20.2.19", "10.20.3.3", "10.30.0.10", "10.30.0.11", "10.40.0.5"]


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def public_ip(rng):
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def auth(t, rng, ip=None, outcome=None, user=None, host=None):
    return {
        "ts": ts(t),
        "event": {"kind": "event", "category": ["authentication"], "action": "user_login",
                  "outcome": outcome or rng.choice(["success", "success", "success", "failure"])},
        "source": {"ip": ip or rng.choice([public_ip(rng), rng.choice(INTERNAL), "203.0.113.10"]),
                   "port": rng.randint(1024, 65535)},
        "user": {"name": user or rng.choice(USERS)},
        "host": {"hostname": host or rng.choice(HOSTS)},
        "user_agent": {"original": "OpenSSH_9.6"},
    }


def cloudtrail(t, rng, action=None, account=None):
    account = account or rng.choice(ACCOUNTS)
    return {
        "ts": ts(t),
        "event": {"kind": "event", "category": ["configuration"], "action": action or rng.choice(API_CALLS),
                  "outcome": "success", "provider": "ec2.amazonaws.com"},
        "source": {"ip": public_ip(rng)},
        "user": {"name": rng.choice(USERS)},
        "cloud": {"region": rng.choice(["us-east-1", "eu-west-1"]), "account": {"id": account}},
        "user_agent": {"original": "aws-cli/2.15.0"},
        "aws": {"cloudtrail": {"request_parameters": {"dryRun": False}, "event_version": "1.09"}},
    }


def network(t, rng, src=None, dst=None, port=None):
    return {
        "ts": ts(t),
        "event": {"kind": "event", "category": ["network"], "action": "connection", "outcome": "success"},
        "source": {"ip": src or rng.choice(INTERNAL), "port": rng.randint(1024, 65535)},
        "destination": {"ip": dst or rng.choice(INTERNAL + ["8.8.8.8", "1.1.1.1"]),
                        "port": port or rng.choice([53, 80, 443, 443, 22, 3389, 8080])},
        "network": {"transport": "tcp", "bytes": rng.randint(40, 90000)},
    }


def scenarios():
    """Events that make each example detection fire (and some that must not)."""
    rng = random.Random(1)
    t = START + timedelta(hours=2)
    out = []
    # Unknown IP: 8 failures in 10 minutes -> activated, severity medium.
    out += [auth(t + timedelta(minutes=i * 1.2), rng, "198.51.100.23", "failure", "admin") for i in range(8)]
    # VPN egress (known IP): 6 failures in 12 minutes -> activated, severity low.
    t2 = START + timedelta(hours=5)
    out += [auth(t2 + timedelta(minutes=i * 2), rng, "203.0.113.10", "failure", "maria.garcia") for i in range(6)]
    # Only 4 failures: below the threshold, never activates.
    t3 = START + timedelta(hours=7)
    out += [auth(t3 + timedelta(minutes=i), rng, "198.51.100.99", "failure", "root") for i in range(4)]
    # DisableEbsEncryptionByDefault in production (fires) and in dev (does not).
    out.append(cloudtrail(START + timedelta(hours=9), rng, "DisableEbsEncryptionByDefault", "111122223333"))
    out.append(cloudtrail(START + timedelta(hours=9, minutes=5), rng, "DisableEbsEncryptionByDefault", "444455556666"))
    # Logins on stale assets (last seen March / February).
    out.append(auth(START + timedelta(hours=11), rng, "10.20.3.3", "success", "sam.jones", "hr-desktop-003"))
    out.append(auth(START + timedelta(hours=12), rng, "10.30.0.21", "success", "svc-deploy", "legacy-build-01"))
    # Workstation-to-workstation SMB, found through the second interface IP.
    t4 = START + timedelta(hours=14)
    out += [network(t4 + timedelta(minutes=i * 3), rng, "10.20.9.15", "10.20.2.19", 445) for i in range(4)]
    # A successful login from Brazil (example GeoIP data): unexpected country.
    out.append(auth(START + timedelta(hours=16), rng, "198.51.100.20", "success", "maria.garcia"))
    # Beaconing to a C2 server on the threat list (SQL detection), and one
    # connection to a low-confidence entry that must not alert.
    t5 = START + timedelta(hours=18)
    out += [network(t5 + timedelta(minutes=i * 5), rng, "10.20.2.7", "192.0.2.66", 443) for i in range(3)]
    out.append(network(t5 + timedelta(minutes=20), rng, "10.20.2.7", "198.51.100.200", 443))
    return out


def events(count, seed):
    rng = random.Random(seed)
    special = scenarios()
    n = max(count - len(special), 0)
    span = 24 * 3600
    out = []
    for i in range(n):
        t = START + timedelta(seconds=span * i / max(n, 1))
        kind = rng.random()
        if kind < 0.4:
            e = auth(t, rng)
            if e["event"]["outcome"] == "failure" and (e["source"]["ip"] in INTERNAL or e["source"]["ip"] == "203.0.113.10"):
                e["event"]["outcome"] = "success"
            out.append(e)
        elif kind < 0.7:
            out.append(cloudtrail(t, rng))
        else:
            e = network(t, rng)
            if e["destination"]["port"] == 445:
                e["destination"]["port"] = 443
            out.append(e)
    out += special
    out.sort(key=lambda e: e["ts"])
    return out


def write_lines(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def cmd_events(a):
    rows = events(a.count, a.seed)
    write_lines(a.out, rows)
    print(f"wrote {len(rows)} events to {a.out}")


def cmd_project(a):
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    for part in ["schemas", "detections"]:
        shutil.copytree(ROOT / part, out / part, ignore=shutil.ignore_patterns("__pycache__"))
    # The tables the example detections use; their data is generated below.
    for table in ["known_ip_info", "aws_account_info", "axonius_assets"]:
        shutil.copytree(ROOT / "enrichment" / table, out / "enrichment" / table,
                        ignore=shutil.ignore_patterns("__pycache__", "data.*"))
    # The example GeoIP database, used by the `enrich:` selectors of events,
    # and the threat-IP list of the SQL detection, both as they are.
    for table in ["geoip", "threat_ips"]:
        shutil.copytree(ROOT / "enrichment" / table, out / "enrichment" / table)
    if a.no_enrich:
        schema = out / "schemas" / "events.yml"
        text = schema.read_text()
        schema.write_text(text[:text.index("\nenrich:")] + "\n")
    if a.timestamp_only:
        # Same events, same rules, same selectors: only the schema shrinks
        # to the timestamp, as in projects that declare fields as they go.
        schema = out / "schemas" / "events.yml"
        text = schema.read_text()
        enrich = text[text.index("\nenrich:"):] if "\nenrich:" in text else ""
        schema.write_text("name: events\ntimestamp: ts\nschema:\n  fields:\n"
                          "    - { name: ts, type: timestamp }\n" + enrich)
    (out / "ravenwatch.yml").write_text("name: bench\nstorage: .ravenwatch\n")
    rng = random.Random(42)
    known = [json.loads(l) for l in (ROOT / "enrichment/known_ip_info/data.jsonl").read_text().splitlines() if l]
    while len(known) < a.known_ips:
        known.append({"ip": public_ip(rng), "description": "partner egress", "category": "partner", "owner": "vendor"})
    write_lines(out / "enrichment/known_ip_info/data.jsonl", known)
    lines = (ROOT / "enrichment/aws_account_info/data.csv").read_text().splitlines()
    for i in range(len(lines) - 1, a.accounts):
        lines.append(f"{100000000000 + i},acct-{i},{'true' if i % 3 == 0 else 'false'},team-{i % 40},env")
    (out / "enrichment/aws_account_info/data.csv").write_text("\n".join(lines) + "\n")
    lines = (ROOT / "enrichment/axonius_assets/data.csv").read_text().splitlines()
    for i in range(len(lines) - 1, a.assets):
        n = rng.randint(1, 3)
        ips = ";".join(f"10.{100 + i % 100}.{(i // 100) % 256}.{(i // 25600) * 3 + k + 1}" for k in range(n))
        macs = ";".join(f"02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:{k:02x}" for k in range(n))
        seen = (START - timedelta(days=rng.randint(0, 60))).strftime("%Y-%m-%dT%H:%M:%SZ")
        kind = "workstation" if i % 4 else "server"
        lines.append(f"asset-{i:06d},{seen},{ips},{macs},Windows 11,{kind},user{i}")
    (out / "enrichment/axonius_assets/data.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote project to {out}: {len(known)} known IPs, {a.accounts} accounts, {a.assets} assets")


def cmd_table(a):
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "enrichment/big").mkdir(parents=True)
    (out / "enrichment/big/enrichment.yml").write_text(
        "name: big\nschema:\n  primary_key: ip\n  fields:\n"
        "    - { name: ip, type: string }\n    - { name: description, type: string }\n"
        "    - { name: score, type: int }\n    - { name: seen, type: timestamp }\n")
    rng = random.Random(3)
    with open(out / "enrichment/big/data.jsonl", "w") as f:
        for i in range(a.rows):
            f.write(json.dumps({"ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "description": "host",
                                "score": rng.randint(0, 100), "seen": "2024-05-01T00:00:00Z"}) + "\n")
    print(f"wrote a {a.rows}-row table to {out}")


def cmd_ranges(a):
    """A table of IP ranges with a CIDR key: mostly /24s, nested /28s and some /16s and IPv6 /48s."""
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "enrichment/ranges").mkdir(parents=True)
    (out / "enrichment/ranges/enrichment.yml").write_text(
        "name: ranges\nschema:\n  fields:\n"
        "    - { name: network, type: string }\n    - { name: owner, type: string }\n"
        "    - { name: kind, type: string }\n"
        "lookup_keys:\n  - { name: network, match: cidr }\n")
    rng = random.Random(11)
    with open(out / "enrichment/ranges/data.jsonl", "w") as f:
        for i in range(a.rows):
            r = i % 100
            a1, a2, a3 = rng.randrange(1, 224), rng.randrange(256), rng.randrange(256)
            if r < 89:
                net, kind = f"{a1}.{a2}.{a3}.0/24", "hosting"
            elif r < 98:
                net, kind = f"{a1}.{a2}.{a3}.{rng.randrange(16) * 16}/28", "customer"
            elif r < 99:
                net, kind = f"{a1}.{a2}.0.0/16", "isp"
            else:
                net, kind = f"2001:db8:{rng.randrange(65536):x}::/48", "ipv6"
            f.write(json.dumps({"network": net, "owner": f"org-{i % 5000}", "kind": kind}) + "\n")
    print(f"wrote a {a.rows}-range table to {out}")


def cmd_threat_ips(a):
    """A threat-IP list of N rows that keeps the example's entries."""
    rng = random.Random(11)
    src = ROOT / "enrichment/threat_ips/data.csv"
    lines = src.read_text().splitlines()
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
        for i in range(a.rows - (len(lines) - 1)):
            f.write(f"{public_ip(rng)},Synthetic threat {i % 50},bench-feed,{rng.randint(1, 100)},2024-04-01\n")
    print(f"wrote {a.rows} threat IPs to {a.out}")


# CloudTrail as an account writes it: mostly read-only calls by roles and
# services, some console sign-ins and IAM changes, a few denials; the rare
# sensitive calls are what Panther's CloudTrail rules look for.
CLOUDTRAIL_CALLS = [
    # (weight, eventSource, eventName, readOnly)
    (30, "ec2.amazonaws.com", "DescribeInstances", True),
    (12, "s3.amazonaws.com", "GetObject", True),
    (10, "sts.amazonaws.com", "AssumeRole", False),
    (8, "ec2.amazonaws.com", "DescribeSecurityGroups", True),
    (8, "iam.amazonaws.com", "ListRoles", True),
    (6, "kms.amazonaws.com", "Decrypt", True),
    (6, "logs.amazonaws.com", "PutLogEvents", False),
    (5, "lambda.amazonaws.com", "ListFunctions20150331", True),
    (4, "s3.amazonaws.com", "ListBuckets", True),
    (3, "sts.amazonaws.com", "GetCallerIdentity", True),
    (2, "signin.amazonaws.com", "ConsoleLogin", False),
    (2, "ssm.amazonaws.com", "GetParameter", True),
    (1, "iam.amazonaws.com", "CreateAccessKey", False),
    (1, "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", False),
    (0.3, "iam.amazonaws.com", "CreateUser", False),
    (0.2, "s3.amazonaws.com", "PutBucketPolicy", False),
    (0.1, "cloudtrail.amazonaws.com", "StopLogging", False),
    (0.1, "iam.amazonaws.com", "AttachUserPolicy", False),
    (0.05, "ec2.amazonaws.com", "ModifyImageAttribute", False),
]


def cloudtrail_event(rng, when):
    weights = [c[0] for c in CLOUDTRAIL_CALLS]
    _, source, name, read_only = rng.choices(CLOUDTRAIL_CALLS, weights)[0]
    account = rng.choice(["123456789012", "210987654321", "111122223333"])
    kind = rng.choices(["AssumedRole", "IAMUser", "AWSService", "Root"], [70, 20, 9.9, 0.1])[0]
    user = f"user{rng.randrange(200)}"
    identity = {"type": kind, "accountId": account, "principalId": f"AIDA{rng.randrange(10**12)}"}
    if kind == "AssumedRole":
        role = rng.choice(["Admin", "ReadOnly", "Deploy", "AWSReservedSSO_Dev_1a2b"])
        identity["arn"] = f"arn:aws:sts::{account}:assumed-role/{role}/{user}"
        identity["sessionContext"] = {
            "sessionIssuer": {"type": "Role", "userName": role, "accountId": account,
                              "arn": f"arn:aws:iam::{account}:role/{role}"},
            "attributes": {"mfaAuthenticated": "false", "creationDate": when}}
    elif kind == "IAMUser":
        identity["arn"] = f"arn:aws:iam::{account}:user/{user}"
        identity["userName"] = user
    elif kind == "Root":
        identity["arn"] = f"arn:aws:iam::{account}:root"
    else:
        identity["invokedBy"] = "cloudformation.amazonaws.com"
    event = {
        "eventVersion": "1.08", "userIdentity": identity, "eventTime": when,
        "eventSource": source, "eventName": name,
        "awsRegion": rng.choice(["us-east-1", "us-west-2", "eu-west-1"]),
        "sourceIPAddress": f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "userAgent": rng.choice(["aws-cli/2.15.0", "Boto3/1.34.0", "console.amazonaws.com", "aws-sdk-go/1.50"]),
        "requestParameters": {"instancesSet": {}, "filterSet": {}} if read_only else {"name": f"r{rng.randrange(1000)}"},
        "responseElements": None,
        "requestID": f"{rng.getrandbits(64):016x}", "eventID": f"{rng.getrandbits(128):032x}",
        "readOnly": read_only, "eventType": "AwsApiCall", "managementEvent": True,
        "recipientAccountId": account, "eventCategory": "Management",
    }
    if name == "ConsoleLogin":
        event["eventType"] = "AwsConsoleSignIn"
        ok = rng.random() < 0.95
        event["responseElements"] = {"ConsoleLogin": "Success" if ok else "Failure"}
        event["additionalEventData"] = {"MFAUsed": rng.choice(["Yes", "No"])}
    if rng.random() < 0.03:
        event["errorCode"] = "AccessDenied"
        event["errorMessage"] = "User is not authorized to perform this operation"
    return event


def cmd_cloudtrail(a):
    rng = random.Random(a.seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with open(a.out, "w") as out:
        for i in range(a.count):
            when = (start + timedelta(seconds=i * 86400 * 7 / a.count)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.write(json.dumps(cloudtrail_event(rng, when)) + "\n")
    print(f"wrote {a.count} CloudTrail events to {a.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("events")
    e.add_argument("--count", type=int, default=3000)
    e.add_argument("--seed", type=int, default=7)
    e.add_argument("--out", required=True)
    pr = sub.add_parser("project")
    pr.add_argument("--out", required=True)
    pr.add_argument("--no-enrich", action="store_true", help="drop the enrich: selectors of events")
    pr.add_argument("--timestamp-only", action="store_true", help="declare only the timestamp in the events schema")
    pr.add_argument("--known-ips", type=int, default=100_000)
    pr.add_argument("--accounts", type=int, default=1_000)
    pr.add_argument("--assets", type=int, default=50_000)
    rg = sub.add_parser("ranges")
    rg.add_argument("--rows", type=int, default=1000000)
    rg.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("--rows", type=int, default=1_000_000)
    t.add_argument("--out", required=True)
    ct = sub.add_parser("cloudtrail")
    ct.add_argument("--count", type=int, default=100_000)
    ct.add_argument("--seed", type=int, default=11)
    ct.add_argument("--out", required=True)
    ti = sub.add_parser("threat-ips")
    ti.add_argument("--rows", type=int, default=100_000)
    ti.add_argument("--out", required=True)
    a = p.parse_args()
    commands = {"events": cmd_events, "project": cmd_project, "table": cmd_table, "ranges": cmd_ranges,
                "threat-ips": cmd_threat_ips, "cloudtrail": cmd_cloudtrail}
    commands[a.cmd](a)


if __name__ == "__main__":
    main()
