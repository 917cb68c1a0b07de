def detect(r):
    return not (r.deepget("event.outcome") != "failure" or r.deepget("user.name") == "svc")
