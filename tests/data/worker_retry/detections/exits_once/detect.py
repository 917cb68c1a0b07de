import os
import pathlib

MARK = pathlib.Path(os.environ["RAVENWATCH_TEST_MARK"])


def detect(r):
    # Dies the first time it meets the event, then behaves.
    if r.deepget("user.name") == "boom" and not MARK.exists():
        MARK.write_text("died once")
        os._exit(3)
    return r.deepget("user.name") == "boom"
