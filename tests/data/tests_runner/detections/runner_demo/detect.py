from ravenwatch.enrichment import known_ip_info

# Module state: a fresh import per test case must reset it.
CALLS = []


def business_hours():
    return True


def detect(r):
    CALLS.append(1)
    if r.deepget("event.action") == "boom":
        return 1 / 0
    return r.deepget("event.action") == "login"


def title(r):
    known = "known" if known_ip_info.get(r.deepget("source.ip")) else "unknown"
    return f"login from {known} ip, call {len(CALLS)}, business hours: {business_hours()}"


def severity(r):
    return "low" if known_ip_info.get(r.deepget("source.ip")) else "high"


def dedupe(r):
    return r.deepget("user.name")
