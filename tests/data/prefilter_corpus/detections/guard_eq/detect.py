def detect(r):
    if r.deepget("event.action") != "DeleteTrail":
        return False
    return True
