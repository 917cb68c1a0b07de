SUSPICIOUS = {"CreateUser", "AttachUserPolicy", "PutBucketPolicy"}


def detect(r):
    return r.deepget("event.action") in SUSPICIOUS
