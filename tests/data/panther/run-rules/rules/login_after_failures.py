from panther_detection_helpers.caching import get_counter, increment_counter, reset_counter


def rule(event):
    if event.get("eventName") != "ConsoleLogin":
        return False
    key = f"failures:{event.deep_get('userIdentity', 'userName')}"
    if event.deep_get("responseElements", "ConsoleLogin") == "Failure":
        increment_counter(key)
        return False
    failures = get_counter(key)
    reset_counter(key)
    return failures >= 3


def title(event):
    return f"{event.deep_get('userIdentity', 'userName')} logged in after repeated failures"


def severity(event):
    return "DEFAULT"
