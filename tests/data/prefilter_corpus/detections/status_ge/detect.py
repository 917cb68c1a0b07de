def detect(r):
    # http.status may be an int, a float, a numeric string (raises) or missing
    return r.deepget("http.status", 0) >= 500
