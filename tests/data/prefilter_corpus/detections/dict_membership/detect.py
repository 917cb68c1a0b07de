def detect(r):
    return "debug" in r.deepget("meta", {})
