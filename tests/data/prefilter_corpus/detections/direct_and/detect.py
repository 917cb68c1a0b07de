def detect(r):
    return r.deepget("event.outcome") == "failure" and "authentication" in r.deepget("event.category", [])
