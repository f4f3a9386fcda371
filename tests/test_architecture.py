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


# ---- what check hands forward (docs/design.md §2.4) ----------------------------------------------------


def private_pass_imports(package_dir: Path, passes: str = "nlc.passes") -> list[str]:
    """`module: from M import _name` for every module outside `passes` importing a private name of a pass."""
    out = []
    for module, path in modules(package_dir).items():
        if _inside(module, [passes]):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and _inside(node.module, [passes]):
                out += [f"{module}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
    return sorted(out)


def test_nothing_outside_the_passes_imports_a_private_helper_of_a_pass():
    bad = private_pass_imports(ROOT / "nlc")
    assert not bad, "take the fact from `Checked.facts` (nlc.passes.facts) instead:\n" + "\n".join(bad)


def test_a_private_import_from_a_pass_is_found(tmp_path):
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/passes/__init__.py": "",
        "pkg/passes/shapes.py": "def _bind(): pass\ndef run(): pass\n",
        "pkg/passes/size.py": "from pkg.passes.shapes import _bind\n",  # inside the passes: allowed
        "pkg/plan.py": "from pkg.passes.shapes import run, _bind\n",
    })
    assert private_pass_imports(pkg, "pkg.passes") == ["pkg.plan: from pkg.passes.shapes import _bind"]


class _Refused(dict):
    """A builtin table that fails when read: nothing may bind a state call again after the check."""

    def __getitem__(self, key):
        raise AssertionError(f"`{key}` was bound again after the check")

    get = __getitem__


def _recomputing_refused(monkeypatch):
    import nlc.plan.optimizer
    import nlc.passes.params
    import nlc.passes.shapes
    import nlc.plan.model

    def refuse(*args, **kwargs):
        raise AssertionError("a constant or a period was folded again after the check")

    monkeypatch.setattr(nlc.passes.shapes._Typer, "state_shape", refuse)
    for module in (nlc.passes.params, nlc.plan.model, nlc.plan.optimizer):
        monkeypatch.setattr(module, "fold", refuse, raising=False)


def test_planning_reads_the_checkers_facts_and_recomputes_nothing(monkeypatch):
    import nlc
    import nlc.builtins
    from nlc.plan.optimizer import plan_optimizer
    from nlc.passes.pipeline import check_ir
    from nlc.plan import plan_model

    checked = {path.name: check_ir(nlc.load(path), {"dim": 16}
                                   if nlc.load(path).is_model else {}) for path in sorted((ROOT / "examples").glob("*.nl"))}
    _recomputing_refused(monkeypatch)
    with monkeypatch.context() as states:
        # (the optimizer plan keeps an MLP memory's arguments as expressions: they are hyper-parameters)
        states.setattr(nlc.builtins, "STATES", _Refused())
        models = [plan_model(c) for c in checked.values() if c.program.is_model]
    optimizers = [plan_optimizer(c.program, c.params, c.facts) for c in checked.values() if not c.program.is_model]
    assert len(models) >= 10 and len(optimizers) >= 5
    m3 = next(p for p in optimizers if p.name == "m3")
    assert sorted({lv.period_value for lv in m3.levels}) != [1]  # its slow momentum's period came from the facts


def test_the_facts_tell_apart_blocks_that_share_a_name():
    import nlc
    from nlc.passes.facts import Frequency, StateShape
    from nlc.passes.pipeline import check_ir
    from nlc.plan import plan_model

    level = ("level m {{ state {state} init zeros context (x, x) update gd period {period} tokens }}\n"
             "      out = m(x)")
    text = f"""model twins(dim = 8, vocab = 16, width = 2 * dim) {{
  block layer {{
      {level.format(state="mlp(dim, width, depth = 3, residual = false)", period=2)}
  }}
  repeat 2 {{
    block layer {{
      {level.format(state="vector(dim)", period=4)}
    }}
  }}
}}
"""
    checked = check_ir(nlc.loads(text))
    blocks = [b for _, b in __import__("nlc.ir", fromlist=["scopes"]).scopes(checked.program)]
    first, second = (checked.facts.scope(b) for b in blocks)
    assert first.shapes["m"] == StateShape("mlp", 8, 8, hidden=16, depth=3, residual=False)
    assert second.shapes["m"] == StateShape("vector", 8, 8)
    assert (first.periods["m"], second.periods["m"]) == (Frequency(nlc.ir.PeriodUnit.TOKENS, 2),
                                                         Frequency(nlc.ir.PeriodUnit.TOKENS, 4))
    plan = plan_model(checked)
    assert [(b.levels[0].kind, b.levels[0].period) for b in plan.blocks] == [("mlp", 2), ("vector", 4), ("vector", 4)]
    assert plan.blocks[0].levels[0].weights == {"W0": (8, 16), "W1": (16, 16), "W2": (16, 8)}


def test_every_package_ships():
    """A package under nlc/ that pyproject.toml does not list would be missing from a wheel (an editable
    install hides it): nlc/rules' subpackages were, when they were added."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "nlc").rglob("__init__.py")}
    assert not found - listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
