def detect(r):
    return r.get("user") == "root"
