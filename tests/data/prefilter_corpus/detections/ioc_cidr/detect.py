from ravenwatch.enrichment import ranges


def detect(r):
    hit = ranges.get(r.deepget("source.ip"))
    return hit is not None and r.deepget("event.outcome") == "success"
