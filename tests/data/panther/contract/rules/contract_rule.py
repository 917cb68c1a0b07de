import json

from contract_helpers import actor
from panther_core import PantherEvent
from panther_core.immutable import ImmutableCaseInsensitiveDict, ImmutableList
from panther_detection_helpers.caching import get_counter

LIMIT = 3


def rule(event):
    assert isinstance(event, PantherEvent)
    kind = event.get("KIND")  # found case-insensitively as "kind"
    if kind == "udm":
        return event.udm("actor_user") == "alice" and event.udm("source_ip") == "10.0.0.1" \
            and event.udm_path("actor_user") == "actor.login"
    if kind == "walk":
        return event.deep_walk("items", "name") == ["a", "b"] and event.deep_walk("items", "name", return_val="last") == "b"
    if kind == "types":
        nested = event["nested"]
        return (isinstance(nested, ImmutableCaseInsensitiveDict) and isinstance(event["list"], ImmutableList)
                and event["list"] == [1, 2] and isinstance(event["big"], int) and event["big"] > 2 ** 53
                and event["flag"] == "off" and event.to_dict()["nested"] == {"a": 1}
                and event["p_enrichment"]["tor"]["ip"]["p_match"] == "1.2.3.4")
    if kind == "mocked":
        return get_counter("x") > LIMIT
    if kind == "not_bool":
        return 1
    return actor(event) == "alice"


def title(event):
    return f"{actor(event)} did {event.get('kind')}"


def alert_context(event):
    if event.get("kind") == "bad_context":
        return {"value": float("nan")}
    return {"event": event["nested"] if "nested" in event else {}, "list": event.get("list")}


def severity(event):
    return "DEFAULT"
