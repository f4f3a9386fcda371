"""The shape of the code: nlc's modules import each other without cycles, and no pass imports a back end.

The import graph is read from the source (ast), not by importing: every `import` and `from ... import`
counts, at module level and inside functions alike (a function-local import that would close a cycle
only postpones it). Relative imports are resolved; `from package import name` is an edge to the
submodule `package.name` when there is one, else to the package. Importing `a.b.c` also runs the
`__init__` of `a` and `a.b` unless the importing module is inside them (then they are already loading).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
BACK_ENDS = ("nlc.optim", "nlc.codegen", "nlc.runtime", "nlc.interp", "nlc.train")


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under a package folder."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known) -> list[str]:
    """The modules one import statement names (absolute dotted names; may lie outside the package)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def import_graph(package_dir: Path) -> nx.DiGraph:
    """module -> the package's modules it imports (directly or by running a package's __init__)."""
    known = modules(package_dir)
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for module, path in known.items():
        own_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported(module, path, node, known):
                while name and name not in known:  # `from nlc.ir import Level`: the module nlc.ir
                    name = name.rpartition(".")[0]
                if not name:
                    continue  # outside the package
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    already_loading = i < len(parts) and (own_package == target
                                                          or own_package.startswith(target + "."))
                    if target in known and target != module and not already_loading:
                        g.add_edge(module, target)
    return g


def cycles(g: nx.DiGraph) -> list[list[str]]:
    """One cycle (a list of modules, each importing the next, the last the first) per strongly connected part."""
    out = []
    for part in nx.strongly_connected_components(g):
        if len(part) > 1:
            out.append([u for u, _ in nx.find_cycle(g.subgraph(part))])
    return sorted(out)


def _describe(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join([*cycle, cycle[0]]) for cycle in found)


def test_nlc_has_no_import_cycle():
    found = cycles(import_graph(ROOT / "nlc"))
    assert not found, "import cycles (move the shared code into a lower module):\n" + _describe(found)


def _inside(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def back_end_paths(g: nx.DiGraph, passes: str, back_ends) -> list[str]:
    """Every import path (as text) from a module of `passes` to a back end, directly or through helpers."""
    out = []
    for module in sorted(m for m in g if _inside(m, [passes])):
        for reached in sorted(nx.descendants(g, module)):
            if _inside(reached, back_ends):
                out.append(" -> ".join(nx.shortest_path(g, module, reached)))
    return out


def test_no_pass_imports_a_back_end():
    g = import_graph(ROOT / "nlc")
    assert "nlc.passes.optimizer" in g
    bad = back_end_paths(g, "nlc.passes", BACK_ENDS)
    assert not bad, "passes must not depend on a back end (" + ", ".join(BACK_ENDS) + "):\n" + "\n".join(bad)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_a_cycle_through_a_function_local_import_is_found_and_named(tmp_path):
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import helper\n",
        "pkg/b.py": "def helper():\n    from . import a\n    return a\n",
        "pkg/c.py": "import pkg.a\n",
    })
    found = cycles(import_graph(pkg))
    assert found == [["pkg.a", "pkg.b"]] or found == [["pkg.b", "pkg.a"]]
    assert "pkg.a -> pkg.b -> pkg.a" in _describe(found) or "pkg.b -> pkg.a -> pkg.b" in _describe(found)


def test_importing_a_submodule_runs_its_package_init(tmp_path):
    # pkg.gen.emit imports pkg.opt.plan, which runs pkg/opt/__init__.py, which imports pkg.gen: a cycle
    # (the one nlc.codegen.optimizer and nlc.optim had); modules inside pkg.opt do not count pkg.opt's
    # __init__ as an import of their own
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/gen/__init__.py": "from pkg.gen.emit import emit\n",
        "pkg/gen/emit.py": "from pkg.opt.plan import plan\n",
        "pkg/opt/__init__.py": "from pkg.gen import emit\n",
        "pkg/opt/plan.py": "from pkg.opt import other\n",
        "pkg/opt/other.py": "",
    })
    g = import_graph(pkg)
    assert g.has_edge("pkg.gen.emit", "pkg.opt") and g.has_edge("pkg.gen.emit", "pkg.opt.plan")
    assert not g.has_edge("pkg.opt.plan", "pkg.opt")
    assert g.has_edge("pkg.opt.plan", "pkg.opt.other")
    assert cycles(g)
    (pkg / "opt" / "__init__.py").write_text("")
    assert not cycles(import_graph(pkg))


