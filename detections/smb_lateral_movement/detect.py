from asset_context import asset_by_ip, asset_summary


def detect(r):
    if "network" not in r.deepget("event.category", []) or r.deepget("destination.port") != 445:
        return False
    r.src = asset_by_ip(r.deepget("source.ip"))
    r.dst = asset_by_ip(r.deepget("destination.ip"))
    return (
        r.src is not None
        and r.dst is not None
        and r.src["device_type"] == "workstation"
        and r.dst["device_type"] == "workstation"
    )


def title(r):
    return f"SMB from {r.src['hostname']} to {r.dst['hostname']}"


def alert_context(r):
    return {"source_asset": asset_summary(r.src), "destination_asset": asset_summary(r.dst)}


def dedupe(r):
    return f"{r.src['hostname']}->{r.dst['hostname']}"
