"""The architecture's rules (docs/architecture.md): import-linter's contracts in pyproject.toml
hold, and no module outside mltrain/train/ names a private member of the trainer."""

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


def test_no_module_outside_train_names_a_private_trainer_member():
    private = _trainer_privates()
    assert "_reduce_clip_check" in private  # the scan sees the trainer's private methods
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "train" and path.parent.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, "private trainer members used outside mltrain/train/: " + ", ".join(
        offenders
    )


def test_the_scan_finds_a_private_member_used_elsewhere(tmp_path):
    """The rule can fail: a scheme calling ``run._step`` would be reported."""
    code = "def handler(run, op):\n    run._reduce_clip_check(None, None, None)\n"
    tree = ast.parse(code)
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert used & _trainer_privates() == {"_reduce_clip_check"}


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
