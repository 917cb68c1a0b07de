def detect(r):
    return r.get("email", "").endswith(("@evil.example", "@bad.example"))
