def detect(r):
    return any(r.deepget(p) == "203.0.113.66" for p in ("source.ip", "destination.ip"))
