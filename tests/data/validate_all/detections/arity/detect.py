def detect(r):
    return True


def title(r, extra):
    return "never called like this"
