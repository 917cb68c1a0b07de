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
import os
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
        value._rw_fill()
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
        self._rw_children = None

    def _rw_child(self, key, value):
        """`value` (found under `key`) as rules see it: nested objects are
        wrapped once and kept, so their case-insensitive index is built once
        per event however many rules read them."""
        cls = type(value)
        if cls is dict:
            children = self._rw_children
            if children is None:
                children = self._rw_children = {}
            wrapped = children.get(key)
            if wrapped is None:
                wrapped = children[key] = ImmutableCaseInsensitiveDict(value)
            return wrapped
        if cls is list:
            return ImmutableList(value)
        return _wrap(value)

    def _rw_fill(self):
        """Adds fields computed on demand (see `PantherEvent`)."""

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
        data = self._rw_data
        try:
            value = data[key]
        except (KeyError, TypeError):
            key = self._rw_key(key)
            if key is _MISSING:
                raise KeyError(key) from None
            value = data[key]
        return self._rw_child(key, value)

    def __contains__(self, key):
        try:
            if key in self._rw_data:
                return True
        except TypeError:
            return False
        return self._rw_key(key) is not _MISSING

    def get(self, key, default=None):
        # The exact key first (the common case), then a case-insensitive match.
        data = self._rw_data
        try:
            value = data[key]
        except (KeyError, TypeError):
            key = self._rw_key(key)
            if key is _MISSING:
                return default
            value = data[key]
        cls = type(value)
        if cls is dict or cls is list:
            return self._rw_child(key, value)
        return value

    def __iter__(self):
        return iter(self._rw_data)

    def __len__(self):
        return len(self._rw_data)

    def __repr__(self):
        return repr(self._rw_data)

    def deep_get(self, *keys, default=None):
        """Walks mappings with `.get`; a non-mapping on the way or a final
        None gives `default`."""
        return _deep_get_wrapped(self, keys, default)

    def to_dict(self):
        return copy.deepcopy(self._rw_data)

    def copy(self):
        return copy.deepcopy(self._rw_data)


def _deep_get_wrapped(value, keys, default):
    for key in keys:
        if not isinstance(value, cabc.Mapping):
            return default
        value = value.get(key)
        if value is None:
            return default
    return value


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
    """The event a Panther rule receives. In `run`, the fields Panther's
    pipeline computes (`p_event_time`, `p_parse_time`, `p_any_*`) are added
    when first needed: a `p_` key read, iteration, a copy, a data model
    lookup. Most rules never read them, and computing them costs more than
    most rules."""

    def __init__(self, data, data_model=None, pending=None):
        super().__init__(data)
        self._rw_model = data_model
        self._rw_pending = pending  # (log type, event time µs) until filled

    def _rw_fill(self):
        pending = self._rw_pending
        if pending is None:
            return
        self._rw_pending = None
        log_type, time_us = pending
        data = self._rw_data
        data.setdefault("p_event_time", _p_time(time_us))
        data.setdefault("p_parse_time", _p_time(time.time() * 1e6))
        for name, values in indicators(log_type, data).items():
            data.setdefault(name, values)
        self._rw_lower = None

    def _rw_wants(self, key):
        if self._rw_pending is not None and isinstance(key, str) and key[:2] in ("p_", "P_"):
            self._rw_fill()

    def get(self, key, default=None):
        # ImmutableCaseInsensitiveDict.get, inlined: the hottest call of all.
        if self._rw_pending is not None and type(key) is str and key[:2] in ("p_", "P_"):
            self._rw_fill()
        data = self._rw_data
        try:
            value = data[key]
        except (KeyError, TypeError):
            key = self._rw_key(key)
            if key is _MISSING:
                return default
            value = data[key]
        cls = type(value)
        if cls is dict or cls is list:
            return self._rw_child(key, value)
        return value

    def __getitem__(self, key):
        self._rw_wants(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self._rw_wants(key)
        return super().__contains__(key)

    def deep_get(self, *keys, default=None):
        if keys:
            self._rw_wants(keys[0])
        return super().deep_get(*keys, default=default)

    def __iter__(self):
        self._rw_fill()
        return super().__iter__()

    def __len__(self):
        self._rw_fill()
        return super().__len__()

    def __repr__(self):
        self._rw_fill()
        return super().__repr__()

    def to_dict(self):
        self._rw_fill()
        return super().to_dict()

    def copy(self):
        self._rw_fill()
        return super().copy()

    def udm(self, *names, default=None):
        if self._rw_pending is not None and self._rw_udm_needs_fill(names):
            self._rw_fill()
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

    def _rw_udm_needs_fill(self, names):
        """Whether resolving `names` may read a computed `p_` field."""
        model = self._rw_model
        if model is None or len(names) != 1 or not isinstance(names[0], str):
            return True
        for kind, target in model.mappings.get(names[0].lower(), ()):
            if kind != "path" or (target and target[0][:2] in ("p_", "P_")):
                return True
        return False

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
        self._rw_fill()
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
        self._rw_fill()
        text = self._rw_data.get("p_event_time")
        try:
            when = datetime.fromisoformat(str(text).replace("Z", "+00:00").replace(" ", "T"))
        except (TypeError, ValueError):
            return 0
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp())

    def raw_view(self):
        self._rw_fill()
        return self._rw_data


