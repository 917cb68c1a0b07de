def detect(r):
    action = r.deepget("event.action")
    if action not in ("CreateAccessKey", "UpdateLoginProfile"):
        return False
    return True
