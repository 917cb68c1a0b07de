from ravenwatch.enrichment import known_ips


def detect(r):
    for path in ("source.ip", "destination.ip"):
        if known_ips.get(r.deepget(path)) is not None:
            return r.deepget("event.action") != "Heartbeat"
    return False
