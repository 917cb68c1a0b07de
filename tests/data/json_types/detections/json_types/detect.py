def detect(r):
    return r.get("kind") == "probe"


def _type(v):
    return type(v).__name__


def dedupe(r):
    return r["id"]


def alert_context(r):
    return {
        "count": _type(r.deepget("stats.count")),
        "ratio": _type(r.deepget("stats.ratio")),
        "ratio_value": r.deepget("stats.ratio"),
        "tags": r.get("tags"),
        "tags_type": _type(r.get("tags")),
        "empty": r.deepget("stats.empty"),
        "flag": r.deepget("stats.flag"),
        "actor": _type(r.get("actor")),
        "actor_name": r.deepget("actor.name"),
        "has_actor": "actor" in r,
        "null_item": _type(r["actor"]) if "id" in r else "?",
        "big": _type(r.get("big")),
        "known": (r.enrichment.get("known_ip_info") or {}).get("source.ip", {}).get("category"),
        "keys": sorted(r.to_dict().keys()),
    }
