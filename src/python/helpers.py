"""Helpers the engine calls inside the embedded interpreter (loaded as
`_ravenwatch_helpers`; not importable by detections)."""
import ast, copy, importlib, inspect, os, sys
import traceback as _tb

def format_exception(e, tb):
    return "".join(_tb.format_exception(type(e), e, tb)).rstrip()

def arity_problem(f):
    """Why `f` cannot be called as f(r), or None."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(None)
    except TypeError:
        positional = [p for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return f"must take one argument (the record r), but it takes {len(positional)}"
    return None

def first_line(f):
    code = getattr(f, "__code__", None)
    return code.co_firstlineno if code is not None else None

def table_imports(source, filename):
    """(line, name) of every `from ravenwatch|matano.enrichment import name`."""
    tree = ast.parse(source, filename)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.level == 0
                and node.module in ("ravenwatch.enrichment", "matano.enrichment")):
            found.extend((node.lineno, a.name) for a in node.names if a.name != "*")
    return found

def purge_project_modules(lib_dir):
    """Forgets detection modules and helpers under `lib_dir`, so the next
    import starts from fresh module state."""
    lib_dir = os.path.abspath(lib_dir) + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.startswith("ravenwatch_detection_") or (path and os.path.abspath(path).startswith(lib_dir)):
            del sys.modules[name]
    importlib.invalidate_caches()

def apply_mocks(module, mocks):
    """Replaces names in a detection module: a function by one returning the
    value, anything else by the value. Dotted names reach into objects."""
    for name, value in mocks.items():
        parts = name.split(".")
        target = module
        for i, part in enumerate(parts):
            if not hasattr(target, part):
                where = "the detection module" if i == 0 else "`" + ".".join(parts[:i]) + "`"
                raise LookupError(f"mock `{name}`: {where} has no name `{part}`")
            if i < len(parts) - 1:
                target = getattr(target, part)
        current = getattr(target, parts[-1])
        if callable(current):
            def mocked(*args, _value=value, **kwargs):
                return copy.deepcopy(_value)
            replacement = mocked
        else:
            replacement = value
        setattr(target, parts[-1], replacement)

def error_line(e, tb, filename):
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) and getattr(e, "filename", None) == filename else None
    for frame in _tb.extract_tb(tb):
        if frame.filename == filename:
            line = frame.lineno
    return line
