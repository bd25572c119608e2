"""An import inside a function must earn its place: it keeps a heavy package out of a module that
does not load it otherwise (so `bitcpm-train --help`, the numpy kernel routes and the data tools
start without MindSpore / MindFormers). Any other import goes at the top, where a reader sees a
module's dependencies.

Checked statically on the source: the third-party packages a module loads at import time are the
closure of its module-level imports (parents included); a function-level import that loads nothing
heavy beyond that set is reported. Imports inside `try` blocks (optional dependencies) and imports
whose module is in the same closure are exempt only through the first rule.
"""
import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "bitcpm_ms"
HEAVY = {"mindspore", "mindformers", "sentencepiece", "gguf", "jinja2", "torch", "transformers", "safetensors",
         "pyarrow", "tqdm", "scipy_openblas32", "lm_eval", "datasets"}
IMPLIED = {"mindformers": {"mindspore"}}         # importing MindFormers imports MindSpore


def _path(mod):
    p = os.path.join(ROOT, *mod.split("."))
    if os.path.isdir(p):
        return os.path.join(p, "__init__.py")
    return p + ".py" if os.path.exists(p + ".py") else None


def _targets(mod, path, node):
    """Modules an import statement of `mod` (at `path`) brings in."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    for _ in range(max(node.level - 1, 0)):
        base = base.rsplit(".", 1)[0]
    target = (base + ("." + node.module if node.module else "")) if node.level else node.module
    return [target] + [f"{target}.{a.name}" for a in node.names if _path(f"{target}.{a.name}")]


def _import_time_imports(tree):
    """Import statements run when the module is imported (not those inside functions)."""
    out = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append(child)
            elif not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child)
    visit(tree)
    return out


def _heavy(mod, cache={}):
    """Heavy third-party packages importing `mod` loads (statically)."""
    if mod in cache:
        return cache[mod]
    seen, todo, found = set(), [mod], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if not m.startswith(PKG):
            root = m.split(".")[0]
            if root in HEAVY:
                found |= {root} | IMPLIED.get(root, set())
            continue
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = _path(m)
        if path:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in _import_time_imports(tree):
                todo += _targets(m, path, node)
    cache[mod] = frozenset(found)
    return cache[mod]


def _function_imports():
    """(module, path, line, import node) of every import inside a function, outside `try`."""
    out = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, PKG)):
        if not os.path.exists(os.path.join(dirpath, "__init__.py")):
            continue                  # not a package (lm-eval task hooks, loaded by path)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            mod = mod[:-len(".__init__")] if mod.endswith(".__init__") else mod
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                tries = {id(n) for t in ast.walk(fn) if isinstance(t, ast.Try) for n in ast.walk(t)}
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in tries:
                        out.append((mod, path, node.lineno, node))
    return out


def test_the_checker_sees_heavy_packages():
    """The static closure finds MindSpore behind the model module and none behind the CLI parser."""
    assert "mindspore" in _heavy("bitcpm_ms.models.bitcpm")
    assert not _heavy("bitcpm_ms.app.cli") & {"mindspore", "mindformers"}
    assert not _heavy("bitcpm_ms.kernels.library") & {"mindspore"}


@pytest.mark.parametrize("mod,path,line,node", _function_imports(),
                         ids=lambda v: v if isinstance(v, (str, int)) else "")
def test_function_level_import_keeps_something_heavy_out(mod, path, line, node):
    extra = set()
    for target in _targets(mod, path, node):
        extra |= _heavy(target) if target.startswith(PKG) else \
            ({target.split(".")[0]} | IMPLIED.get(target.split(".")[0], set())) & HEAVY
    assert extra - _heavy(mod), (
        f"{os.path.relpath(path, ROOT)}:{line} imports inside a function but loads nothing heavy that "
        f"{mod} does not already load ({sorted(_heavy(mod))}): move it to the top of the module")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
