def detect(r):
    return r.deepget("user.name") == "sam.jones"


def dedupe(r):
    return r.deepget("source.ip")


def destinations(r):
    if r.deepget("source.ip") == "10.20.3.3":
        return ["soar", "pager"]
    return ["soar"]
