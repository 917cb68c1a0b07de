REMOTE_PORTS = {22: "ssh", 3389: "rdp", 5985: "winrm"}


def detect(r):
    return r.deepget("destination.port") in REMOTE_PORTS and r.deepget("event.outcome") == "success"
