"""The package's layering, checked on the source: no upward imports, no import cycles, small files.

Layers, bottom to top (a module may import its own package and the layers below it):
  errors < layout, fileio < kernels, data < quant < fused < models, parallel < training, testing, inference < app
"""
import ast
import os

import pytest

PKG = "bitcpm_ms"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = {"__init__": 0, "errors": 0, "layout": 1, "fileio": 1, "kernels": 2, "data": 2, "quant": 3,
        "fused": 4, "models": 5, "parallel": 5, "training": 6, "testing": 6, "inference": 6, "app": 7}
MAX_LINES = 400


def _modules():
    """{dotted module name: path} of every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, PKG)):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def _imports(name, path, modules):
    """Package modules that `name` imports (at module level or inside functions)."""
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = ".".join(base[:len(base) - node.level + 1])
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t.startswith(PKG):
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
    return found


def _layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = _modules()
GRAPH = {m: _imports(m, p, MODULES) for m, p in MODULES.items()}


def test_every_top_level_module_has_a_layer():
    assert sorted({_layer(m) for m in MODULES} - set(RANK)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_imports(module):
    mine = _layer(module)
    upward = sorted(t for t in GRAPH[module] if _layer(t) != mine and RANK[_layer(t)] >= RANK[mine]
                    and _layer(t) != "__init__")
    assert upward == [], f"{module} ({mine}) imports a layer at or above its own: {upward}"


def test_no_import_cycles():
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if t.startswith(m + "."):     # a package importing its own submodules is not a cycle
                continue
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_files_stay_small(module):
    with open(MODULES[module], encoding="utf-8") as f:
        n = sum(1 for _ in f)
    assert n <= MAX_LINES, f"{MODULES[module]} has {n} lines (> {MAX_LINES}): split it"
