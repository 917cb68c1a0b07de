from ravenwatch.enrichment import threat_ips


def detect(r):
    r.intel = threat_ips.get(r.deepget("destination.ip"))
    return r.intel is not None and r.intel["confidence"] >= 75


def alert_context(r):
    return {"threat": r.intel["threat"], "feed": r.intel["feed"], "confidence": r.intel["confidence"]}


def title(r):
    return f"Connection to {r.intel['threat']} at {r.deepget('destination.ip')} from {r.deepget('source.ip')}"


def dedupe(r):
    return r.deepget("destination.ip")
