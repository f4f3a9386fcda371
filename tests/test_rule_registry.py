"""The rule registry (nlc/rules) is the one place a rule lives: nothing else names a rule, the
language's builtin table and the trainer's contract are derived from it, and every entry is whole."""

import ast
import importlib
from pathlib import Path

import pytest

from nlc import builtins as B
from nlc.rules import RULES, step_level_rules
from nlc.runtime import scan
from nlc.runtime.steplevel import StepLevelSpec

NLC = Path(__file__).resolve().parent.parent / "nlc"


def rule_name_literals(path: Path) -> list[str]:
    """`file:line` of every string literal in a Python module or template that is exactly a rule's name."""
    text = path.read_text()
    if path.suffix == ".py":
        nodes = ast.walk(ast.parse(text))
        return [f"{path}:{n.lineno} {n.value!r}" for n in nodes
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in RULES]
    return [f"{path}:{i} {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
            if any(f'"{r}"' in line or f"'{r}'" in line for r in RULES)]


def test_no_rule_is_named_outside_the_registry():
    files = [p for p in NLC.rglob("*") if p.suffix in (".py", ".j2") and "rules" not in p.relative_to(NLC).parts[:1]]
    found = [hit for p in files for hit in rule_name_literals(p)]
    assert not found, "rule names outside nlc/rules (ask nlc.rules.RULES instead):\n" + "\n".join(found)


def test_the_grep_finds_a_rule_name_where_there_is_one(tmp_path):
    bad = tmp_path / "consumer.py"
    bad.write_text('if rule == "momentum":\n    pass\n')
    assert rule_name_literals(bad) == [f"{bad}:1 'momentum'"]


def test_the_builtin_table_is_the_registry():
    assert list(B.UPDATE_RULES) == list(RULES)
    for name, rule in RULES.items():
        assert B.UPDATE_RULES[name].args == rule.args and B.UPDATE_RULES[name].doc == rule.doc
    assert B.STEP_LEVEL_RULES == step_level_rules()


@pytest.mark.parametrize("name", list(RULES))
def test_every_entry_is_whole(name):
    rule = RULES[name]
    assert rule.name == name and rule.doc and rule.step.__doc__
    assert rule.buffers == len(rule.aux) == len(set(rule.aux))
    assert "n" not in rule.aux  # the count of a counting rule's in-context state
    if rule.chunk is not None:  # chunk.py with its naive.py beside it, and the runtime knows it
        chunk = importlib.import_module(f"{rule.chunk.package}.chunk")
        naive = importlib.import_module(f"{rule.chunk.package}.naive")
        assert callable(chunk.chunk) and callable(chunk.apply) and callable(chunk.coefficients)
        assert callable(naive.reference)
        assert scan.KERNELS[name] is chunk
        assert rule.chunk.carries in (None, *rule.aux)
    if rule.step_level:  # the trainer reads a step-level rule's arguments from StepLevelSpec's fields
        assert {a.name for a in rule.args} <= set(StepLevelSpec.__dataclass_fields__)


def test_the_front_end_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, nlc.builtins, nlc.passes.pipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=NLC.parent, env={"PYTHONPATH": str(NLC.parent)})
    assert out.stdout.strip() == "False"
