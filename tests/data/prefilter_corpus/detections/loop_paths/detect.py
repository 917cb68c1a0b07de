def detect(r):
    for path in ("user.name", "user.email"):
        if r.deepget(path) == "mallory":
            return True
    return False
