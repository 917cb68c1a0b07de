from ravenwatch.enrichment import known_ips


def detect(r):
    if known_ips.get(r.deepget("destination.ip")):
        return True
    return False
