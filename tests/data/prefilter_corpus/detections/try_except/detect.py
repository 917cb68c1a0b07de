def detect(r):
    try:
        return int(r.deepget("http.status")) == 418
    except (TypeError, ValueError):
        return False
