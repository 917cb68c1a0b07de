def detect(r):
    assert r.deepget("event.kind") != "bogus", "bogus kind"
    return r.deepget("event.action") == "StopLogging"
