"""The architecture's rules (docs/architecture.md): import-linter's contracts in pyproject.toml
hold, and no module but mltrain/train/trainer.py names a private member of the trainer or
assigns a field of the trainer (``run.p = ...``, ``self.trainer.last_checkpoint = ...``)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mltrain"


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (make install installs it)")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def _trainer_privates() -> set[str]:
    """Names of the trainer's private members: methods and attributes starting with one _."""
    tree = ast.parse((PACKAGE / "train" / "trainer.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            names.add(node.name)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self" and node.attr.startswith("_"):
                names.add(node.attr)
    return {n for n in names if not n.startswith("__")}


TRAINER = PACKAGE / "train" / "trainer.py"
# names that refer to a trainer: a handler's or extension's ``run`` / ``trainer`` argument, and
# any ``<object>.trainer`` (the job's)
RUN_NAMES = {"run", "trainer"}


def _trainer_fields() -> set[str]:
    """The trainer's fields: every ``self.<name>`` the trainer assigns."""
    fields = set()
    for node in ast.walk(ast.parse(TRAINER.read_text())):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                if target.value.id == "self":
                    fields.add(target.attr)
    return fields


def _targets(node: ast.AST) -> list[ast.expr]:
    """What an assignment statement assigns (tuple targets unpacked, ``x[k] = ...`` as ``x``)."""
    if isinstance(node, ast.Assign):
        todo = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        todo = [node.target]
    else:
        return []
    out = []
    while todo:
        t = todo.pop()
        if isinstance(t, ast.Tuple | ast.List):
            todo += t.elts
        elif isinstance(t, ast.Starred | ast.Subscript):
            todo.append(t.value)
        else:
            out.append(t)
    return out


def _assigned_trainer_field(target: ast.expr, fields: set[str]) -> str | None:
    """The trainer field that ``target`` assigns or assigns into (``run.p``,
    ``run.records.pending``, ``self.trainer.branch_points``), or None. A name that is not a
    field counts too when assigned on the trainer itself (``run.new = ...``)."""
    chain = []
    node = target
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    chain.reverse()  # attributes from the root outwards
    root = node.id if isinstance(node, ast.Name) else None
    starts = [0] if root in RUN_NAMES else []
    starts += [i + 1 for i, a in enumerate(chain[:-1]) if a == "trainer"]
    for i in starts:
        if i < len(chain) and (chain[i] in fields or i == len(chain) - 1):
            return ".".join(([root] if i == 0 else chain[:i]) + chain[i:])
    return None


def trainer_field_assignments(tree: ast.AST, fields: set[str]) -> list[tuple[int, str]]:
    """(line, target) of every assignment in ``tree`` to a field of the trainer."""
    out = []
    for node in ast.walk(tree):
        for target in _targets(node):
            name = _assigned_trainer_field(target, fields)
            if name is not None:
                out.append((node.lineno, name))
    return out


def _modules_but_the_trainer():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != TRAINER:
            yield path, ast.parse(path.read_text())


def test_no_module_but_the_trainer_names_a_private_trainer_member():
    private = _trainer_privates()
    assert {"_reduce_clip_check", "_wall", "_end_iteration"} <= private  # the scan sees them
    offenders = []
    for path, tree in _modules_but_the_trainer():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, "private trainer members used outside the trainer: " + ", ".join(
        offenders
    )


def test_the_scan_finds_a_private_member_used_elsewhere(tmp_path):
    """The rule can fail: a scheme calling ``run._step`` would be reported."""
    code = "def handler(run, op):\n    run._reduce_clip_check(None, None, None)\n"
    tree = ast.parse(code)
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert used & _trainer_privates() == {"_reduce_clip_check"}


def test_no_module_but_the_trainer_assigns_a_trainer_field():
    fields = _trainer_fields()
    assert {"p", "records", "last_checkpoint", "hooks", "extensions"} <= fields
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path, tree in _modules_but_the_trainer()
        for line, name in trainer_field_assignments(tree, fields)
    ]
    assert not offenders, "trainer fields assigned outside the trainer: " + ", ".join(offenders)


def test_the_scan_finds_trainer_fields_assigned_elsewhere():
    """The rule can fail: what job.py and checkpoint.py did before the trainer owned its state
    is reported, line by line; reading fields, calling methods and assigning other objects'
    fields is not."""
    code = """
def load(run, state):
    run.p = run.records.p = Progress.from_state(state["progress"])
    run.records.notes["delta"] = 0.5
    run.brand_new = 1
    trainer.p.inner += 1
    a, self.trainer.branch_points = 1, {}
    job.trainer.last_checkpoint: Path = path

def fine(run, op, p, state, job):
    run.note("delta", 0.5)
    run.load_state_dict(state)
    loss = run.p.val_loss
    p.grad = None
    state.phases = []
    job.record = job.record.ended("completed")
    self.p = Progress()
"""
    found = trainer_field_assignments(ast.parse(code), _trainer_fields())
    assert sorted(found) == [
        (3, "run.p"),
        (3, "run.records.p"),
        (4, "run.records.notes"),
        (5, "run.brand_new"),
        (6, "trainer.p.inner"),
        (7, "trainer.branch_points"),
        (8, "trainer.last_checkpoint"),
    ]


def test_a_plan_operation_without_a_handler_is_refused_when_the_trainer_is_built(tmp_path):
    """Registration is explicit: an operation no module handles stops the run at start-up,
    naming it, never a KeyError mid-run."""
    from dataclasses import dataclass, replace

    from mltrain.errors import ConfigError
    from mltrain.plan.ops import Operation
    from mltrain.train.trainer import Trainer
    from tests.helpers import make_job

    @dataclass(frozen=True)
    class Unhandled(Operation):
        level: str = "fine"

    job = make_job(tmp_path / "r", "coarsening=none", "train.steps=2")
    stage = replace(job.plan.stages[0], enter=(Unhandled(),))
    plan = replace(job.plan, stages=(stage,))
    with pytest.raises(ConfigError, match=r"the plan has a Unhandled operation but no handler"):
        Trainer(job.typed, job.model, plan, job.data, job.tracker, job.ctx, tmp_path / "r")
    job.close()
