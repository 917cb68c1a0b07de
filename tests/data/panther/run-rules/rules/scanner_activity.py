def rule(event):
    return event.deep_get("p_enrichment", "Known Scanners", "sourceIPAddress", "kind") == "scanner"


def title(event):
    owner = event.deep_get("p_enrichment", "Known Scanners", "sourceIPAddress", "owner")
    return f"API call from known scanner {owner}"


def alert_context(event):
    return {
        "match": event.deep_get("p_enrichment", "Known Scanners", "sourceIPAddress", "p_match"),
        "office": event.deep_get("p_enrichment", "corp_ranges", "p_any_ip_addresses"),
    }
