from ravenwatch.enrichment import account_regions, hosts, networks, ports


def detect(r):
    return True


def alert_context(r):
    src = r.deepget("source.ip")
    port = r.deepget("destination.port")
    return {
        "net": networks.get(src, "network", select=["name"]),
        "all_nets": [n["name"] for n in networks.get_all(src)],
        "owner": hosts.get(r.deepget("host.hostname"), default={"owner": "unknown"})["owner"],
        "vpc": account_regions.get((r.deepget("cloud.account.id"), r.deepget("cloud.region")), "account_region", select="vpc"),
        "many": [n and n["name"] for n in networks.lookup_many([src, None, "192.168.1.1", r.deepget("destination.ip")])],
        "service": ports.get(port, default={}).get("service"),
        "service_from_text": ports.get(str(port), default={}).get("service"),
    }
