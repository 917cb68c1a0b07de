"""Builds one input file per log type of the dev corpus (AWS.CloudTrail as a
CloudTrail `Records` file, Okta.SystemLog and GitHub.Audit as JSON lines)
and expected.json from the rules' unit tests: every test Log with a usable
event time and no Mocks becomes one event; expected.json says, per file and
position, which rule's test it was and what Panther's test expects. Run
from this folder: python3 generate.py"""
import glob
import json
import os

import yaml

TYPES = {
    "AWS.CloudTrail": ("cloudtrail.json", "eventTime"),
    "Okta.SystemLog": ("okta.jsonl", "published"),
    "GitHub.Audit": ("github.jsonl", "@timestamp"),
}


def usable_time(value):
    return isinstance(value, (int, float)) or str(value)[:1].isdigit()


def main():
    corpus = os.path.join("..", "corpus-dev", "rules")
    events = {t: [] for t in TYPES}
    expected = {t: [] for t in TYPES}
    for path in sorted(glob.glob(os.path.join(corpus, "**", "*.yml"), recursive=True)):
        with open(path) as f:
            item = yaml.safe_load(f)
        if item.get("AnalysisType") != "rule":
            continue
        log_types = item.get("LogTypes") or []
        if len(log_types) != 1 or log_types[0] not in TYPES:
            continue
        log_type = log_types[0]
        time_field = TYPES[log_type][1]
        for test in item.get("Tests") or []:
            log = test["Log"]
            if test.get("Mocks") or not isinstance(log, dict):
                continue
            if log.get("p_log_type", log_type) != log_type or not usable_time(log.get(time_field)):
                continue
            events[log_type].append(log)
            expected[log_type].append({"rule": item["RuleID"], "test": test["Name"],
                                       "match": test["ExpectedResult"],
                                       "enabled": item.get("Enabled", True)})
    for log_type, (name, _) in TYPES.items():
        with open(name, "w") as f:
            if name.endswith(".json"):
                json.dump({"Records": events[log_type]}, f, indent=1, default=str)
            else:
                for e in events[log_type]:
                    f.write(json.dumps(e, default=str) + "\n")
    with open("expected.json", "w") as f:
        json.dump({TYPES[t][0]: expected[t] for t in TYPES}, f, indent=1)


main()
