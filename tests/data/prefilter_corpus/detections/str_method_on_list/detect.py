def detect(r):
    return r.deepget("tags", "").startswith("prod")
