def detect(r):
    return all(r.deepget(p) is not None for p in ("source.ip", "destination.ip")) and r.deepget("destination.port") == 445
