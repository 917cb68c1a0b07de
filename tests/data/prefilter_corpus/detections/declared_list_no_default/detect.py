def detect(r):
    # a missing event.category is None here: `in None` raises
    return "network" in r.deepget("event.category") and r.deepget("destination.port") != 443
