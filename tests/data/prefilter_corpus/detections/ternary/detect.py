def detect(r):
    return r.deepget("event.outcome") == "success" if r.deepget("flag") else r.deepget("event.action") == "Heartbeat"
