def detect(r):
    return False
