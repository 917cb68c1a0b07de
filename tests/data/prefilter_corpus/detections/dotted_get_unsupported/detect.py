def detect(r):
    # r.get with a dotted key reads a top-level key with a dot: not derived
    return r.get("user.name") == "root" or r.deepget("event.action") == "DeleteTrail"
