def detect(r):
    return "mfa" in r and r.deepget("event.action") == "ConsoleLogin"
