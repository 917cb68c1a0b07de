def detect(r):
    return r.deepget("score") == None and r.deepget("event.kind") == "alert"
