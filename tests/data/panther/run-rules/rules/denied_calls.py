def rule(event):
    return event.get("errorCode") == "AccessDenied"


def dedup(event):
    return event.deep_get("userIdentity", "arn", default="")
