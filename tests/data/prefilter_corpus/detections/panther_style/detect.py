def rule(event):
    return event.get("eventName") == "ConsoleLogin"


def detect(event):
    return event.get("eventName") == "ConsoleLogin" and event.get("errorMessage") is None
