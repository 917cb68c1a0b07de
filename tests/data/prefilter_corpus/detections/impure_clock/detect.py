import time


def detect(r):
    return r.deepget("event.action") == "DeleteTrail" and time.time() > 0
