# Reports which snapshot of known_ip_info each event saw, through get() and
# through the enrich: selector, so a test can check that both switch together.
from ravenwatch.enrichment import known_ip_info


def detect(r):
    return True


def dedupe(r):
    return r.deepget("event.id")


def alert_context(r):
    ip = r.deepget("source.ip")
    enriched = r.enrichment.get("known_ip_info", {}).get("source.ip") or {}
    return {
        "via_get": (known_ip_info.get(ip) or {}).get("description"),
        "via_enrich": enriched.get("description"),
    }
