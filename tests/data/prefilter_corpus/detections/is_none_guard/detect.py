def detect(r):
    return r.deepget("user.name") is None and r.deepget("event.outcome") == "success"
