from ravenwatch.enrichment import aws_account_info


def detect(r):
    if r.deepget("event.action") != "DisableEbsEncryptionByDefault":
        return False
    r.account = aws_account_info.get(r.deepget("cloud.account.id"))
    return r.account is not None and r.account["is_production"]


def title(r):
    return f"EBS default encryption disabled in {r.account['name']} ({r.account['account_id']})"


def alert_context(r):
    return {
        "account": r.account,
        "actor": r.deepget("user.name"),
        "region": r.deepget("cloud.region"),
        "user_agent": r.deepget("user_agent.original"),
    }


def dedupe(r):
    return r.deepget("cloud.account.id")
