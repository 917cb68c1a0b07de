def detect(r):
    return r.deepget("user.name", "").lower() == "root"
