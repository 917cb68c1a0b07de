"""Helpers the corpus rules call: one-return and multi-statement."""

ADMIN_PREFIXES = ("Admin", "Root")


def is_admin_action(r):
    return r.deepget("event.action", "").startswith(ADMIN_PREFIXES)


def risky_port(r):
    port = r.deepget("destination.port")
    if port in (22, 23, 3389):
        return True
    return False
