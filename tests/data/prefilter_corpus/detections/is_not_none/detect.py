def detect(r):
    return r.deepget("cloud.account.id") is not None and r.deepget("event.action") == "ConsoleLogin"
