"""Derives a necessary condition from a rule's `detect(r)` by reading its
code (the `ast`, never running it): a predicate true for every event on
which `detect` could return a truthy value or raise. The engine evaluates it
on whole batches before any Python call, so most events never reach Python.

Each condition in the code becomes three "may" formulas: may be truthy (t),
may be falsy (f), may raise (r). They are built from atoms the engine
evaluates per event with Python's own semantics; an atom it cannot decide
for an event counts as all three. Anything this module does not understand
is "keep" (true, true, true) and noted with its file and line.

Output (JSON-ready): {"keep": formula, "pure": bool, "impure": [note],
"fallbacks": [note]}; formula = true | false |
{"and": [...]} | {"or": [...]} | {"atom": atom, "may": "t"|"f"|"r"}.
"""
import ast
import builtins
import json
import os

# Builtins that neither mutate state nor do I/O.
PURE_BUILTINS = {
    "abs", "all", "any", "bool", "bytes", "chr", "dict", "divmod", "enumerate",
    "filter", "float", "format", "frozenset", "getattr", "hasattr", "hash", "int",
    "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next",
    "ord", "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted",
    "str", "sum", "tuple", "type", "zip", "ValueError", "TypeError", "KeyError",
    "Exception", "None", "True", "False",
}
# Standard modules whose functions are pure, except the names listed.
PURE_MODULES = {
    "re", "ipaddress", "json", "fnmatch", "math", "string", "base64", "hashlib",
    "collections", "itertools", "functools", "operator", "difflib", "urllib",
    "urllib.parse", "datetime", "typing", "copy", "unicodedata", "binascii",
    "textwrap", "shlex", "posixpath", "ntpath", "decimal", "enum", "dataclasses",
    "dateutil", "dateutil.parser",
}
CLOCK_OR_RANDOM = {"now", "utcnow", "today", "time", "monotonic", "perf_counter",
                   "random", "randint", "choice", "uuid1", "uuid4", "urandom"}
IMPURE_MODULES = {"time", "random", "uuid", "os", "sys", "socket", "subprocess",
                  "requests", "urllib3", "http", "boto3", "secrets", "logging",
                  "shutil", "pathlib", "io"}
MUTATORS = {"add", "append", "extend", "insert", "remove", "discard", "pop",
            "popitem", "clear", "update", "setdefault", "sort", "reverse",
            "__setitem__", "__delitem__", "write"}
IMPURE_BUILTINS = {"open", "print", "input", "exec", "eval", "compile",
                   "globals", "locals", "setattr", "delattr", "vars", "__import__",
                   "breakpoint", "exit", "quit"}
ENRICHMENT_MODULES = ("ravenwatch.enrichment", "matano.enrichment")
# Bounds: past them the function (or formula) is "keep".
MAX_STEPS = 4000
MAX_NODES = 3000
MAX_INLINE_DEPTH = 6

KEEP = (True, True, True)


class Bail(Exception):
    """Stop analysing the current function: it is "keep" as a whole."""


# ---- formulas ---------------------------------------------------------------

def _dedupe(parts):
    seen, out = set(), []
    for p in parts:
        key = _key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _combine(op, absorbing, xs):
    """`op` ("and" / "or") of `xs`, flattened, without repeats; `absorbing`
    is the constant that decides it alone."""
    out = []
    for x in xs:
        if x is absorbing:
            return absorbing
        if x is (not absorbing):
            continue
        out.extend(x[op] if isinstance(x, dict) and op in x else [x])
    return _dedupe(out)


def f_and(*xs):
    out = _combine("and", False, xs)
    if out is False:
        return False
    if not out:
        return True
    return out[0] if len(out) == 1 else {"and": out}


def _conjuncts(x):
    return x["and"] if isinstance(x, dict) and "and" in x else [x]


def f_or(*xs):
    out = _combine("or", True, xs)
    if out is True:
        return True
    # Absorption: x OR (x AND y) is x.
    keys = {_key(p) for p in out}
    out = [p for p in out
           if not (len(_conjuncts(p)) > 1 and any(_key(c) in keys for c in _conjuncts(p)))]
    # Factoring: (a AND b) OR (a AND c) is a AND (b OR c), so each event
    # tests `a` once.
    groups = {}
    for p in out:
        groups.setdefault(_key(_conjuncts(p)[0]), []).append(p)
    if any(len(g) > 1 for g in groups.values()):
        factored = []
        for g in groups.values():
            if len(g) == 1:
                factored.append(g[0])
            else:
                head = _conjuncts(g[0])[0]
                rests = [f_and(*_conjuncts(p)[1:]) for p in g]
                factored.append(f_and(head, f_or(*rests)))
        out = _dedupe(factored)
    if not out:
        return False
    return out[0] if len(out) == 1 else {"or": out}


