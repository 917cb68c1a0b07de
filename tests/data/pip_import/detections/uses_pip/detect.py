import pip
import venv_only_module
from matano.enrichment import known_ip_info


def detect(r):
    return r.deepget("event.outcome") == "failure"


def alert_context(r):
    return {
        "pip_file": pip.__file__,
        "venv_marker": venv_only_module.MARKER,
        "known": known_ip_info.get(r.deepget("source.ip")),
        "undeclared": r.deepget("user_agent.original", "none"),
    }