# ---- panther_detection_helpers.caching -----------------------------------------

class KeyValueStore:
    """Counters, string sets and dictionaries with a per-key expiry (epoch
    seconds), as Panther's caching helpers keep them. Tests get this empty
    in-memory store; `run` replaces it with a `FileStore`."""

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

    def update(self, key, change, expires=None):
        """Sets `key` to `change(current value or None)`; `expires` None
        keeps the key's expiry. Returns the new value."""
        current = self.items.get(key)
        value = change(self.get(key))
        self.items[key] = (value, expires if expires is not None else (current[1] if current else None))
        return value

    def set_expiry(self, kind_keys, expires):
        for key in kind_keys:
            current = self.items.get(key)
            if current is not None:
                self.items[key] = (current[0], expires)


class FileStore:
    """The store of `ravenwatch run`: an SQLite file (Python's own sqlite3)
    the engine copies from `<storage>/state/` before the run and commits
    with the run's state, shared by the run's worker processes. Each change
    is one transaction (BEGIN IMMEDIATE), so counters add up across
    workers. The file is the run's private copy: durability comes from the
    engine's commit, not from fsync."""

    def __init__(self, path):
        import sqlite3
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        # A rollback journal, not WAL: every committed change is in the
        # file itself when the workers exit.
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (kind TEXT, key TEXT, value TEXT, "
                        "expires REAL, PRIMARY KEY (kind, key))")

    def _read(self, key):
        row = self.db.execute("SELECT value, expires FROM kv WHERE kind=? AND key=?",
                              (key[0], str(key[1]))).fetchone()
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None, None
        return json.loads(row[0]), row[1]

    def get(self, key):
        return self._read(key)[0]

    def update(self, key, change, expires=None):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            current, old_expiry = self._read(key)
            value = change(current)
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)",
                            (key[0], str(key[1]), json.dumps(value),
                             expires if expires is not None else old_expiry))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return value

    def set_expiry(self, kind_keys, expires):
        for kind, key in kind_keys:
            self.db.execute("UPDATE kv SET expires=? WHERE kind=? AND key=?",
                            (expires, kind, str(key)))


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
    return STORE.update(("counter", key), lambda old: int(old or 0) + int(val),
                        _expiry(epoch_seconds))


def reset_counter(key):
    STORE.update(("counter", key), lambda old: 0)


def set_key_expiration(key, epoch_seconds):
    STORE.set_expiry([(kind, key) for kind in ("counter", "set", "dict")], float(epoch_seconds))


def get_string_set(key, force_ttl_check=False):
    return set(STORE.get(("set", key)) or [])


def put_string_set(key, val, epoch_seconds=None):
    STORE.update(("set", key), lambda old: sorted(set(val)), _expiry(epoch_seconds))


def add_to_string_set(key, val, epoch_seconds=None):
    added = [val] if isinstance(val, str) else list(val)
    return set(STORE.update(("set", key), lambda old: sorted(set(old or []) | set(added)),
                            _expiry(epoch_seconds)))


def remove_from_string_set(key, val):
    gone = {val} if isinstance(val, str) else set(val)
    return set(STORE.update(("set", key), lambda old: sorted(set(old or []) - gone)))


def reset_string_set(key):
    STORE.update(("set", key), lambda old: [])


def get_dictionary(key, force_ttl_check=False):
    return dict(STORE.get(("dict", key)) or {})


def put_dictionary(key, val, epoch_seconds=None):
    STORE.update(("dict", key), lambda old: dict(val), _expiry(epoch_seconds))


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


