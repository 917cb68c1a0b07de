def get_source(event):
    return event.get("SRC", {}).get("addr")
