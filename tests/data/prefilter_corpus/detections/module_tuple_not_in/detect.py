ALLOWED_REGIONS = ("us-east-1", "eu-west-1")


def detect(r):
    if r.deepget("event.action") != "RunInstances":
        return False
    return r.deepget("cloud.region") not in ALLOWED_REGIONS
