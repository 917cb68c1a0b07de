from ravenwatch.enrichment import threat_intel_ips


def detect(r):
    return r.deepget("source.ip") in threat_intel_ips
