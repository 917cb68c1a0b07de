from ravenwatch.enrichment import known_ips


def detect(r):
    return known_ips.get(r.deepget("source.ip")) is None and r.deepget("event.outcome") == "failure"
