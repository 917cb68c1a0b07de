def detect(r):
    # r["severity_hint"] raises KeyError when the event has no such key
    return r["severity_hint"] == "high"
