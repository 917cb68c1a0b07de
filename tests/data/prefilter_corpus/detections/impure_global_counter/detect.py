SEEN = 0


def detect(r):
    global SEEN
    if r.deepget("event.action") != "ConsoleLogin":
        return False
    SEEN += 1
    return SEEN % 7 == 0
