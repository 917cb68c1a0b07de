def detect(r):
    if r.get("probe") == "spin":
        while True:
            pass
    if r.get("probe") == "sleep":
        import time
        time.sleep(3600)
    return r.get("probe") is not None
