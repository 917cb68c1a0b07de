def detect(r):
    # user.roles may be a list, a string (substring!), null or a number (raises)
    return "admin" in r.deepget("user.roles", [])
