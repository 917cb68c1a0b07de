from ravenwatch.enrichment import known_ip_info


def detect(r):
    return r.deepget("source.ip") == "203.0.113.10"


def alert_context(r):
    row = known_ip_info.get(r.deepget("source.ip"))
    before = row["category"]
    # A rule changing the row it got must not change what later calls see.
    row["category"] = "mutated"
    row.clear()
    return {"before": before, "again": known_ip_info.get("203.0.113.10")["category"]}
