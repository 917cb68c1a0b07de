def detect(r):
    return r.get("probe") is not None


def title(r):
    # 20 MB: stored and printed whole before titles were bounded.
    return "x" * (20 * 1024 * 1024)


def alert_context(r):
    # Refers to itself twice: doubling at every level without cycle checks.
    d = {"ip": "10.0.0.1"}
    d["a"] = d["b"] = d
    return d


def dedupe(r):
    # Not a str: an error, and the dedupe key falls back to the title.
    return 42
