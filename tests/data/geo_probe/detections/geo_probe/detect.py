# Exercises the GeoIP table API from Python; the answers land in the alert.
from ravenwatch.enrichment import geoip


def detect(r):
    return r.deepget("user.name") == "geo"


def alert_context(r):
    ip = r.deepget("source.ip")
    return {
        "city": geoip.get(ip)["city"],
        "country_only": geoip.get(ip, select=["country"]),
        "all": [x["city"] for x in geoip.get_all(ip)],
        "many": [x and x["city"] for x in geoip.lookup_many(["81.2.69.1", "81.2.69.180", None, "8.8.8.8", "2a02:cf40::9", "::ffff:81.2.69.170", "not-an-ip"])],
        "missing": geoip.get("8.8.8.8", default="none"),
        "contains": ["81.2.69.5" in geoip, "8.8.8.8" in geoip],
        "by_key": geoip.get(ip, "ip")["asn"],
        "ipv6_tags": geoip.get("2a02:cf40::1")["tags"],
    }