def _key(x):
    return json.dumps(x, sort_keys=True)


def size(f):
    if isinstance(f, bool):
        return 1
    if "and" in f:
        return 1 + sum(size(x) for x in f["and"])
    if "or" in f:
        return 1 + sum(size(x) for x in f["or"])
    return 1


# Atoms that cannot raise for any value Python could see (== never raises
# between builtin types; truthiness and `is None` neither).
NEVER_RAISES = {"truthy", "is_none", "has"}


def atom(spec):
    """The (t, f, r) triple of one atom."""
    raises = not (spec["op"] in NEVER_RAISES
                  or (spec["op"] == "cmp" and spec["cmp"] in ("==", "!=")))
    raises = raises or value_may_raise(spec.get("v"))
    return ({"atom": spec, "may": "t"}, {"atom": spec, "may": "f"},
            {"atom": spec, "may": "r"} if raises else False)


def value_may_raise(v):
    if v is None:
        return False
    if "field" in v:
        return v.get("how") == "item"
    if "lower" in v or "upper" in v:
        return True
    if "or_else" in v:
        return value_may_raise(v["or_else"])
    return False


def t_not(c):
    t, f, r = c
    return (f, t, r)


def t_and(a, b):
    return (f_and(a[0], b[0]), f_or(a[1], f_and(a[0], b[1])), f_or(a[2], f_and(a[0], b[2])))


def t_or(a, b):
    return (f_or(a[0], f_and(a[1], b[0])), f_and(a[1], b[1]), f_or(a[2], f_and(a[1], b[2])))


def const(value):
    return (True, False, False) if value else (False, True, False)


# ---- abstract values ----------------------------------------------------------

class Opaque:
    """A value this module does not model; `raises`: may evaluating it raise."""
    def __init__(self, raises=True):
        self.raises = raises


class Lit:
    def __init__(self, value, kind=None):
        self.value = value
        self.kind = kind  # "set", "seq", "dict", "str" for collections


class Val:
    """A value the engine computes per event (a JSON-ready spec)."""
    def __init__(self, spec):
        self.spec = spec


class TableGet:
    def __init__(self, table, key):
        self.table = table
        self.key = key


class Cond:
    """A boolean value already turned into its (t, f, r) triple."""
    def __init__(self, triple):
        self.triple = triple


class Record:
    """The event parameter itself."""


class Func:
    def __init__(self, module, node):
        self.module = module
        self.node = node


class TableRef:
    def __init__(self, name):
        self.name = name


