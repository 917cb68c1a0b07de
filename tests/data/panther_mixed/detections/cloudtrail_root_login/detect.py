def detect(r):
    return r.get("eventName") == "ListBuckets"
