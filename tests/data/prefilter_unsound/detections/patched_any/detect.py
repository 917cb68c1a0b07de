import patch_any  # noqa: F401 - patches builtins.any


def detect(r):
    return any(r.deepget(p) == "198.51.100.99" for p in ("source.ip", "destination.ip"))
