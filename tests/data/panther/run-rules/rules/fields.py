def rule(event):
    return event.get("eventName") == "GetCallerIdentity"


def alert_context(event):
    return {
        "log_type": event.get("p_log_type"),
        "event_time": event.get("p_event_time"),
        "ips": event.get("p_any_ip_addresses"),
        "accounts": event.get("p_any_aws_account_ids"),
        "arns": event.get("p_any_aws_arns"),
        "office": event.deep_get("p_enrichment", "corp_ranges", "p_any_ip_addresses"),
    }
