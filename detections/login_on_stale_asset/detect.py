from datetime import timedelta

from ravenwatch.enrichment import axonius_assets
from asset_context import asset_summary

STALE_AFTER = timedelta(days=30)


def detect(r):
    if "authentication" not in r.deepget("event.category", []) or r.deepget("event.outcome") != "success":
        return False
    r.asset = axonius_assets.get(r.deepget("host.hostname"))
    if r.asset is None or r.asset["last_seen"] is None:
        return False
    return r["ts"] - r.asset["last_seen"] > STALE_AFTER


def title(r):
    return f"{r.deepget('user.name')} logged in on {r.asset['hostname']}, last seen by Axonius {r.asset['last_seen']:%Y-%m-%d}"


def alert_context(r):
    return {"asset": asset_summary(r.asset), "days_since_seen": (r["ts"] - r.asset["last_seen"]).days}


def dedupe(r):
    return r.asset["hostname"]
