def detect(r):
    return r.deepget("user.name") == "sam.jones"


def dedupe(r):
    return r.deepget("host.hostname")
