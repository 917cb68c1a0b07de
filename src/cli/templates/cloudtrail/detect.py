from ravenwatch.enrichment import known_ip_info


def detect(r):
    return r.deepget("eventName") == "ConsoleLogin" and r.deepget("userIdentity.type") == "Root"


def title(r):
    return f"Root console login to {r.deepget('recipientAccountId')} from {r.deepget('sourceIPAddress')}"


def alert_context(r):
    known = known_ip_info.get(r.deepget("sourceIPAddress"))
    r.is_known_ip = known is not None
    return {"known_ip": known, "mfa_used": r.deepget("additionalEventData.MFAUsed")}


def severity(r):
    return "medium" if r.is_known_ip else "high"


def dedupe(r):
    return r.deepget("recipientAccountId")
