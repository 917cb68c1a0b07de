# Reads the GeoIP record the engine attached to the event (r.enrichment):
# {"geoip": {"source.ip": {...record...}}}; events outside every network
# carry no "geoip" entry at all.
EXPECTED_COUNTRIES = {"US", "NL", "DE", "GB"}


def country(r):
    geo = r.enrichment.get("geoip", {}).get("source.ip") or {}
    return geo.get("country", {}).get("iso_code")


def detect(r):
    if r.deepget("event.outcome") != "success":
        return False
    if "authentication" not in (r.deepget("event.category") or []):
        return False
    found = country(r)
    return found is not None and found not in EXPECTED_COUNTRIES


def title(r):
    return f"Login by {r.deepget('user.name')} from {country(r)}"


def dedupe(r):
    return f"{r.deepget('user.name')}:{country(r)}"


def alert_context(r):
    return {"user": r.deepget("user.name"), "country": country(r)}