# ---- Panther rules in `ravenwatch run` ------------------------------------------------

# Which fields feed the indicator fields Panther's parsers compute, per log
# type (`[*]` walks a list): `{log_type: {p_any_…: [paths]}}`, from the
# engine's table (config::INDICATORS), set by `prepare_run`.
INDICATORS = {}


def _values_at(data, path):
    """Every scalar value at `path` (dotted, `[*]` over lists)."""
    values = [data]
    for part in path.split("."):
        many = part.endswith("[*]")
        name = part[:-3] if many else part
        nxt = []
        for v in values:
            if isinstance(v, dict) and name in v:
                got = v[name]
                if many and isinstance(got, list):
                    nxt.extend(got)
                elif not many:
                    nxt.append(got)
        values = nxt
    return [v for v in values if isinstance(v, (str, int)) and not isinstance(v, bool) and v != ""]


def _is_ip(text):
    parts = text.split(".")
    if len(parts) == 4:
        # As ipaddress: ASCII digits, no leading zero, each at most 255.
        return all(p.isascii() and p.isdigit() and len(p) <= 3 and (p == "0" or p[0] != "0")
                   and int(p) <= 255 for p in parts)
    if ":" not in text:
        return False
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _indicator_ok(name, value):
    if name == "p_any_ip_addresses":
        return isinstance(value, str) and _is_ip(value)
    if name == "p_any_domain_names":
        return (isinstance(value, str) and "." in value and not _is_ip(value)
                and " " not in value and value.endswith(tuple("abcdefghijklmnopqrstuvwxyz")))
    if name == "p_any_emails":
        return isinstance(value, str) and "@" in value
    if name == "p_any_aws_account_ids":
        return str(value).isdigit() and len(str(value)) == 12
    if name == "p_any_aws_arns":
        return isinstance(value, str) and value.startswith("arn:")
    return isinstance(value, str)


def indicators(log_type, data):
    """`{p_any_*: sorted distinct values}` for the log type's known fields."""
    out = {}
    for name, paths in INDICATORS.get(log_type, {}).items():
        found = set()
        for path in paths:
            for value in _values_at(data, path):
                if _indicator_ok(name, value):
                    found.add(str(value))
        if found:
            out[name] = sorted(found)
    return out


_RUN = {"spec": None, "models": {}, "log_types": {}, "lookup_names": {}, "selector_names": {}}
_EVENTS = {}
_EVENTS_BATCH = [None]
_EVENT_CACHE_LIMIT = 50_000


def prepare_run(spec_text):
    """Once per interpreter: our modules, the global helpers, the data
    models, the table → log type map and the caching store (the file the
    engine names in RAVENWATCH_PANTHER_KV, else in memory)."""
    global STORE
    if _RUN["spec"] == spec_text:
        return
    spec = json.loads(spec_text)
    install_modules()
    set_globals(spec["globals"])
    models = {}
    for dm in spec["data_models"]:
        loaded = load_data_model(f"_rw_datamodel_{dm['id']}", dm.get("file"),
                                 [tuple(m) for m in dm["mappings"]])
        for log_type in dm["log_types"]:
            models[log_type] = loaded
    kv_file = os.environ.get("RAVENWATCH_PANTHER_KV")
    if kv_file:
        STORE = FileStore(kv_file)
    INDICATORS.clear()
    for log_type, name, paths in spec["indicators"]:
        INDICATORS.setdefault(log_type, {})[name] = paths
    _RUN.update(spec=spec_text, models=models, log_types=dict(spec["log_types"]),
                lookup_names=dict(spec["lookup_names"]),
                selector_names={(n["log_table"], n["table"], n["field"]): n["name"]
                                for n in spec["selector_names"]})


