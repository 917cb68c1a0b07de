#!/usr/bin/env python3
"""Fails when a module of `src/` imports upward or files import in a circle.

ARCHITECTURE.md states the rule: modules import only downward, in the order
of `ORDER` below (a module may use those listed before it, never after).
Every `crate::<module>` path and every path into a sibling file (`super::x`,
`self::x`, a child module named in `mod.rs`) is an edge; the script prints
each upward edge with its file and line, and each file-level cycle.

    python3 scripts/check_imports.py [SRC_DIR]
    python3 scripts/check_imports.py --self-test   (proves it catches both)
"""
import re
import sys
from pathlib import Path

# Lowest first. Keep in step with ARCHITECTURE.md.
ORDER = [
    "files", "text", "suggest", "schema", "storage", "queue", "config", "outcome", "enrichment",
    "logs", "prefilter", "python", "query", "alerts", "delivery", "engine", "testing",
    "panther", "validate", "cli",
]
ROOT_FILES = {"lib", "main"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if not line.lstrip().startswith("//") else "" for line in text.splitlines())


def without_tests(text):
    """Drops `#[cfg(test)] mod tests { … }`: tests may reach anywhere."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if not m:
        return text
    return text[: m.start()] + "\n" * text[m.start():].count("\n")


def module_path(src, path):
    """src/a/b.rs -> ['a', 'b']; src/a/mod.rs -> ['a']."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def expand_use_groups(text):
    """Yields (line, path) for every `crate::…`/`super::…` path, expanding `{a, b::c}`."""
    for m in re.finditer(r"\b(crate|super|self)::", text):
        line = text.count("\n", 0, m.start()) + 1
        yield from expand(text, m.start(), line)


def expand(text, start, line):
    # Read a path that may end in a brace group; return each full path.
    i = start
    prefix = []
    while True:
        m = re.match(rf"({IDENT})::", text[i:])
        if m:
            prefix.append(m.group(1))
            i += m.end()
            continue
        if text[i:i + 1] == "{":
            depth, j, items, cur = 0, i, [], ""
            while j < len(text):
                c = text[j]
                if c == "{":
                    depth += 1
                    if depth == 1:
                        j += 1
                        continue
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        items.append(cur)
                        break
                if c == "," and depth == 1:
                    items.append(cur)
                    cur = ""
                else:
                    cur += c
                j += 1
            for item in items:
                item = item.strip()
                if not item:
                    continue
                head = re.match(rf"({IDENT})", item)
                if head:
                    tail = re.findall(rf"({IDENT})::", item)
                    yield line, prefix + (tail if tail else [head.group(1)])
            return
        m = re.match(rf"({IDENT})", text[i:])
        if m:
            prefix.append(m.group(1))
        yield line, prefix
        return


def resolve(src, here, path):
    """Turns a path as written in `here` into the module path of a file."""
    mod = module_path(src, here)
    is_mod_rs = here.name in ("mod.rs", "lib.rs", "main.rs")
    base = mod if is_mod_rs else mod[:-1]
    kind, rest = path[0], path[1:]
    if kind == "crate":
        target = []
    elif kind == "self":
        target = list(mod)
    else:  # super
        target = list(base[:-1]) if is_mod_rs else list(base)
        while rest and rest[0] == "super":
            target = target[:-1]
            rest = rest[1:]
    best = list(target)
    for part in rest:
        cand = target + [part]
        if (src.joinpath(*cand).with_suffix(".rs")).exists() or (src.joinpath(*cand) / "mod.rs").exists():
            target = cand
            best = list(target)
        else:
            break
    return best


def self_test():
    """Runs the check on small trees: a clean one, one that imports upward
    and one whose files import in a circle; only the clean one may pass."""
    import tempfile

    trees = {
        "clean": {"files.rs": "", "cli/mod.rs": "mod args;\nuse crate::files::x;\n", "cli/args.rs": "use super::y;\n"},
        "upward": {"files.rs": "use crate::cli::Outcome;\n", "cli/mod.rs": ""},
        "circle": {
            "files.rs": "",
            "cli/mod.rs": "mod a;\nmod b;\n",
            "cli/a.rs": "use super::b::B;\npub struct A;\n",
            "cli/b.rs": "use crate::cli::a::A;\npub struct B;\n",
        },
    }
    results = {}
    for name, files in trees.items():
        with tempfile.TemporaryDirectory() as tmp:
            for path, text in files.items():
                target = Path(tmp) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            results[name] = check(Path(tmp), quiet=True)
    ok = results == {"clean": 0, "upward": 1, "circle": 1}
    print("self-test " + ("ok" if ok else f"FAILED: {results}"))
    return 0 if ok else 1


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "src")
    return check(src)


def check(src, quiet=False):
    files = sorted(src.rglob("*.rs"))
    rank = {m: i for i, m in enumerate(ORDER)}
    problems = []
    edges = {}
    for f in files:
        text = without_tests(strip_comments(f.read_text()))
        here = tuple(module_path(src, f))
        top = here[0] if here else f.stem
        if here and here[0] in ROOT_FILES:
            continue
        if top not in rank and top not in ROOT_FILES:
            problems.append(f"{f}: module `{top}` is not in the order in scripts/check_imports.py")
            continue
        targets = set()
        for line, path in expand_use_groups(text):
            target = tuple(resolve(src, f, path))
            if not target or target == here:
                continue
            targets.add(target)
            dest = target[0]
            if dest != top and dest in rank and rank[dest] > rank[top]:
                problems.append(f"{f.relative_to(src.parent)}:{line}: `{top}` imports `{dest}`, which is above it")
        if f.name == "mod.rs":
            for child in re.findall(rf"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+({IDENT})\s*;", text, flags=re.M):
                # `mod x;` and a facade's `pub use x::…` are structure, not use.
                body = re.sub(rf"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:mod\s+{child}\s*;|use\s+{child}::.*?;)", "", text, flags=re.M | re.S)
                if re.search(rf"(?<![:\w]){child}::", body):
                    targets.add(here + (child,))
        edges[here] = targets
    # File-level cycles (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    for comp in sccs:
        names = sorted("::".join(c) for c in comp)
        problems.append("import circle between files: " + ", ".join(names))
    if problems:
        if not quiet:
            print("\n".join(problems))
            print(f"\n{len(problems)} import problem(s); modules import only downward: {' < '.join(ORDER)}")
        return 1
    if not quiet:
        print(f"imports ok: {len(files)} files, no upward import, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
