"""Builds cloudtrail.json (a CloudTrail `Records` file) and expected.json
from the unit tests of the dev corpus' AWS.CloudTrail rules: every test Log
with an eventTime and no Mocks becomes one record; expected.json says, per
record, which rule's test it was and what Panther's test expects. Run from
this folder: python3 generate.py"""
import glob
import json
import os

import yaml


def main():
    corpus = os.path.join("..", "corpus-dev", "rules")
    records, expected = [], []
    for path in sorted(glob.glob(os.path.join(corpus, "**", "*.yml"), recursive=True)):
        with open(path) as f:
            item = yaml.safe_load(f)
        if item.get("AnalysisType") != "rule" or item.get("LogTypes") != ["AWS.CloudTrail"]:
            continue
        for test in item.get("Tests") or []:
            log = test["Log"]
            if test.get("Mocks") or not isinstance(log, dict) or "eventTime" not in log:
                continue
            if log.get("p_log_type", "AWS.CloudTrail") != "AWS.CloudTrail":
                continue
            if not str(log["eventTime"])[:1].isdigit():
                continue  # "redacted": not a time, the reader refuses it
            records.append(log)
            expected.append({"rule": item["RuleID"], "test": test["Name"],
                             "match": test["ExpectedResult"],
                             "enabled": item.get("Enabled", True)})
    with open("cloudtrail.json", "w") as f:
        json.dump({"Records": records}, f, indent=1, default=str)
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1)


main()
