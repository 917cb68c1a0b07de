def detect(r):
    failed = r.deepget("event.outcome") == "failure"
    return failed and r.deepget("user.name") == "admin"
