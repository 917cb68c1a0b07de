from ravenwatch.enrichment import allowlisted_hosts, intel_ips


def detect(r):
    r.threat = intel_ips.get(r.deepget("destination.ip"))
    return r.threat is not None and allowlisted_hosts.get(r.deepget("host.hostname")) is None


def title(r):
    return f"Traffic to {r.threat['ip']}: {r.threat['description']}"


def dedupe(r):
    return r.threat["ip"]
