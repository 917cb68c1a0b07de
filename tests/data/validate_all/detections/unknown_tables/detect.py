from ravenwatch.enrichment import known_ips, aws_account_info
from matano.enrichment import threat_intel


def detect(r):
    return r.deepget("source.ip") in known_ips
