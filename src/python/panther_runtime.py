"""Panther-format rules inside Ravenwatch: the event classes, data models,
the `panther_core` and `panther_detection_helpers.caching` modules, and the
test runner. Written from Ravenwatch's contract (`CONTRACT.md` of issue 18:
observed behaviour of Panther's tool), not from Panther's AGPL libraries.

The engine registers this module's classes as `panther_core` and
`panther_core.immutable`, and `CACHING` as
`panther_detection_helpers.caching`, so rules import ours.
"""
import collections.abc as cabc
import contextlib
import copy
import importlib.abc
import importlib.util
import io
import json
import sys
import time
import traceback
import types
from datetime import datetime, timezone

_MISSING = object()


def _wrap(value):
    if isinstance(value, dict):
        return ImmutableCaseInsensitiveDict(value)
    if isinstance(value, list):
        return ImmutableList(value)
    return value


def _raw(value):
    """Plain data under any wrapper (for comparisons and JSON)."""
    if isinstance(value, ImmutableCaseInsensitiveDict):
        return value._rw_data
    if isinstance(value, ImmutableList):
        return value._rw_data
    return value


class ImmutableList(cabc.Sequence):
    """A read-only list whose items come back wrapped; equal to a list or
    tuple with equal items."""

    def __init__(self, data):
        self._rw_data = list(data)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImmutableList(self._rw_data[index])
        return _wrap(self._rw_data[index])

    def __len__(self):
        return len(self._rw_data)

    def __eq__(self, other):
        if isinstance(other, (ImmutableList, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        return repr(self._rw_data)

    def copy(self):
        return copy.deepcopy(self._rw_data)


class ImmutableCaseInsensitiveDict(cabc.Mapping):
    """A read-only mapping: a key is found exactly or, failing that, by a
    case-insensitive match (the first such key in document order)."""

    def __init__(self, data):
        self._rw_data = data
        self._rw_lower = None

    def _rw_key(self, key):
        try:
            if key in self._rw_data:
                return key
        except TypeError:
            return _MISSING
        if not isinstance(key, str):
            return _MISSING
        if self._rw_lower is None:
            lower = {}
            for k in self._rw_data:
                if isinstance(k, str):
                    lower.setdefault(k.lower(), k)
            self._rw_lower = lower
        return self._rw_lower.get(key.lower(), _MISSING)

    def __getitem__(self, key):
        found = self._rw_key(key)
        if found is _MISSING:
            raise KeyError(key)
        return _wrap(self._rw_data[found])

    def __contains__(self, key):
        return self._rw_key(key) is not _MISSING

    def get(self, key, default=None):
        found = self._rw_key(key)
        return default if found is _MISSING else _wrap(self._rw_data[found])

    def __iter__(self):
        return iter(self._rw_data)

    def __len__(self):
        return len(self._rw_data)

    def __repr__(self):
        return repr(self._rw_data)

    def deep_get(self, *keys, default=None):
        """Walks mappings with `.get`; a non-mapping on the way or a final
        None gives `default`."""
        value = self
        for key in keys:
            if not isinstance(value, cabc.Mapping):
                return default
            value = value.get(key)
            if value is None:
                return default
        return value

    def to_dict(self):
        return copy.deepcopy(self._rw_data)

    def copy(self):
        return copy.deepcopy(self._rw_data)


def _path_value(data, parts):
    """A data model `Path` on the raw event: case-sensitive, objects only."""
    value = data
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


class DataModel:
    """The mappings of one data model: name (lower case) → Path parts or a
    method of the data model's module."""

    def __init__(self, mappings):
        self.mappings = mappings  # name -> [("path", parts) | ("method", fn)]


class PantherEvent(ImmutableCaseInsensitiveDict):
    """The event a Panther rule receives."""

    def __init__(self, data, data_model=None):
        super().__init__(data)
        self._rw_model = data_model

    def udm(self, *names, default=None):
        model = self._rw_model
        if len(names) == 1 and model is not None and isinstance(names[0], str):
            mapped = model.mappings.get(names[0].lower())
            if mapped:
                for kind, target in mapped:
                    if kind == "path":
                        value = _path_value(self._rw_data, target)
                        if value is not _MISSING:
                            return _wrap(value)
                for kind, target in mapped:
                    if kind == "method":
                        return _wrap(target(ImmutableCaseInsensitiveDict(self._rw_data)))
                return default
        for found in (self.deep_get("p_udm", *names), self.deep_get(*names)):
            if found:
                return found
        return default

    def udm_path(self, name):
        model = self._rw_model
        if model is None:
            raise ValueError("udm_path needs a data model for this event's log type")
        for kind, target in model.mappings.get(str(name).lower(), []):
            if kind == "path":
                return ".".join(target)
            return getattr(target, "__name__", None)
        return None

    def deep_walk(self, *keys, default=None, return_val="all"):
        found = []

        def add(value):
            if isinstance(value, list):
                for item in value:
                    add(item)
            elif value is not None and value not in found:
                found.append(value)

        def walk(value, rest):
            if not rest:
                add(value)
            elif isinstance(value, dict):
                if rest[0] in value:
                    walk(value[rest[0]], rest[1:])
            elif isinstance(value, list):
                for item in value:
                    walk(item, rest)

        walk(self._rw_data, list(keys))
        if not found:
            return default
        if return_val == "first":
            return found[0]
        if return_val == "last":
            return found[-1]
        return found[0] if len(found) == 1 else found

    def lookup(self, table, key):
        return self.deep_get("_mocked_lookup_data_", table, key)

    def event_time_epoch(self):
        text = self._rw_data.get("p_event_time")
        try:
            when = datetime.fromisoformat(str(text).replace("Z", "+00:00").replace(" ", "T"))
        except (TypeError, ValueError):
            return 0
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp())

    def raw_view(self):
        return self._rw_data


# ---- panther_detection_helpers.caching -----------------------------------------

class KeyValueStore:
    """Counters, string sets and dictionaries with a per-key expiry (epoch
    seconds), as Panther's caching helpers keep them. `run` loads and saves
    it with the run's state; tests get an empty one."""

    def __init__(self):
        self.items = {}  # key -> (value, expires_at or None)

    def get(self, key):
        found = self.items.get(key)
        if found is None:
            return None
        value, expires = found
        if expires is not None and expires <= time.time():
            del self.items[key]
            return None
        return value

    def put(self, key, value, expires=None):
        current = self.items.get(key)
        self.items[key] = (value, expires if expires is not None else (current[1] if current else None))


STORE = KeyValueStore()
_DEFAULT_TTL = 90 * 24 * 3600


def _expiry(epoch_seconds):
    # Panther reads an expiry under 7 days as seconds from now.
    if epoch_seconds is None:
        return time.time() + _DEFAULT_TTL
    epoch_seconds = float(epoch_seconds)
    return time.time() + epoch_seconds if epoch_seconds < 7 * 24 * 3600 else epoch_seconds


def get_counter(key, force_ttl_check=False):
    return int(STORE.get(("counter", key)) or 0)


def increment_counter(key, val=1, epoch_seconds=None):
    value = get_counter(key) + int(val)
    STORE.put(("counter", key), value, _expiry(epoch_seconds))
    return value


def reset_counter(key):
    STORE.put(("counter", key), 0)


def set_key_expiration(key, epoch_seconds):
    for kind in ("counter", "set", "dict"):
        current = STORE.items.get((kind, key))
        if current is not None:
            STORE.items[(kind, key)] = (current[0], float(epoch_seconds))


def get_string_set(key, force_ttl_check=False):
    return set(STORE.get(("set", key)) or [])


def put_string_set(key, val, epoch_seconds=None):
    STORE.put(("set", key), sorted(set(val)), _expiry(epoch_seconds))


def add_to_string_set(key, val, epoch_seconds=None):
    items = get_string_set(key)
    items.update([val] if isinstance(val, str) else val)
    put_string_set(key, items, epoch_seconds)
    return items


def remove_from_string_set(key, val):
    items = get_string_set(key)
    items.difference_update([val] if isinstance(val, str) else val)
    STORE.put(("set", key), sorted(items))
    return items


def reset_string_set(key):
    STORE.put(("set", key), [])


def get_dictionary(key, force_ttl_check=False):
    return dict(STORE.get(("dict", key)) or {})


def put_dictionary(key, val, epoch_seconds=None):
    STORE.put(("dict", key), dict(val), _expiry(epoch_seconds))


def ttl_expired(response):
    expires = (response or {}).get("expiresAt")
    return expires is not None and float(expires) <= time.time()


def check_account_age(key):
    return bool(get_string_set(key))


def evaluate_threshold(key, threshold=10, expiry_seconds=3600):
    return increment_counter(key, 1, expiry_seconds) >= threshold


CACHING_NAMES = [
    "get_counter", "increment_counter", "reset_counter", "set_key_expiration",
    "get_string_set", "put_string_set", "add_to_string_set", "remove_from_string_set",
    "reset_string_set", "get_dictionary", "put_dictionary", "evaluate_threshold",
    "check_account_age", "ttl_expired",
]


def install_modules():
    """Registers `panther_core`, `panther_core.immutable`,
    `panther_detection_helpers` and `.caching` (ours, shadowing any installed
    copy)."""
    core = types.ModuleType("panther_core")
    core.PantherEvent = PantherEvent
    core.__path__ = []
    immutable = types.ModuleType("panther_core.immutable")
    immutable.ImmutableCaseInsensitiveDict = ImmutableCaseInsensitiveDict
    immutable.ImmutableList = ImmutableList
    core.immutable = immutable
    helpers = types.ModuleType("panther_detection_helpers")
    helpers.__path__ = []
    caching = types.ModuleType("panther_detection_helpers.caching")
    for name in CACHING_NAMES:
        setattr(caching, name, globals()[name])
    helpers.caching = caching
    sys.modules.update({
        "panther_core": core, "panther_core.immutable": immutable,
        "panther_detection_helpers": helpers, "panther_detection_helpers.caching": caching,
    })


# ---- loading ---------------------------------------------------------------------

class GlobalFinder(importlib.abc.MetaPathFinder):
    """Global helpers, importable as top-level modules named by `GlobalID`."""

    def __init__(self, files):
        self.files = files  # name -> path

    def find_spec(self, name, path=None, target=None):
        file = self.files.get(name)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(name, file)


_FINDER = None


def set_globals(files):
    """Makes `{GlobalID: path}` importable (replacing an earlier set)."""
    global _FINDER
    if _FINDER is not None and _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in files:
        sys.modules.pop(name, None)
    _FINDER = GlobalFinder(dict(files))
    sys.meta_path.insert(0, _FINDER)


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_data_model(module_name, path, mappings):
    """A DataModel from its `Mappings` (`[(name, kind, target)]`, kind
    "path" or "method") and its module (`path`, may be None)."""
    module = load_module(module_name, path) if path else None
    table = {}
    for name, kind, target in mappings:
        if kind == "path":
            text = target[2:] if target.startswith("$.") else target.lstrip("$")
            entry = ("path", [p for p in text.split(".") if p])
        else:
            fn = getattr(module, target, None) if module else None
            if fn is None:
                raise AttributeError(f"data model method `{target}` is not defined in {path}")
            entry = ("method", fn)
        table.setdefault(name.lower(), []).append(entry)
    return DataModel(table)


# ---- running test cases ------------------------------------------------------------

AUX = ("title", "description", "reference", "severity", "runbook", "destinations",
       "dedup", "alert_context", "unique")
SEVERITIES = {"INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL", "DEFAULT"}


def _json_default(value):
    if isinstance(value, (ImmutableCaseInsensitiveDict, ImmutableList)):
        return _raw(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def check_result(name, value):
    """Why `value` is not what Panther accepts from function `name`, or None."""
    if name in ("title", "description", "reference", "runbook", "dedup", "unique"):
        if not isinstance(value, str):
            return f"{name}() returned {type(value).__name__}, expected str"
    elif name == "severity":
        if not isinstance(value, str) or value.upper() not in SEVERITIES:
            return f"severity() returned {value!r}, expected one of {', '.join(sorted(SEVERITIES))}"
    elif name == "alert_context":
        if not isinstance(value, cabc.Mapping):
            return f"alert_context() returned {type(value).__name__}, expected a mapping"
        try:
            json.dumps(value, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as e:
            return f"alert_context() is not JSON: {e}"
    elif name == "destinations":
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(v, (str, bool)) for v in value)):
            return f"destinations() returned {value!r}, expected None or a list of str"
    return None


def _traceback(e):
    """The traceback from the rule's own frames on (the runner's left out)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == "<ravenwatch.panther>":
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def _call(fn, event, out):
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return fn(event)


def run_case(module, data_model, log, expected, mocks):
    """One case: (passed, [errors], rule's result or None). `mocks`:
    [(name, return value)]."""
    from unittest.mock import MagicMock
    errors = []
    saved = []
    for name, value in mocks:
        if not hasattr(module, name):
            for attr, old in reversed(saved):
                setattr(module, attr, old)
            return False, [f"mock `{name}`: the rule module has no such name"], None
        saved.append((name, getattr(module, name)))
        setattr(module, name, MagicMock(return_value=value))
    out = io.StringIO()
    try:
        event = PantherEvent(log, data_model)
        try:
            result = _call(module.rule, event, out)
        except Exception as e:  # noqa: BLE001 - reported with its traceback
            return False, [f"rule() raised {type(e).__name__}: {e}\n{_traceback(e)}"], None
        if not isinstance(result, bool):
            return False, [f"rule() returned {type(result).__name__} ({result!r}), expected bool"], None
        for name in AUX:
            fn = getattr(module, name, None)
            if fn is None or not callable(fn):
                continue
            try:
                problem = check_result(name, _call(fn, event, out))
            except Exception as e:  # noqa: BLE001 - reported with its traceback
                problem = f"{name}() raised {type(e).__name__}: {e}\n{_traceback(e)}"
            if problem:
                errors.append(problem)
        if result != expected:
            return False, [f"rule() returned {result}, expected {expected}"] + (errors if expected else []), result
        # A non-match ignores the other functions' errors.
        return ((not errors) if expected else True), (errors if expected else []), result
    finally:
        for name, old in reversed(saved):
            setattr(module, name, old)


def run_rules(payload):
    """Runs every case of every rule in `payload` (JSON text):
    {"globals": {id: path}, "data_models": [{"id", "log_types", "file",
    "mappings"}], "rules": [{"id", "file", "cases": [{"name", "expected",
    "log", "mocks"}]}]}. Returns JSON: per rule, per case [passed, errors,
    seconds] (or the rule's load error)."""
    spec = json.loads(payload)
    install_modules()
    set_globals(spec["globals"])
    models = {}
    model_errors = []
    for dm in spec["data_models"]:
        try:
            loaded = load_data_model(f"_rw_datamodel_{dm['id']}", dm.get("file"),
                                     [tuple(m) for m in dm["mappings"]])
        except Exception as e:  # noqa: BLE001 - reported per affected case
            model_errors.append(f"data model {dm['id']}: {type(e).__name__}: {e}")
            continue
        for log_type in dm["log_types"]:
            models[log_type] = loaded
    results = []
    for n, rule in enumerate(spec["rules"]):
        try:
            module = load_module(f"_rw_panther_rule_{n}", rule["file"])
            if not callable(getattr(module, "rule", None)):
                raise AttributeError("the rule file defines no rule(event) function")
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a broken rule fails its cases
            text = "".join(traceback.format_exception(e))
            results.append({"load_error": f"cannot load {rule['file']}: {text}"})
            continue
        cases = []
        for case in rule["cases"]:
            started = time.perf_counter()
            log = case["log"]
            model = models.get(log.get("p_log_type")) if isinstance(log, dict) else None
            if not isinstance(log, dict):
                passed, errors, matched = False, ["Log is not a mapping"], None
            else:
                passed, errors, matched = run_case(module, model, log, case["expected"],
                                                   [tuple(m) for m in case["mocks"]])
            cases.append([passed, errors, time.perf_counter() - started, matched])
        results.append({"cases": cases})
    return json.dumps({"rules": results, "warnings": model_errors})
