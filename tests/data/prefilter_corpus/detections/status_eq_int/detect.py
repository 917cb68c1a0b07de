def detect(r):
    return r.deepget("http.status") == 404