def test_a_pass_reaching_a_back_end_through_a_helper_counts(tmp_path):
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/passes/__init__.py": "",
        "pkg/passes/check.py": "from ..helper import f\n",
        "pkg/helper.py": "def f():\n    import pkg.optim.plan\n",
        "pkg/optim/__init__.py": "",
        "pkg/optim/plan.py": "",
    })
    g = import_graph(pkg)
    assert back_end_paths(g, "pkg.passes", ("pkg.optim",)) == [
        "pkg.passes.check -> pkg.helper -> pkg.optim", "pkg.passes.check -> pkg.helper -> pkg.optim.plan"]


# Code that runs per token or per step: an import statement there is a dictionary lookup and a lock on
# every call (and hides a dependency). The runtime modules, the interpreter, the optimizers' runtime,
# the step levels and the training loop import everything at the top.
HOT_MODULES = ("nlc/runtime", "nlc/interp.py", "nlc/optim/runtime.py", "nlc/train/steplevels.py",
               "nlc/train/loop.py")


def function_local_imports(path: Path) -> list[str]:
    """`file:line function` for every import statement inside a function of a file."""
    out = []
    tree = ast.parse(path.read_text("utf-8"), str(path))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    out.append(f"{shown}:{node.lineno} in {fn.name}")
    return sorted(set(out))


def test_per_token_and_per_step_code_imports_at_the_top():
    files = []
    for name in HOT_MODULES:
        path = ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    assert len(files) > len(HOT_MODULES)
    local = [hit for path in files for hit in function_local_imports(path)]
    assert not local, "imports inside per-token / per-step code:\n" + "\n".join(local)


def test_function_local_imports_are_found(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\n\n\ndef f():\n    def g():\n        from math import pi\n    return g\n")
    assert function_local_imports(path) == [f"{path}:6 in f", f"{path}:6 in g"]


def _defines(module: str, name: str) -> bool:
    path = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text("utf-8"))
    return any(getattr(n, "name", None) == name or
               (isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets))
               for n in tree.body)


def test_one_helper_for_one_thing():
    # dead helpers stay gone, and each helper has one home: is_root in nlc.ir, camel and NameAllocator
    # in nlc.names, the identity MLP's seed in nlc.runtime.memory (the optimizers' MLP memories use it)
    for module, name in [("nlc.ir", "_trivia"), ("nlc.codegen.emit", "_gate"), ("nlc.passes.resolve", "_is_root"),
                         ("nlc.passes.graph_checks", "is_root"), ("nlc.optim.runtime", "MLP_INIT_SEED")]:
        assert not _defines(module, name), f"{module}.{name} is back"
    assert _defines("nlc.ir", "is_root") and _defines("nlc.runtime.memory", "IDENTITY_SEED")
    definitions = [str(p.relative_to(ROOT)) for p in (ROOT / "nlc").rglob("*.py")
                   for n in ast.parse(p.read_text("utf-8")).body
                   if getattr(n, "name", None) in ("camel", "NameAllocator", "is_root", "_camel")]
    assert sorted(definitions) == ["nlc/ir.py", "nlc/names.py", "nlc/names.py"]


def test_is_root_before_and_after_name_resolution():
    import dataclasses

    import nlc
    from nlc import ir

    levels = {lv.name: lv for lv in ir.all_levels(nlc.load(ROOT / "examples" / "adam.nl"))}
    roots = [name for name, lv in levels.items() if ir.is_root(lv)]
    assert len(roots) == 1 and len(levels) == 3
    root = levels[roots[0]]
    assert ir.is_root(dataclasses.replace(root, state=ir.Ref("params")))  # as lowered, before resolution
    assert not ir.is_root(dataclasses.replace(root, state=ir.Ref("param")))
