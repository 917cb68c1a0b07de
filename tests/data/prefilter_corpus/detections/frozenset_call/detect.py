BAD_AGENTS = frozenset(["sqlmap", "nikto", "masscan"])


def detect(r):
    return r.deepget("user_agent.name") in BAD_AGENTS
