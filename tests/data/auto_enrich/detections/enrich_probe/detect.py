# Never calls a table: everything comes from the enrich: selectors.
def detect(r):
    return r.deepget("user.name") == "probe"


def dedupe(r):
    return r.deepget("event.id")


def alert_context(r):
    seen = r.enrichment
    assets = seen.get("axonius_assets", {})
    return {
        "tables": sorted(seen),
        "country": seen.get("geoip", {}).get("source.ip", {}).get("country", {}).get("iso_code"),
        "host_owner": (assets.get("host.hostname") or {}).get("owner"),
        "related_hosts": [a["hostname"] for a in assets.get("related.ip", [])],
        "last_seen_type": type((assets.get("host.hostname") or {}).get("last_seen")).__name__,
        "aws_region": (seen.get("aws_ip_ranges", {}).get("destination.ip") or {}).get("region"),
    }
