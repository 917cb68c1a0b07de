def detect(r):
    # True == 1 in Python
    return r.deepget("flag") == 1
