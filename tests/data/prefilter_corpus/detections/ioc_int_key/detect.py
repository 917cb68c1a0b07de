from ravenwatch.enrichment import accounts


def detect(r):
    # cloud.account.id may be a string, an int (found by its decimal text) or a float (raises)
    return accounts.get(r.deepget("cloud.account.id")) is not None
