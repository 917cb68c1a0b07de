"""The pure-Python baseline for Panther rules in `run`: what a Panther-style
engine does in one Python process. Loads every enabled rule of a Panther
directory for one log type (global helpers importable by GlobalID, data
models), then for each event of a JSON-lines file: parse it, wrap it in the
read-only case-insensitive event, call every rule's `rule(event)`, and on a
match `title`, `dedup` and `alert_context`. The event classes are
Ravenwatch's own (`src/python/panther_runtime.py`, plain Python), so both
sides run the same rule code on the same event objects.

    python3 bench/panther_reference.py --panther DIR --log-type AWS.CloudTrail --input events.jsonl
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def load_runtime():
    path = os.path.join(HERE, "..", "src", "python", "panther_runtime.py")
    spec = importlib.util.spec_from_file_location("_ravenwatch_panther", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["_ravenwatch_panther"] = module
    spec.loader.exec_module(module)
    return module


def items(root):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".yml", ".yaml")) and not name.startswith("."):
                path = os.path.join(folder, name)
                with open(path) as f:
                    item = yaml.safe_load(f)
                if isinstance(item, dict) and "AnalysisType" in item:
                    yield folder, item


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--panther", required=True)
    p.add_argument("--log-type", required=True)
    p.add_argument("--input", required=True)
    a = p.parse_args()
    rt = load_runtime()
    rt.install_modules()
    found = list(items(a.panther))
    rt.set_globals({i["GlobalID"]: os.path.join(d, i["Filename"])
                    for d, i in found if i["AnalysisType"] == "global"})
    model = None
    for d, i in found:
        if i["AnalysisType"] == "datamodel" and i.get("Enabled") and a.log_type in i.get("LogTypes", []):
            mappings = [(m["Name"], "path" if "Path" in m else "method", m.get("Path") or m.get("Method"))
                        for m in i.get("Mappings", [])]
            model = rt.load_data_model("_dm", os.path.join(d, i["Filename"]) if i.get("Filename") else None,
                                       mappings)
    rules = []
    for n, (d, i) in enumerate(found):
        if i["AnalysisType"] == "rule" and i.get("Enabled", True) and i.get("Filename") \
                and a.log_type in (i.get("LogTypes") or []):
            module = rt.load_module(f"_rule_{n}", os.path.join(d, i["Filename"]))
            rules.append((i["RuleID"], module))
    started = time.perf_counter()
    events = matches = errors = 0
    with open(a.input) as f:
        for line in f:
            data = json.loads(line)
            data.setdefault("p_log_type", a.log_type)
            event = rt.PantherEvent(data, model)
            events += 1
            for _, module in rules:
                try:
                    if not module.rule(event):
                        continue
                    matches += 1
                    for name in ("title", "dedup", "alert_context"):
                        fn = getattr(module, name, None)
                        if fn is not None:
                            fn(event)
                except Exception:  # noqa: BLE001 - counted, as an engine reports them
                    errors += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"events": events, "rules": len(rules), "matches": matches, "errors": errors,
                      "seconds": round(seconds, 2), "events_per_second": round(events / seconds)}))


main()
