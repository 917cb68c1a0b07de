def detect(r):
    if r.deepget("source.ip") == "203.0.113.10":
        raise ValueError("cannot handle the VPN address")
    return r.deepget("event.outcome") == "failure"


def severity(r):
    return "catastrophic"
