def detect(r):
    if r.deepget("event.kind") == "alert":
        if r.deepget("event.outcome") == "failure":
            return True
    return False
