"""The package's layering, checked on the source: no upward imports, no import cycles, small files.

Layers, bottom to top (a module may import its own package and the layers below it):
  errors < layout, fileio < kernels, data < quant < fused < models, parallel < training, testing, inference < app < harness
"""
import ast
import os

import pytest

PKG = "bitcpm_ms"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = {"__init__": 0, "errors": 0, "layout": 1, "fileio": 1, "kernels": 2, "data": 2, "quant": 3,
        "fused": 4, "models": 5, "parallel": 5, "training": 6, "testing": 6, "inference": 6, "app": 7,
        "harness": 8}
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


MAX_APP_FLOORS = 5


def test_app_is_at_most_five_floors_deep():
    """The longest chain of imports between app/ modules (function-level ones included) has at most
    MAX_APP_FLOORS modules: the app is a flat room of commands, not a tower of one-function borrowings."""
    app = {m for m in MODULES if m.startswith(f"{PKG}.app.")}
    floors = {}

    def floor(m):
        if m not in floors:
            floors[m] = 1 + max((floor(t) for t in GRAPH[m] if t in app), default=0)
        return floors[m]

    def chain(m):
        deeper = [t for t in GRAPH[m] if t in app]
        return [m] + (chain(max(deeper, key=floor)) if deeper else [])

    deepest = max(app, key=floor)
    assert floor(deepest) <= MAX_APP_FLOORS, "app/ chain too deep: " + " -> ".join(
        x.rsplit(".", 1)[1] for x in chain(deepest))


def test_one_cpu_feature_detector():
    """Only ops/common/cpu_features.cpp asks the CPU what it has; every kernel asks it."""
    askers = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "ops")):
        for f in files:
            if f.endswith((".cpp", ".h")):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    if "__builtin_cpu_supports" in fh.read():
                        askers.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    assert askers and all(a.startswith(os.path.join("ops", "common", "cpu_features.")) for a in askers), askers


@pytest.mark.parametrize("package", ["kernels", "fused"])
def test_kernel_packages_share_one_naming_triad(package):
    """reference.py (numpy specs), library.py (ctypes), ops.py (MindSpore ops) in both packages."""
    for face in ("reference", "library", "ops"):
        assert f"{PKG}.{package}.{face}" in MODULES, f"{PKG}/{package}/{face}.py is missing"


# Files allowed over MAX_LINES, each with its reason. Per-ISA C++ kernels keep one ISA's whole
# family of loops in one file, as ggml-cpu does.
SIZE_EXEMPT = {
    "ops/ternary_matmul/avx512.cpp": "per-ISA kernel file (all AVX-512 loops of the library)",
}
SOURCE_SUFFIXES = (".py", ".cpp", ".h", ".sh")


def _source_files():
    """Repository-relative paths of the package, benchmark, run and ops sources."""
    out = [os.path.relpath(p, ROOT) for p in _modules().values()]
    for top in ("benchmarks", "run", "ops"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            out += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in files if f.endswith(SOURCE_SUFFIXES)]
    return sorted(out)


@pytest.mark.parametrize("path", _source_files())
def test_files_stay_small(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        n = sum(1 for _ in f)
    if path in SIZE_EXEMPT:
        return
    assert n <= MAX_LINES, f"{path} has {n} lines (> {MAX_LINES}): split it"


def test_size_exemptions_are_needed():
    """An exempt file that shrank under the limit loses its exemption (the list stays honest)."""
    for path in SIZE_EXEMPT:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            assert sum(1 for _ in f) > MAX_LINES, f"{path} is under {MAX_LINES} lines: drop it from SIZE_EXEMPT"


def test_benchmarks_do_not_edit_sys_path():
    """benchmarks/ is a package run as `python3 -m benchmarks.NAME`; no script edits sys.path."""
    for dirpath, _, files in os.walk(os.path.join(ROOT, "benchmarks")):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    assert "sys.path.insert" not in fh.read(), f"{f} edits sys.path"
