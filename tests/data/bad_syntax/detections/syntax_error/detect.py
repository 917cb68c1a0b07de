def detect(r):
    return r.deepget("event.outcome") == "failure"


def title(r)
    return "missing colon"
