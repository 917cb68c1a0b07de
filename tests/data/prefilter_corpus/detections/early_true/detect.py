def detect(r):
    if r.deepget("event.kind") == "alert":
        return True
    if r.deepget("score", 0) > 0.9:
        return True
    return r.deepget("user.name") in ("root", "Administrator")
