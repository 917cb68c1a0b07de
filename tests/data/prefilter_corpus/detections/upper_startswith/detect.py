def detect(r):
    return r.deepget("host.hostname").upper().startswith("DC")
