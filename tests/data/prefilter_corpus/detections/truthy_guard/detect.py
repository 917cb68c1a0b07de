def detect(r):
    if not r.deepget("user.roles"):
        return False
    return r.deepget("event.outcome") == "success"
