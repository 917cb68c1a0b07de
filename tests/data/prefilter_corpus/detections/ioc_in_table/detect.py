from ravenwatch.enrichment import known_ips


def detect(r):
    # `key in table` is a lookup too
    return r.deepget("destination.ip") in known_ips and r.deepget("event.outcome") != "success"
