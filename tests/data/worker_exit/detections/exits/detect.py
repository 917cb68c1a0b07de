import os


def detect(r):
    # A rule that takes its process down (as a crashing C extension or the
    # OOM killer would) on one event.
    if r.deepget("user.name") == "boom":
        os._exit(3)
    return False
