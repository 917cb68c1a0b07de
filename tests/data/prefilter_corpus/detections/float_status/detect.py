def detect(r):
    return r.deepget("http.status") == 500.0 or r.deepget("score") == 1
