from ravenwatch.enrichment import known_ip_info


def detect(r):
    return "authentication" in r.deepget("event.category", []) and r.deepget("event.outcome") == "failure"


def title(r):
    return f"Failed logins from {r.deepget('source.ip')}"


def alert_context(r):
    known = known_ip_info.get(r.deepget("source.ip"))
    r.is_known_ip = known is not None
    return {"known_ip": known}


def severity(r):
    return "low" if r.is_known_ip else "medium"


def dedupe(r):
    return r.deepget("source.ip")