def json_literal(value):
    """A literal as JSON with its kind, or None when it has no JSON form."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and value != value:
            return None
        return Lit(value)
    if isinstance(value, (set, frozenset, tuple, list, dict)):
        items = list(value.keys()) if isinstance(value, dict) else list(value)
        if not all(i is None or isinstance(i, (bool, int, float, str)) for i in items):
            return None
        kind = ("set" if isinstance(value, (set, frozenset))
                else "dict" if isinstance(value, dict) else "seq")
        return Lit(items, kind)
    return None


# ---- modules ------------------------------------------------------------------

class Module:
    def __init__(self, path, source, lib_dir, loader):
        self.path = path
        self.shown = path
        self.tree = ast.parse(source, path)
        self.lib_dir = lib_dir
        self.loader = loader
        self.functions = {}
        self.constants = {}
        self.tables = {}
        self.imports = {}  # local name -> (module, attribute or None)
        assigned = {}
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions[node.name] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                assigned[name] = assigned.get(name, 0) + 1
                lit = literal_of(node.value)
                if lit is not None:
                    self.constants[name] = lit
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    local = a.asname or a.name
                    if node.module in ENRICHMENT_MODULES:
                        self.tables[local] = a.name
                    else:
                        self.imports[local] = (node.module, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.imports[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0], None)
        mutated = set()
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                mutated.update(node.names)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.attr in MUTATORS:
                mutated.add(node.func.value.id)
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for t in targets:
                    if isinstance(t, (ast.Subscript, ast.Attribute)) and isinstance(t.value, ast.Name):
                        mutated.add(t.value.id)
        dynamic = any(isinstance(n, ast.Name) and n.id in ("globals", "exec", "setattr", "vars")
                      for n in ast.walk(self.tree))
        for name in list(self.constants):
            if assigned.get(name, 0) != 1 or name in mutated or dynamic:
                del self.constants[name]

    def resolve_function(self, name):
        """(module, FunctionDef) for a name callable from this module."""
        if name in self.functions:
            return self, self.functions[name]
        if name in self.imports:
            module_name, attribute = self.imports[name]
            if attribute is not None:
                other = self.loader(module_name)
                if other is not None and attribute in other.functions:
                    return other, other.functions[attribute]
        return None

    def lib_module(self, name):
        """The project module a local name refers to (`import asset_context`)."""
        if name in self.imports and self.imports[name][1] is None:
            return self.loader(self.imports[name][0])
        if name in self.imports:
            module_name, attribute = self.imports[name]
            return self.loader(f"{module_name}.{attribute}")
        return None


def literal_of(node):
    """A module-level literal: constants, tuples/lists/sets/dicts of them,
    `set([...])`/`frozenset([...])`."""
    try:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("set", "frozenset", "tuple", "list") and len(node.args) <= 1 \
                and not node.keywords:
            inner = ast.literal_eval(node.args[0]) if node.args else ()
            value = {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list}[node.func.id](inner)
        else:
            value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return json_literal(value)


class Loader:
    def __init__(self, lib_dir, modules=None):
        self.lib_dir = lib_dir
        self.modules = modules or {}  # Panther global helpers: GlobalID -> file
        self.cache = {}

    def __call__(self, dotted):
        if dotted in self.cache:
            return self.cache[dotted]
        module = None
        if dotted in self.modules:
            try:
                with open(self.modules[dotted], encoding="utf-8") as f:
                    module = Module(self.modules[dotted], f.read(), self.lib_dir, self)
            except (SyntaxError, ValueError, OSError):
                module = None
        elif self.lib_dir:
            base = os.path.join(self.lib_dir, *dotted.split("."))
            for path in (base + ".py", os.path.join(base, "__init__.py")):
                if os.path.isfile(path):
                    try:
                        with open(path, encoding="utf-8") as f:
                            module = Module(path, f.read(), self.lib_dir, self)
                    except (SyntaxError, ValueError, OSError):
                        module = None
                    break
        self.cache[dotted] = module
        return module


_LOADERS = {}


def shared_loader(lib_dir, modules):
    """One loader per (helper folder, global helpers) for the process: the
    helpers many rules import are parsed once (files do not change under a
    run)."""
    key = (lib_dir, tuple(sorted((modules or {}).items())))
    loader = _LOADERS.get(key)
    if loader is None:
        loader = _LOADERS[key] = Loader(lib_dir, modules)
    return loader


# ---- the analysis ---------------------------------------------------------------

class Analysis:
    def __init__(self, panther=False):
        self.fallbacks = []
        self.steps = 0
        # Panther's event: keys fall back to a case-insensitive match, so a
        # value missing at its exact path may still be found ("ci": the
        # engine reads a missing value as undecided).
        self.panther = panther

    def note(self, module, node, why):
        line = getattr(node, "lineno", 0)
        entry = {"file": module.shown, "line": line, "why": why}
        if entry not in self.fallbacks:
            self.fallbacks.append(entry)

    def tick(self):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Bail("the code has too many paths to follow")

    # Values.

    def value(self, node, env, module):
        """The abstract value of an expression."""
        self.tick()
        if isinstance(node, ast.Constant):
            lit = json_literal(node.value)
            return lit if lit is not None else Opaque(False)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            lit = literal_of(node)
            return lit if lit is not None else Opaque()
        if isinstance(node, ast.Dict):
            lit = literal_of(node)
            return lit if lit is not None else Opaque()
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in module.constants and node.id not in env.get("__locals__", ()):
                return module.constants[node.id]
            if node.id in module.tables:
                return TableRef(module.tables[node.id])
            return Opaque()
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and isinstance(env.get(node.value.id), Record):
            key = f"{node.value.id}.{node.attr}"
            return env.get(key, Opaque())
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and isinstance(env.get(node.value.id), Record):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                if self.panther:
                    if "." in key.value:
                        return Opaque()
                    return Val({"field": key.value, "default": None, "how": "item", "ci": True})
                return Val({"field": key.value, "default": None, "how": "item"})
            return Opaque()
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2:
            left = self.value(node.values[0], env, module)
            right = self.value(node.values[1], env, module)
            if isinstance(left, Val) and isinstance(right, Lit) and right.kind in (None, "seq"):
                return Val({"or_else": left.spec, "lit": right.value})
        if isinstance(node, ast.Call):
            return self.call_value(node, env, module)
        if isinstance(node, (ast.Compare, ast.BoolOp, ast.UnaryOp)) \
                and not (isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not)):
            return Cond(self.cond(node, env, module))
        return Opaque()

    def panther_read(self, node, env, module):
        """Panther's reads: `event.get(key, default)`, `event.deep_get(*keys,
        default=)` and `deep_get(event, *keys, default=)` of
        panther_base_helpers, each key literal and without a dot."""
        func = node.func
        kwargs = {k.arg: k.value for k in node.keywords}
        if set(kwargs) - {"default"} or any(isinstance(a, ast.Starred) for a in node.args):
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and isinstance(env.get(func.value.id), Record) and func.attr in ("get", "deep_get"):
            args = list(node.args)
            if func.attr == "get":
                if not 1 <= len(args) <= 2:
                    return None
                if len(args) == 2:
                    kwargs["default"] = args.pop()
        elif isinstance(func, ast.Name) and func.id not in env \
                and module.imports.get(func.id) == ("panther_base_helpers", "deep_get") \
                and node.args and isinstance(self.value(node.args[0], env, module), Record):
            args = list(node.args[1:])
        else:
            return None
        keys = [self.value(a, env, module) for a in args]
        if not keys or not all(isinstance(k, Lit) and k.kind is None and isinstance(k.value, str)
                                and k.value and "." not in k.value for k in keys):
            return None
        default = None
        if "default" in kwargs:
            lit = self.value(kwargs["default"], env, module)
            if not isinstance(lit, Lit) or lit.kind in ("set", "dict"):
                return None
            default = lit.value
        return Val({"field": ".".join(k.value for k in keys), "default": default,
                    "how": "get", "ci": True})

    def record_read(self, node, env, module):
        """A field read on the event parameter: `r.deepget(...)`, `r.get(...)`."""
        if self.panther:
            return self.panther_read(node, env, module)
        func = node.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and isinstance(env.get(func.value.id), Record)):
            return None
        args = node.args
        kwargs = {k.arg: k.value for k in node.keywords}
        if func.attr not in ("deepget", "get") or not args or len(args) > 2 \
                or set(kwargs) - {"default"}:
            return None
        path = self.value(args[0], env, module)
        if not (isinstance(path, Lit) and path.kind is None and isinstance(path.value, str) and path.value):
            return None
        default_node = args[1] if len(args) == 2 else kwargs.get("default")
        default = None
        if default_node is not None:
            lit = self.value(default_node, env, module)
            if not isinstance(lit, Lit) or lit.kind in ("set", "dict"):
                return None
            default = lit.value
        if func.attr == "get" and "." in path.value:
            return None
        return Val({"field": path.value, "default": default, "how": "get"})

    def call_value(self, node, env, module):
        read = self.record_read(node, env, module)
        if read is not None:
            return read
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = self.value(func.value, env, module)
            if isinstance(owner, Val) and func.attr in ("lower", "upper") \
                    and not node.args and not node.keywords:
                return Val({func.attr: owner.spec})
            if isinstance(owner, TableRef) and func.attr == "get" and len(node.args) == 1 \
                    and not node.keywords:
                key = self.value(node.args[0], env, module)
                if isinstance(key, Val):
                    return TableGet(owner.name, key.spec)
                return Opaque()
        inlined = self.inline(node, env, module, want="value")
        if inlined is not None:
            return inlined
        return Opaque()

    def inline(self, node, env, module, want):
        """Follows a call into a module or `_lib` function: its triple
        (want="cond") or, for a one-`return` function, its value."""
        func = node.func
        target = None
        if isinstance(func, ast.Name) and func.id not in env:
            target = module.resolve_function(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id not in env:
            other = module.lib_module(func.value.id)
            if other is not None and func.attr in other.functions:
                target = (other, other.functions[func.attr])
        if target is None or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            return None
        other, fn = target
        params = [a.arg for a in fn.args.args]
        if fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs or fn.decorator_list \
                or len(node.args) > len(params) \
                or len(params) - len(node.args) > len(fn.args.defaults):
            return None
        depth = env.get("__depth__", 0)
        if depth >= MAX_INLINE_DEPTH:
            return None
        inner = {"__depth__": depth + 1, "__locals__": store_names(fn)}
        for name, arg in zip(params, node.args):
            inner[name] = self.value(arg, env, module)
        missing = params[len(node.args):]
        for name, default in zip(missing, fn.args.defaults[len(fn.args.defaults) - len(missing):]):
            inner[name] = self.value(default, {}, other)
        for name, bound in list(inner.items()):
            if isinstance(bound, Record):
                for key, value in env.items():
                    if isinstance(key, str) and key.startswith(f"{_record_name(env, bound)}."):
                        inner[f"{name}.{key.split('.', 1)[1]}"] = value
        body = strip_docstring(fn.body)
        if want == "value":
            if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
                return self.value(body[0].value, inner, other)
            return None
        return self.block(body, inner, other)

    # Conditions.

    def cond(self, node, env, module):
        """(t, f, r) of an expression in a boolean context."""
        self.tick()
        if isinstance(node, ast.BoolOp):
            parts = [self.cond(v, env, module) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = t_and(out, p) if isinstance(node.op, ast.And) else t_or(out, p)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return t_not(self.cond(node.operand, env, module))
        if isinstance(node, ast.Compare):
            out = None
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                part = self.compare(left, op, right, env, module)
                out = part if out is None else t_and(out, part)
                left = right
            return out
        if isinstance(node, ast.Call):
            return self.call_cond(node, env, module)
        if isinstance(node, ast.IfExp):
            test = self.cond(node.test, env, module)
            body = self.cond(node.body, env, module)
            orelse = self.cond(node.orelse, env, module)
            return (f_or(f_and(test[0], body[0]), f_and(test[1], orelse[0])),
                    f_or(f_and(test[0], body[1]), f_and(test[1], orelse[1])),
                    f_or(test[2], f_and(test[0], body[2]), f_and(test[1], orelse[2])))
        return self.truthy(self.value(node, env, module), node, module)

    def truthy(self, value, node, module):
        if isinstance(value, Lit):
            return const(value.value)
        if isinstance(value, Cond):
            return value.triple
        if isinstance(value, Val):
            return atom({"op": "truthy", "v": value.spec})
        if isinstance(value, TableGet):
            return atom({"op": "table_has", "table": value.table, "v": value.key})
        self.note(module, node, f"`{short(node)}` is not understood")
        return KEEP

    def compare(self, left_node, op, right_node, env, module):
        left = self.value(left_node, env, module)
        right = self.value(right_node, env, module)
        node = left_node
        if isinstance(op, (ast.Is, ast.IsNot)):
            none_side = left if isinstance(right, Lit) and right.value is None and right.kind is None \
                else right if isinstance(left, Lit) and left.value is None and left.kind is None else None
            if isinstance(none_side, TableGet):
                found = atom({"op": "table_has", "table": none_side.table, "v": none_side.key})
                return found if isinstance(op, ast.IsNot) else t_not(found)
            if isinstance(none_side, Val):
                is_none = atom({"op": "is_none", "v": none_side.spec})
                return is_none if isinstance(op, ast.Is) else t_not(is_none)
            if isinstance(none_side, Lit):
                return const((none_side.value is None) == isinstance(op, ast.Is))
        elif isinstance(op, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            symbol = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=",
                      ast.Gt: ">", ast.GtE: ">="}[type(op)]
            if isinstance(left, Lit) and isinstance(right, Val):
                left, right = right, left
                symbol = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(symbol, symbol)
            if isinstance(left, Val) and isinstance(right, Lit) and right.kind is None:
                return atom({"op": "cmp", "cmp": symbol, "v": left.spec, "lit": right.value})
        elif isinstance(op, (ast.In, ast.NotIn)):
            found = None
            if isinstance(left, Lit) and left.kind is None and isinstance(right, Val):
                found = atom({"op": "in", "needle": left.value, "v": right.spec})
            elif isinstance(left, Val) and isinstance(right, TableRef):
                found = atom({"op": "table_has", "table": right.name, "v": left.spec})
            elif isinstance(left, Val) and isinstance(right, Lit) and right.kind is not None:
                found = atom({"op": "in_lit", "v": left.spec, "items": right.value, "kind": right.kind})
            elif isinstance(left, Val) and isinstance(right, Lit) and isinstance(right.value, str):
                found = atom({"op": "in_lit", "v": left.spec, "items": right.value, "kind": "str"})
            elif isinstance(left, Lit) and left.kind is None and isinstance(left.value, str) \
                    and "." not in left.value and left.value and isinstance(right, Record) \
                    and not self.panther:
                found = atom({"op": "has", "path": left.value})
            elif isinstance(left, Lit) and isinstance(right, Lit):
                try:
                    found = const(left.value in right.value)
                except TypeError:
                    found = None
            if found is not None:
                return found if isinstance(op, ast.In) else t_not(found)
        if isinstance(left, Lit) and isinstance(right, Lit) and left.kind is None \
                and right.kind is None and isinstance(op, (ast.Eq, ast.NotEq)):
            return const((left.value == right.value) == isinstance(op, ast.Eq))
        self.note(module, node, f"comparison `{short(left_node)} {op_text(op)} {short(right_node)}` is not understood")
        return KEEP

    def call_cond(self, node, env, module):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("startswith", "endswith") \
                and len(node.args) == 1 and not node.keywords:
            owner = self.value(func.value, env, module)
            arg = self.value(node.args[0], env, module)
            if isinstance(owner, Val) and isinstance(arg, Lit) and (
                    isinstance(arg.value, str)
                    or (arg.kind == "seq" and all(isinstance(x, str) for x in arg.value))):
                items = [arg.value] if isinstance(arg.value, str) else arg.value
                return atom({"op": func.attr, "v": owner.spec, "items": items})
        if isinstance(func, ast.Name) and func.id in ("any", "all") and func.id not in env \
                and len(node.args) == 1 and not node.keywords \
                and isinstance(node.args[0], (ast.List, ast.Tuple)) \
                and not any(isinstance(e, ast.Starred) for e in node.args[0].elts):
            # `all([a, b, c])`: the list is built first, so every item is
            # evaluated (any may raise), then all / any of their truth.
            parts = [self.cond(e, env, module) for e in node.args[0].elts]
            ts = [p[0] for p in parts]
            fs = [p[1] for p in parts]
            rs = [p[2] for p in parts]
            if func.id == "all":
                return (f_and(*ts), f_or(*fs), f_or(*rs))
            return (f_or(*ts), f_and(*fs), f_or(*rs))
        if isinstance(func, ast.Name) and func.id in ("any", "all") and func.id not in env \
                and len(node.args) == 1 and isinstance(node.args[0], (ast.GeneratorExp, ast.ListComp)):
            unrolled = self.unroll_comprehension(node.args[0], env, module)
            if unrolled is not None:
                out = const(func.id == "all")
                for part in unrolled:
                    out = t_and(out, part) if func.id == "all" else t_or(out, part)
                return out
        if isinstance(func, ast.Name) and func.id == "bool" and len(node.args) == 1 and func.id not in env:
            return self.cond(node.args[0], env, module)
        inlined = self.inline(node, env, module, want="cond")
        if inlined is not None:
            return inlined
        return self.truthy(self.value(node, env, module), node, module)

    def unroll_comprehension(self, comp, env, module):
        if len(comp.generators) != 1:
            return None
        gen = comp.generators[0]
        items = self.value(gen.iter, env, module)
        if not (isinstance(items, Lit) and items.kind in ("seq", "set") and isinstance(gen.target, ast.Name)) \
                or gen.is_async or len(items.value) > 64:
            return None
        out = []
        for item in items.value:
            inner = dict(env)
            inner[gen.target.id] = Lit(item)
            part = self.cond(comp.elt, inner, module)
            for test in gen.ifs:
                part = t_and(self.cond(test, inner, module), part)
            out.append(part)
        return out

    # Statements.

    def block(self, stmts, env, module):
        """(t, f, r) of what running `stmts` returns."""
        self.tick()
        if not stmts:
            return (False, True, False)
        s, rest = stmts[0], stmts[1:]
        if isinstance(s, tuple):  # ("bind", name, value) from an unrolled loop
            env = dict(env)
            env[s[1]] = s[2]
            return self.block(rest, env, module)
        if isinstance(s, ast.Return):
            if s.value is None:
                return (False, True, False)
            return self.cond(s.value, env, module)
        if isinstance(s, ast.If):
            test = self.cond(s.test, env, module)
            body = self.block(list(s.body) + rest, dict(env), module) if test[0] is not False else KEEP
            orelse = self.block(list(s.orelse) + rest, dict(env), module) if test[1] is not False else KEEP
            return (f_or(f_and(test[0], body[0]), f_and(test[1], orelse[0])),
                    f_or(f_and(test[0], body[1]), f_and(test[1], orelse[1])),
                    f_or(test[2], f_and(test[0], body[2]), f_and(test[1], orelse[2])))
        if isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)):
            return self.block(rest, env, module)
        if isinstance(s, ast.Raise):
            return (False, False, True)
        if isinstance(s, ast.Assert):
            test = self.cond(s.test, env, module)
            after = self.block(rest, env, module)
            return (f_and(test[0], after[0]), f_and(test[0], after[1]),
                    f_or(test[1], test[2], f_and(test[0], after[2])))
        if isinstance(s, ast.Assign) and len(s.targets) == 1:
            target = s.targets[0]
            key = None
            if isinstance(target, ast.Name):
                key = target.id
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                    and isinstance(env.get(target.value.id), Record):
                key = f"{target.value.id}.{target.attr}"
            if key is not None:
                value = self.value(s.value, env, module)
                raises = self.raises(value)
                env = dict(env)
                env[key] = value
                after = self.block(rest, env, module)
                return (after[0], after[1], f_or(raises, after[2]))
        if isinstance(s, ast.For) and isinstance(s.target, ast.Name) and not s.orelse:
            items = self.value(s.iter, env, module)
            if isinstance(items, Lit) and items.kind in ("seq", "set") and len(items.value) <= 64 \
                    and not any(isinstance(n, (ast.Break, ast.Continue)) for n in ast.walk(s)):
                unrolled = []
                for item in items.value:
                    unrolled.append(("bind", s.target.id, Lit(item)))
                    unrolled.extend(s.body)
                return self.block(unrolled + rest, env, module)
        if isinstance(s, ast.Expr):
            value = self.value(s.value, env, module)
            if not isinstance(value, Opaque):
                after = self.block(rest, env, module)
                return (after[0], after[1], f_or(self.raises(value), after[2]))
        self.note(module, s, f"statement `{short(s)}` is not understood")
        return KEEP

    def raises(self, value):
        """May computing `value` raise (as a formula)?"""
        if isinstance(value, Opaque):
            return value.raises
        if isinstance(value, Cond):
            return value.triple[2]
        if isinstance(value, Val):
            return atom({"op": "truthy", "v": value.spec})[2] if value_may_raise(value.spec) else False
        if isinstance(value, TableGet):
            return atom({"op": "table_has", "table": value.table, "v": value.key})[2]
        return False


def _record_name(env, record):
    for key, value in env.items():
        if value is record and isinstance(key, str) and "." not in key:
            return key
    return ""


def store_names(fn):
    """Names `fn` assigns: local everywhere in it, never the module's."""
    names = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
    return frozenset(names)


def strip_docstring(body):
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def short(node):
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - a display aid only
        text = type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def op_text(op):
    return {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
            ast.IsNot: "is not"}.get(type(op), type(op).__name__)


# ---- purity ----------------------------------------------------------------------

def impurities(module, fn, seen=None):
    """Why `fn` (or what it calls) is impure: [(module, node, why)]."""
    seen = set() if seen is None else seen
    key = (module.path, fn.name)
    if key in seen:
        return []
    seen.add(key)
    out = []
    local_names = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    for node in ast.walk(fn):
        if isinstance(node, (ast.Name,)) and isinstance(node.ctx, ast.Store):
            local_names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)) and node is not fn:
            if isinstance(node, ast.FunctionDef):
                local_names.add(node.name)
            local_names.update(a.arg for a in node.args.args)
        elif isinstance(node, ast.comprehension):
            for n in ast.walk(node.target):
                if isinstance(n, ast.Name):
                    local_names.add(n.id)
    for node in ast.walk(fn):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            kind = "global" if isinstance(node, ast.Global) else "nonlocal"
            out.append((module, node, f"uses `{kind} {', '.join(node.names)}`"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append((module, node, "imports inside the function"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                base = t
                while isinstance(base, (ast.Subscript, ast.Attribute)):
                    base = base.value
                if base is not t and isinstance(base, ast.Name) and base.id not in local_names:
                    out.append((module, node, f"writes module-level `{base.id}`"))
        elif isinstance(node, ast.Call):
            out.extend(call_impurity(module, node, local_names, seen))
    return out


def call_impurity(module, node, local_names, seen):
    func = node.func
    if isinstance(func, ast.Name):
        name = func.id
        if name in local_names:
            return []  # a local value or nested function: analysed as part of fn
        resolved = module.resolve_function(name)
        if resolved is not None:
            return impurities(resolved[0], resolved[1], seen)
        if name in module.functions:
            return []
        if name in IMPURE_BUILTINS:
            return [(module, node, f"calls `{name}()`, which does I/O or touches global state")]
        if name in module.imports:
            origin, attribute = module.imports[name]
            top = origin.split(".")[0]
            if origin in PURE_MODULES or top in PURE_MODULES:
                if attribute in CLOCK_OR_RANDOM:
                    return [(module, node, f"calls `{name}()`, which reads the clock or randomness")]
                return []
            if module.lib_module(name) is not None:
                return []  # a class or value from the project: constructing it is pure enough
            return [(module, node, f"calls `{name}` from `{origin}`, which is not known to be pure")]
        if name in module.tables:
            return [(module, node, f"calls table `{name}`")]
        if name in PURE_BUILTINS or (hasattr(builtins, name) and name not in IMPURE_BUILTINS):
            return []
        if any(isinstance(n, ast.ClassDef) and n.name == name for n in module.tree.body):
            return []
        return [(module, node, f"calls `{name}`, which cannot be resolved")]
    if isinstance(func, ast.Attribute):
        chain = []
        base = func
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        if isinstance(base, ast.Name) and base.id not in local_names:
            name = base.id
            if name in module.tables:
                return []
            if name in module.constants or (name not in module.imports and name not in module.functions):
                if func.attr in MUTATORS:
                    return [(module, node, f"calls `{name}.{func.attr}()` on a module-level value")]
                if name in module.constants or name in PURE_BUILTINS:
                    return []
            lib = module.lib_module(name)
            if lib is not None:
                if len(chain) == 1 and chain[0] in lib.functions:
                    return impurities(lib, lib.functions[chain[0]], seen)
                return []
            if name in module.imports:
                origin, attribute = module.imports[name]
                dotted = ".".join([origin] + ([attribute] if attribute else []) + chain)
                top = origin.split(".")[0]
                if top in IMPURE_MODULES:
                    return [(module, node, f"calls `{dotted}`, which does I/O or reads the clock or randomness")]
                if chain[-1] in CLOCK_OR_RANDOM:
                    return [(module, node, f"calls `{dotted}`, which reads the clock or randomness")]
                if origin in PURE_MODULES or top in PURE_MODULES:
                    return []
                return [(module, node, f"calls `{dotted}`, which is not known to be pure")]
            if name in module.functions:
                return []
            return [(module, node, f"calls `{name}.{'.'.join(chain)}`, which cannot be resolved")]
        return []  # a method of a local value, the event or a table
    return []  # calling the result of an expression: its parts were walked


# ---- entry point -----------------------------------------------------------------

def derive(source, filename, lib_dir, function="detect", panther_modules=None):
    """The derived filter of `function` in `source` (see the module doc).
    `panther_modules` ({GlobalID: file}) marks a Panther rule: `rule(event)`
    over Panther's case-insensitive event, helpers found by GlobalID."""
    loader = shared_loader(lib_dir, panther_modules)
    try:
        module = Module(filename, source, lib_dir, loader)
    except (SyntaxError, ValueError) as e:
        return {"keep": True, "pure": False,
                "impure": [], "fallbacks": [{"file": filename, "line": getattr(e, "lineno", 0) or 0,
                                             "why": f"does not parse: {e}"}]}
    fn = module.functions.get(function)
    if fn is None or not fn.args.args:
        return {"keep": True, "pure": False, "impure": [],
                "fallbacks": [{"file": filename, "line": 0, "why": f"no `{function}(event)` function"}]}
    found = impurities(module, fn)
    impure = [{"file": m.shown, "line": getattr(n, "lineno", 0), "why": why} for m, n, why in found]
    analysis = Analysis(panther=panther_modules is not None)
    env = {fn.args.args[0].arg: Record(), "__locals__": store_names(fn)}
    for extra in fn.args.args[1:]:
        env[extra.arg] = Opaque()
    body = strip_docstring(fn.body)
    guarded = False
    if found:
        # Effects (state, I/O) only past the first statements: the filter
        # is the condition of reaching them, or of matching before.
        # (When the first statement already may, the whole body is still
        # read, to show what the filter would be.)
        k = first_effect(module, fn, body)
        if k > 0:
            body = body[:k] + [ast.Return(value=ast.Name(id=EFFECTS_FOLLOW, ctx=ast.Load()))]
            guarded = True
    try:
        t, f, r = analysis.block(body, env, module)
        keep = f_or(t, r)
    except (Bail, RecursionError) as e:
        analysis.note(module, fn, str(e) or "the code is too deeply nested to follow")
        keep = True
    if size(keep) > MAX_NODES:
        analysis.note(module, fn, "the derived condition is too large")
        keep = True
    fallbacks = [n for n in analysis.fallbacks if EFFECTS_FOLLOW not in n["why"]]
    return {"keep": keep, "pure": not impure, "impure": impure,
            "guarded": guarded and keep is not True, "fallbacks": fallbacks}


# Stands for "what follows may have effects" in a rule cut before them.
EFFECTS_FOLLOW = "__ravenwatch_effects_follow__"


def first_effect(module, fn, body):
    """The index of the first top-level statement of `fn` that may have an
    effect (itself or through what it calls); 0 when the first does."""
    for i, stmt in enumerate(body):
        part = ast.FunctionDef(name=f"{fn.name}#{i}", args=fn.args, body=[stmt],
                               decorator_list=[], returns=None, type_comment=None)
        ast.copy_location(part, stmt)
        if impurities(module, part):
            return i
    return len(body)


def derive_json(source, filename, lib_dir, function="detect", panther_modules=None):
    return json.dumps(derive(source, filename, lib_dir, function, panther_modules))
