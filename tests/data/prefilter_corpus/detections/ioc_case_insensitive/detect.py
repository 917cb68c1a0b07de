from ravenwatch.enrichment import bad_hosts


def detect(r):
    return bad_hosts.get(r.deepget("host.hostname")) is not None
