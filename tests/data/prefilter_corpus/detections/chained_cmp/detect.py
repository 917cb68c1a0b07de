def detect(r):
    return 400 <= r.deepget("http.status", 0) < 500
