def detect(r):
    return r.deepget("score", 1.0) < 0.25
