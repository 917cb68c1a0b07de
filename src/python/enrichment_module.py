"""`ravenwatch.enrichment` (also `matano.enrichment`): the project's tables,
published by the engine as attributes and in TABLES."""
TABLES = {}

def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    known = ", ".join(sorted(TABLES)) or "(none)"
    error = ImportError(f"enrichment table '{name}' is not defined; known tables: {known}", name=name)
    # Read by the engine: this import failed because the table is unknown.
    error.ravenwatch_unknown_table = name
    raise error

def __dir__():
    return sorted(TABLES)
