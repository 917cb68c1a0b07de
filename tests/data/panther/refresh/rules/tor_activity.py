def rule(event):
    return bool(event.deep_get("p_enrichment", "tor_exit_nodes", "sourceIPAddress"))


def title(event):
    return f"API call from tor exit node {event.get('sourceIPAddress')}"


def alert_context(event):
    return {"node": event.deep_get("p_enrichment", "tor_exit_nodes", "sourceIPAddress")}
