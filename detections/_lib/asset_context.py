"""Helpers shared by detections: Axonius asset intelligence as alert context."""

from ravenwatch.enrichment import axonius_assets


def asset_by_ip(ip):
    """The Axonius asset that has `ip` on any of its network interfaces."""
    if not ip:
        return None
    return axonius_assets.get(ip, index_key="network_interfaces_ips")


def asset_summary(asset):
    """What an analyst triaging in Jira wants to see about a device."""
    if asset is None:
        return None
    last_seen = asset.get("last_seen")
    return {
        "hostname": asset["hostname"],
        "last_seen": last_seen.isoformat() if last_seen else None,
        "network_interfaces_ips": asset["network_interfaces_ips"],
        "network_interfaces_macs": asset["network_interfaces_macs"],
        "os": asset["os"],
        "owner": asset["owner"],
    }
