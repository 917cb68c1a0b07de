def detect(r):
    return "powershell" in r.deepget("process.cmd", "")
