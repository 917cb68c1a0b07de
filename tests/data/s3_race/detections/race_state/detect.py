# Plays a second run that commits its alert state while this run is still
# going: on the first event it overwrites the state object in S3 directly.
import os
import urllib.request

RACED = False


def detect(r):
    global RACED
    url = os.environ.get("RACE_STATE_URL")
    if url and not RACED:
        RACED = True
        body = b'{"format": 1, "watermark_us": 0, "alerts": [], "written_by": "the other run"}'
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="PUT"), timeout=10)
    return False
