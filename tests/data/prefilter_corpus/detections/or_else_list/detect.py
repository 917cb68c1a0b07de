def detect(r):
    return "admin" in (r.deepget("user.roles") or [])
