BAD = {"mallory", "eve"}


def _bad_user(name):
    return name in BAD


def detect(r):
    return _bad_user(r.deepget("user.name"))
