SEEN = set()


def detect(r):
    if r.deepget("event.outcome") != "failure":
        return False
    ip = r.deepget("source.ip")
    if ip in SEEN:
        return True
    SEEN.add(ip)
    return False
