def detect(r):
    action = r.deepget("event.action")
    if action == "StopLogging":
        return True
    elif action == "DeleteTrail":
        return r.deepget("flag") == True
    else:
        return False
