#!/usr/bin/env python3
"""The same job without Ravenwatch, the way a Python team would write it.

Loads the project's enrichment data files into dicts, reads the events one
JSON line at a time, runs the project's own detect.py files (through a small
`ravenwatch.enrichment` shim over the dicts), and groups matches into alerts
by (rule, dedupe) with the same threshold and window rules. Prints a JSON
summary comparable to Ravenwatch's summary.json.
"""
import argparse
import csv
import gzip
import importlib.util
import json
import sys
import time
import types
from datetime import datetime
from pathlib import Path

import yaml  # PyYAML, as a Python team would use


def parse_ts(v):
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(v if v < 1e11 else v / 1000).astimezone()
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


class Table:
    def __init__(self, name, keys):
        self.name = name
        self.indexes = {k: {} for k in keys}
        self.default = keys[0]
        self.rows = 0

    def add(self, row):
        self.rows += 1
        for k, index in self.indexes.items():
            v = row.get(k)
            for item in (v if isinstance(v, list) else [v]):
                if item is not None:
                    index[str(item)] = row

    def get(self, key, index_key=None):
        if key is None:
            return None
        return self.indexes[index_key or self.default].get(str(key))

    def __contains__(self, key):
        return self.get(key) is not None

    def __len__(self):
        return self.rows


def load_tables(project):
    tables = {}
    for yml in sorted(project.glob("enrichment/*/enrichment.yml")):
        d = yaml.safe_load(yml.read_text())
        if d.get("format") == "mmdb":
            import maxminddb  # pip install maxminddb (MaxMind's reader)
            tables[d["name"]] = maxminddb.open_database(str(yml.parent / "data.mmdb"))
            continue
        fields = {f["name"]: f["type"] for f in d["schema"]["fields"]}
        keys = [d["schema"]["primary_key"]] + [k for k in d.get("lookup_keys", []) if k != d["schema"]["primary_key"]]
        t = Table(d["name"], keys)
        for data in sorted(yml.parent.glob("data.*")):
            if data.suffix == ".csv":
                for row in csv.DictReader(open(data)):
                    for name, ty in fields.items():
                        v = row.get(name)
                        if isinstance(ty, dict) and ty.get("type") == "list":
                            row[name] = [x for x in (v or "").split(";") if x]
                        elif ty == "boolean":
                            row[name] = v.lower() in ("true", "yes", "1")
                        elif ty in ("int", "long") and v:
                            row[name] = int(v)
                        elif ty == "timestamp" and v:
                            row[name] = parse_ts(v)
                    t.add(row)
            else:
                for line in open(data):
                    if line.strip():
                        t.add(json.loads(line))
        tables[t.name] = t
    return tables


def deepget(v, path):
    for part in path.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(part)
    return v


def selectors(project):
    """The `enrich:` selectors of schemas/events.yml: (table, field, key)."""
    schema = yaml.safe_load((project / "schemas/events.yml").read_text())
    out = []
    for s in schema.get("enrich") or []:
        fields = s["fields"] if isinstance(s["fields"], list) else [s["fields"]]
        out += [(s["table"], f, s.get("key")) for f in fields]
    return out


def enrich(raw, tables, sels):
    found = {}
    for table, field, key in sels:
        v = deepget(raw, field)
        if v is None:
            continue
        t = tables[table]
        try:
            hit = t.get(v, key) if isinstance(t, Table) else t.get(v)
        except ValueError:  # not an IP address
            hit = None
        if hit:
            found.setdefault(table, {})[field] = hit
    return found


class Record(dict):
    def deepget(self, path, default=None):
        v = self
        for part in path.split("."):
            if not isinstance(v, dict) or part not in v:
                return default
            v = v[part]
        return default if v is None else v


def threat_ip_rule(threat_ips):
    def detect(r):
        r.intel = threat_ips.get(r.deepget("destination.ip"))
        return r.intel is not None and r.intel["confidence"] >= 75

    def alert_context(r):
        return {"threat": r.intel["threat"], "feed": r.intel["feed"], "confidence": r.intel["confidence"]}

    def title(r):
        return f"Connection to {r.intel['threat']} at {r.deepget('destination.ip')} from {r.deepget('source.ip')}"

    def dedupe(r):
        return r.deepget("destination.ip")

    return types.SimpleNamespace(detect=detect, alert_context=alert_context, title=title, dedupe=dedupe)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--project", required=True)
    p.add_argument("--input", required=True)
    a = p.parse_args()
    project = Path(a.project)
    started = time.perf_counter()
    tables = load_tables(project)
    shim = types.ModuleType("ravenwatch.enrichment")
    for name, t in tables.items():
        setattr(shim, name, t)
    sys.modules["ravenwatch"] = types.ModuleType("ravenwatch")
    sys.modules["ravenwatch.enrichment"] = shim
    sys.path.insert(0, str(project / "detections/_lib"))
    sels = selectors(project)
    rules = []
    for yml in sorted(project.glob("detections/*/detection.yml")):
        d = yaml.safe_load(yml.read_text())
        if "query" in d:
            # SQL detections have no detect.py: the example's one query
            # (events joined with threat_ips) written by hand.
            assert d["name"] == "threat_ip_traffic", d["name"]
            mod = threat_ip_rule(tables["threat_ips"])
            rules.append((d, mod, 1, d["alert"]["deduplication_window_minutes"] * 60))
            continue
        spec = importlib.util.spec_from_file_location("rule_" + d["name"], yml.parent / "detect.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        alert = d.get("alert", {})
        rules.append((d, mod, alert.get("threshold", 1), alert.get("deduplication_window_minutes", 60) * 60))
    loaded = time.perf_counter()
    events = matches = errors = 0
    open_alerts, alerts = {}, 0
    activated = set()
    opener = gzip.open if a.input.endswith(".gz") else open
    with opener(a.input, "rt") as f:
        for line in f:
            try:
                raw = json.loads(line)
                raw["ts"] = parse_ts(raw["ts"])
            except Exception:
                errors += 1
                continue
            events += 1
            enrichment = enrich(raw, tables, sels) if sels else {}
            for d, mod, threshold, window in rules:
                r = Record(raw)
                r.enrichment = enrichment
                try:
                    if not mod.detect(r):
                        continue
                except Exception:
                    errors += 1
                    continue
                matches += 1
                ctx = mod.alert_context(r) if hasattr(mod, "alert_context") else {}
                title = mod.title(r) if hasattr(mod, "title") else d.get("display_name", d["name"])
                dedupe = mod.dedupe(r) if hasattr(mod, "dedupe") else title
                if hasattr(mod, "severity"):
                    mod.severity(r)
                json.dumps(ctx, default=str)
                key = (d["name"], dedupe)
                t = raw["ts"].timestamp()
                cur = open_alerts.get(key)
                if cur and t < cur[0] + window:
                    cur[1] += 1
                else:
                    cur = open_alerts[key] = [t, 1, alerts]
                    alerts += 1
                if cur[1] >= threshold:
                    activated.add(cur[2])
    seconds = time.perf_counter() - started
    print(json.dumps({
        "events": events, "rule_matches": matches, "alerts": alerts, "activated_alerts": len(activated),
        "errors": errors, "seconds": round(seconds, 3), "load_seconds": round(loaded - started, 3),
        "events_per_second": round(events / seconds),
    }))


if __name__ == "__main__":
    main()
