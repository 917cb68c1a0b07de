import checks


def detect(r):
    if not checks.risky_port(r):
        return False
    return r.deepget("event.outcome") != "failure"
