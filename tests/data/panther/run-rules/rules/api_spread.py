def rule(event):
    return event.deep_get("userIdentity", "userName") == "alice"


def dedup(event):
    return event.deep_get("userIdentity", "userName")


def unique(event):
    # The threshold counts distinct API calls, not calls.
    return event.get("eventName")