def _p_time(micros):
    when = datetime.fromtimestamp(micros / 1e6, tz=timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f") + "000"


def _p_enrichment(r, data, log_table):
    """`p_enrichment.<table>.<selector>`: the rows the log table's selectors
    found, each with `p_match` = the value looked up (contract §5). Tables
    and selectors are named as the Panther lookup table names them; a
    `p_any_*` selector (several fields) gives a list of rows."""
    found = r.enrichment
    if not found:
        return None
    out = {}
    for table, fields in found.items():
        name = _RUN["lookup_names"].get(table, table)
        for field, rows in fields.items():
            selector = _RUN["selector_names"].get((log_table, table, field), field)
            got = data
            for part in field.split("."):
                got = got.get(part) if isinstance(got, dict) else None
            if isinstance(rows, list):
                # The hits of a list field leave its misses out: probe
                # again to pair each row with its value.
                values = [v for v in (got if isinstance(got, list) else [got]) if v is not None]
                tables = sys.modules.get("ravenwatch.enrichment")
                probe = getattr(tables, table, None)
                if probe is not None:
                    values = [v for v in values if probe.get(v) is not None]
                rows = [dict(row, p_match=values[i] if i < len(values) else None)
                        for i, row in enumerate(rows)]
            else:
                rows = dict(rows, p_match=got)
            per_table = out.setdefault(name, {})
            if selector.startswith("p_any_"):
                per_table.setdefault(selector, []).extend(rows if isinstance(rows, list) else [rows])
            else:
                per_table[selector] = rows
    return out


def event_of(r):
    """The PantherEvent of record `r`: parsed once per event (shared by the
    rules of the run), with `p_log_type`, `p_event_time`, `p_parse_time`,
    `p_any_*` and `p_enrichment` added where the event has none."""
    place = r._place
    event = _EVENTS.get(place)
    if event is not None:
        return event
    batch = r._batch
    if batch != _EVENTS_BATCH[0] or len(_EVENTS) >= _EVENT_CACHE_LIMIT:
        # Rules run batch by batch: events of an earlier batch are not
        # asked for again, and holding them makes every full GC walk them.
        _EVENTS.clear()
        _EVENTS_BATCH[0] = batch
    data = json.loads(r._text)
    if not isinstance(data, dict):
        data = {"value": data}
    log_type = _RUN["log_types"].get(place[0])
    if log_type:
        data.setdefault("p_log_type", log_type)
    if "p_enrichment" not in data:
        enrichment = _p_enrichment(r, data, place[0])
        if enrichment:
            data["p_enrichment"] = enrichment
    event = PantherEvent(data, _RUN["models"].get(data.get("p_log_type")),
                         pending=(log_type, r._time_us))
    _EVENTS[place] = event
    return event


_CONDITIONS = {
    "Equals": lambda v, x: v == x,
    "DoesNotEqual": lambda v, x: v != x,
    "GreaterThan": lambda v, x: v is not None and v > x,
    "IsGreaterThan": lambda v, x: v is not None and v > x,
    "GreaterThanOrEqual": lambda v, x: v is not None and v >= x,
    "LessThan": lambda v, x: v is not None and v < x,
    "IsLessThan": lambda v, x: v is not None and v < x,
    "LessThanOrEqual": lambda v, x: v is not None and v <= x,
    "Contains": lambda v, x: v is not None and x in v,
    "DoesNotContain": lambda v, x: v is None or x not in v,
    "StartsWith": lambda v, x: isinstance(v, str) and v.startswith(x),
    "EndsWith": lambda v, x: isinstance(v, str) and v.endswith(x),
    "IsIn": lambda v, x: v in x,
    "IsNotIn": lambda v, x: v not in x,
    "IsNull": lambda v, x: v is None,
    "IsNotNull": lambda v, x: v is not None,
    "IsNullOrEmpty": lambda v, x: v is None or v in ("", [], {}),
    "IsNotNullOrEmpty": lambda v, x: not (v is None or v in ("", [], {})),
    "IsIPAddressInCIDR": lambda v, x: _in_cidr(v, x),
    "IsIPAddressNotInCIDR": lambda v, x: v is not None and not _in_cidr(v, x),
    "IsIPAddressPrivate": lambda v, x: _ip_flag(v, "is_private"),
    "IsIPAddressPublic": lambda v, x: _ip_flag(v, "is_global"),
}


def _in_cidr(value, cidrs):
    import ipaddress
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        return False
    cidrs = cidrs if isinstance(cidrs, list) else [cidrs]
    return any(ip in ipaddress.ip_network(str(c), strict=False) for c in cidrs)


def _ip_flag(value, flag):
    import ipaddress
    try:
        return getattr(ipaddress.ip_address(str(value)), flag)
    except ValueError:
        return False


def compile_filters(spec, where="InlineFilters"):
    """InlineFilters → a predicate over a PantherEvent; an unknown condition
    or shape is an error at load time, naming where it is."""
    if isinstance(spec, list):
        parts = [compile_filters(s, f"{where}[{i}]") for i, s in enumerate(spec)]
        return lambda e: all(p(e) for p in parts)
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping or a list, got {type(spec).__name__}")
    if "All" in spec or "Any" in spec:
        key = "All" if "All" in spec else "Any"
        parts = [compile_filters(s, f"{where}.{key}[{i}]") for i, s in enumerate(spec[key] or [])]
        if key == "All":
            return lambda e: all(p(e) for p in parts)
        return lambda e: not parts or any(p(e) for p in parts)
    condition = spec.get("Condition")
    test = _CONDITIONS.get(condition)
    if test is None or "KeyPath" not in spec:
        known = ", ".join(sorted(_CONDITIONS))
        raise ValueError(f"{where}: unsupported filter {spec!r} (KeyPath with Condition one of {known})")
    path = [p for p in str(spec["KeyPath"]).lstrip("$").split(".") if p]
    expected = spec.get("Values", spec.get("Value"))

    def check(event):
        value = event.deep_get(*path)
        value = _raw(value) if isinstance(value, (ImmutableCaseInsensitiveDict, ImmutableList)) else value
        try:
            return bool(test(value, expected))
        except TypeError:
            return False
    return check


def _text_result(name, value, limit=1000):
    if not isinstance(value, str):
        raise TypeError(f"{name}() returned {type(value).__name__}, expected str")
    return value[:limit]


class RunRule:
    """A Panther rule as Ravenwatch calls a detection: `detect(r)` and the
    alert functions over the record, each given the rule's PantherEvent;
    Panther's names and fallbacks (contract §6) mapped onto Ravenwatch's."""

    def __init__(self, module, rule_id, severity, filters):
        self.module = module
        self.rule_id = rule_id
        self.default_severity = severity
        self.filters = compile_filters(filters) if filters else None
        rule = getattr(module, "rule", None)
        if not callable(rule):
            raise AttributeError("the rule file defines no rule(event) function")
        self.rule = rule
        for name in ("title", "description", "reference", "runbook", "severity",
                     "alert_context", "destinations", "unique"):
            if callable(getattr(module, name, None)):
                setattr(self, name, getattr(self, "_" + name))
        # Always: Panther falls back to the title, then to a default string.
        self.dedupe = self._dedupe

    def detect(self, r):
        event = event_of(r)
        if self.filters is not None and not self.filters(event):
            return False
        # Truthiness, as for native detections (and as derived filters
        # assume); `ravenwatch test` holds rules to Panther's strict bool.
        return bool(self.rule(event))

    def _title(self, r):
        return _text_result("title", self.module.title(event_of(r)))

    def _description(self, r):
        return _text_result("description", self.module.description(event_of(r)))

    def _reference(self, r):
        return _text_result("reference", self.module.reference(event_of(r)))

    def _runbook(self, r):
        return _text_result("runbook", self.module.runbook(event_of(r)))

    def _unique(self, r):
        return _text_result("unique", self.module.unique(event_of(r)))

    def _destinations(self, r):
        return self.module.destinations(event_of(r))

    def _severity(self, r):
        value = self.module.severity(event_of(r))
        if isinstance(value, str) and value.upper() == "DEFAULT":
            return self.default_severity
        return value.lower() if isinstance(value, str) else value

    def _alert_context(self, r):
        value = self.module.alert_context(event_of(r))
        if not isinstance(value, cabc.Mapping):
            raise TypeError(f"alert_context() returned {type(value).__name__}, expected a mapping")
        return json.loads(json.dumps(value, default=_json_default, allow_nan=False))

    def _dedupe(self, r):
        event = event_of(r)
        dedup = getattr(self.module, "dedup", None)
        if callable(dedup):
            value = _text_result("dedup", dedup(event))
            if value:
                return value
        title = getattr(self.module, "title", None)
        if callable(title) and not callable(dedup):
            try:
                value = title(event)
            except Exception:  # noqa: BLE001 - title()'s own call reports it
                value = None
            if isinstance(value, str) and value:
                return value[:1000]
        return f"defaultDedupString:{self.rule_id}"


def load_run_rule(spec_text, index):
    """Loads one Panther rule for `run` (spec: support + file, id, severity,
    inline_filters)."""
    spec = json.loads(spec_text)
    prepare_run(json.dumps(spec["support"], sort_keys=True))
    module = load_module(f"_rw_panther_run_{index}", spec["file"])
    return RunRule(module, spec["id"], spec["severity"], spec.get("inline_filters"))
