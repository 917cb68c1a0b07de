"""Helpers the engine calls inside the embedded interpreter (loaded as
`_ravenwatch_helpers`; not importable by detections)."""
import ast, copy, gc, importlib, inspect, os, sys
import traceback as _tb

# A rule that fails on many events fails the same way: one formatting per
# (exception type, message, frames) — linecache and traceback formatting
# cost far more than the rule call itself.
_FORMATTED = {}


def format_exception(e, tb):
    key = None
    if e.__cause__ is None and e.__context__ is None:
        try:
            parts = [type(e), str(e)]
        except Exception:  # noqa: BLE001 - a broken __str__ is formatted below
            parts = None
        if parts is not None:
            frame = tb
            while frame is not None:
                parts.append(frame.tb_frame.f_code)
                parts.append(frame.tb_lineno)
                frame = frame.tb_next
            key = tuple(parts)
            text = _FORMATTED.get(key)
            if text is not None:
                return text
    text = "".join(_tb.format_exception(type(e), e, tb)).rstrip()
    if key is not None:
        if len(_FORMATTED) >= 4096:
            _FORMATTED.clear()
        _FORMATTED[key] = text
    return text


def settle():
    """Called once the rules are loaded: what they imported lives for the
    run, so the cyclic collector stops walking it (full collections then
    cost what the events allocate, not the size of boto3)."""
    gc.freeze()

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

def _literal(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

def event_paths(source, filename):
    """Dotted event paths read with literal keys: `x.deepget("a.b")`,
    `deep_get(x, "a", "b")`, `x.deep_get("a", "b")`, and the first step of
    `x.get("a")`, `x["a"]` and `"a" in x` on a name (what a record sees of
    a chain)."""
    tree = ast.parse(source, filename)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func, args = node.func, node.args
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "deepget" and args and _literal(args[0]):
                found.add(_literal(args[0]))
            elif name == "deep_get":
                keys = args if isinstance(func, ast.Attribute) else args[1:]
                parts = [_literal(a) for a in keys]
                if parts and all(parts):
                    found.add(".".join(parts))
            elif (name == "get" and isinstance(func, ast.Attribute)
                  and isinstance(func.value, ast.Name) and args and _literal(args[0])):
                found.add(_literal(args[0]))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            if _literal(node.slice):
                found.add(_literal(node.slice))
        elif (isinstance(node, ast.Compare) and len(node.ops) == 1
              and isinstance(node.ops[0], (ast.In, ast.NotIn))
              and isinstance(node.comparators[0], ast.Name) and _literal(node.left)):
            found.add(_literal(node.left))
    return sorted(found)

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


class RuleTimeout(BaseException):
    """Raised inside a rule call that outlasted its time budget."""


def _on_budget(signum, frame):
    raise RuleTimeout()


def install_budget_handler():
    import signal
    signal.signal(signal.SIGUSR1, _on_budget)


def stop_main():
    """Called by the budget's watchdog thread: stop the main thread's call."""
    import signal, threading
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)


_captured = []


def start_capture():
    """Rule output (print) goes to a buffer until finish_capture()."""
    import io
    _captured.append(sys.stdout)
    sys.stdout = io.StringIO()


def finish_capture():
    text = sys.stdout.getvalue() if hasattr(sys.stdout, "getvalue") else ""
    if _captured:
        sys.stdout = _captured.pop()
    return text
