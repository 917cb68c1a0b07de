def rule(event):
    return event.get("x") == 1


def title(event):
    raise ValueError("no title for " + str(event.get("x")))
