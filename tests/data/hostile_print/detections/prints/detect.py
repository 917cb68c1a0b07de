print("loaded prints")


def detect(r):
    print("looking at", r.get("probe"))
    return r.get("probe") is not None
