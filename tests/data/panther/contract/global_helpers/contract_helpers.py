"""A global helper, importable by its GlobalID."""


def actor(event):
    return event.deep_get("actor", "login", default="<unknown>")
