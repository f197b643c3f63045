"""The architecture's rules (docs/architecture.md): import-linter's contracts in pyproject.toml
hold, and no module but mltrain/train/trainer.py names a private member of the trainer or
assigns a field of the trainer (``run.progress = ...``, ``self.trainer.last_checkpoint = ...``),
and the tests mirror the package (the layout rule, :func:`_layout_offenders`)."""

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
    """The trainer field that ``target`` assigns or assigns into (``run.progress``,
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
    assert {"progress", "records", "last_checkpoint", "hooks", "extensions"} <= fields
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
    run.progress = run.records.progress = Progress.from_state(state["progress"])
    run.records.notes["delta"] = 0.5
    run.brand_new = 1
    trainer.progress.inner += 1
    a, self.trainer.branch_points = 1, {}
    job.trainer.last_checkpoint: Path = path

def fine(run, op, p, state, job):
    run.note("delta", 0.5)
    run.load_state_dict(state)
    loss = run.progress.val_loss
    p.grad = None
    state.phases = []
    job.record = job.record.ended("completed")
    self.progress = Progress()
"""
    found = trainer_field_assignments(ast.parse(code), _trainer_fields())
    assert sorted(found) == [
        (3, "run.progress"),
        (3, "run.records.progress"),
        (4, "run.records.notes"),
        (5, "run.brand_new"),
        (6, "trainer.progress.inner"),
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


# --------------------------------------------------------------------------- each scheme in one place
# The schemes this version has, written out (known independently of the registry); the scan
# checks every registered scheme, these and any added since.
KNOWN_SCHEMES = {"single_level", "vcycle", "stages"}


def _scheme_names() -> set[str]:
    from mltrain.config.scheme import SCHEMES

    return set(SCHEMES.names())


def _scheme_name_branches(tree: ast.AST, schemes: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison with a scheme's name as a string literal (``==``,
    ``!=``, ``in`` a tuple/list/set of them), ``match`` case on one, or dict key of one."""

    def names(node) -> list[str]:
        if isinstance(node, ast.Constant) and node.value in schemes:
            return [node.value]
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return [n for e in node.elts for n in names(e)]
        return []

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                out += [(node.lineno, n) for n in names(operand)]
        elif isinstance(node, ast.MatchValue):
            out += [(node.value.lineno, n) for n in names(node.value)]
        elif isinstance(node, ast.Dict):
            out += [(k.lineno, n) for k in node.keys if k is not None for n in names(k)]
    return out


def test_no_module_outside_schemes_branches_on_a_schemes_name():
    """Everything scheme-specific is asked of its Scheme (mltrain.config.scheme.SCHEMES): no
    module outside mltrain/schemes/ compares coarsening.scheme with a name."""
    schemes = _scheme_names()
    assert schemes >= KNOWN_SCHEMES  # the scan knows every scheme
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if (PACKAGE / "schemes") in path.parents:
            continue
        for line, name in _scheme_name_branches(ast.parse(path.read_text()), schemes):
            offenders.append(f"{path.relative_to(ROOT)}:{line} {name!r}")
    assert not offenders, "branches on a scheme's name outside mltrain/schemes/: " + ", ".join(
        offenders
    )


def test_the_scheme_scan_finds_a_branch_on_a_name():
    """The rule can fail: each way of branching on a name is reported, a section name is not."""
    code = (
        'if c.scheme == "vcycle": pass\n'
        'ok = name in ("stages", "other")\n'
        'table = {"single_level": ()}\n'
        "match c.scheme:\n"
        '    case "stages": pass\n'
        'v = c.get("vcycle", {})\n'  # the coarsening.vcycle section: not a branch
    )
    found = _scheme_name_branches(ast.parse(code), KNOWN_SCHEMES)
    assert sorted(found) == [(1, "vcycle"), (2, "stages"), (3, "single_level"), (5, "stages")]


def test_validating_a_config_imports_nothing_above_the_config_layer():
    """mltrain.config reaches no layer above it, not even through importlib: in a fresh
    process, composing and validating loads no module of schemes/, train/, plan/, levels/,
    model/ or data/. The contract: the composition root fills the registries first
    (``import mltrain.schemes``, as mltrain.job and mltrain.cli do); validating before that is
    refused with a message saying so, and after it the same config validates."""
    code = (
        "import sys\n"
        "from mltrain.config import compose, validate\n"
        "from mltrain.config.registries import RegistryNotFilled\n"
        "cfg = compose()\n"
        "try:\n"
        "    validate(cfg)\n"
        "except RegistryNotFilled as e:\n"
        "    print('refused:', e)\n"
        "above = ('schemes', 'train', 'plan', 'levels', 'model', 'data', 'job', 'readback')\n"
        "print('loaded:', sorted(m for m in sys.modules if m.split('.')[:2][-1] in above\n"
        "      and m.startswith('mltrain.')))\n"
        "import mltrain.schemes\n"
        "validate(cfg)\n"
        "print('validated')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(
        "refused: no coarsening.scheme is registered: import mltrain.schemes"
    )
    assert lines[1] == "loaded: []"
    assert lines[2] == "validated"


def test_a_new_scheme_is_labelled_and_grouped_by_its_own_scheme(monkeypatch):
    """A scheme without stages is named by its own label, not as a V-cycle, and its runs are
    grouped by the sections it reads only (the registry, not a branch, decides)."""
    from mltrain.analysis.judging.grouping import base_label, identity
    from mltrain.config.scheme import SCHEMES, Scheme

    toy = Scheme("toy", reads=("hierarchy", "toy"), plan=None, label=lambda f, _l: "toy k=3")
    monkeypatch.setitem(SCHEMES._entries, "toy", toy)
    monkeypatch.setitem(SCHEMES._spellings, "toy", "toy")
    flat = {
        "coarsening.scheme": "toy",
        "coarsening.hierarchy.name": "even_odd",
        "coarsening.vcycle.delta": 0.25,
        "coarsening.toy.k": 3,
    }
    assert base_label(flat, "multilevel") == "multilevel toy k=3"
    assert base_label(flat, "a user's role") == "a user's role toy k=3"
    # the V-cycle's delta is not read by the toy scheme; its own section is
    assert identity(flat, "multilevel") == identity(
        {**flat, "coarsening.vcycle.delta": 0.5}, "multilevel"
    )
    assert identity(flat, "multilevel") != identity({**flat, "coarsening.toy.k": 4}, "multilevel")


# ------------------------------------------------------------------ where a test lives
TESTS = ROOT / "tests"

# Test files whose name is a topic, not a module: {folder (None: tests/ itself): {topic: what
# it tests}}. Every other test file is named after its subject (the layout rule, below).
TOPICS: dict[str | None, dict[str, str]] = {
    "config": {
        "inert": "the settings that do not change training (schema tags) and their consumers",
        "sweeps": "Hydra multirun, the sweep presets and iso-FLOP baselines",
    },
    "train": {
        "gpu_ready": "the CUDA paths of the trainer, tested on the CPU",
        "metrics_json": "metrics.jsonl is strict JSON (writing: tracking, reading: metrics)",
        "validation_set": "one fixed validation set whatever the batch layout",
    },
    "analysis": {"envelope_e2e": "the envelope judged end to end on tiny runs"},
    None: {
        "architecture": "the architecture's rules (this file)",
        "demo": "make demo (scripts/demo.sh)",
        "docs_commands": "the commands the docs print",
        "extras": "the optional Hydra plugins",
        "failures": "how a run fails: divergence, W&B faults, preemption, bad input",
        "golden": "the golden runs, bitwise",
        "gpu_script": "scripts/gpu_check.sh",
        "messages": "messages that misled, tried through the command line",
        "regressions": "faults found when mltrain was tried as users do",
        "results_third": "scripts/results_third.sh",
        "script_drivers": "the study drivers, scripts/*.sh",
        "scripts": "every script's smoke test",
        "smoke_mode": "mode=smoke on every preset",
        "third_pick": "scripts/third_pick.py",
    },
}


def _test_files():
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(TESTS)
        yield (rel.parts[0] if len(rel.parts) > 1 else None), path.stem.removeprefix("test_"), rel


def _layout_offenders() -> list[str]:
    """Test files that break the layout rule: ``tests/<pkg>/`` mirrors a package
    ``mltrain/<pkg>/`` and ``tests/<pkg>/test_<name>.py`` is named after a module of it
    (``mltrain/<pkg>/<name>.py``, or in a sub-package: ``mltrain/<pkg>/<sub>/<name>.py``) or the
    package itself (``<name>`` = ``<pkg>``); a test at the
    top, ``tests/test_<name>.py``, tests a top-level module ``mltrain/<name>.py``; otherwise the
    name is a listed topic (:data:`TOPICS`)."""
    out = []
    for folder, name, rel in _test_files():
        if folder is not None and not (PACKAGE / folder / "__init__.py").exists():
            out.append(f"{rel}: tests/{folder}/ mirrors no package mltrain/{folder}/")
            continue
        home = PACKAGE if folder is None else PACKAGE / folder
        module = (home / f"{name}.py").exists() or (
            folder is not None and any(home.glob(f"*/{name}.py"))
        )
        if module or name == folder or name in TOPICS.get(folder, {}):
            continue
        out.append(f"{rel}: no module {home.relative_to(ROOT)}/{name}.py and not a listed topic")
    return out


def test_tests_mirror_the_package():
    """docs/architecture.md's layout rule holds for every test file, and every listed topic is
    a test file (the list has no stale entry)."""
    assert not _layout_offenders(), "\n".join(_layout_offenders())
    files = {(folder, name) for folder, name, _ in _test_files()}
    stale = [(f, n) for f, topics in TOPICS.items() for n in topics if (f, n) not in files]
    assert not stale, f"topics without a test file: {stale}"


def test_the_layout_rule_can_fail(tmp_path, monkeypatch):
    """A scheme's test under tests/levels/, or an unlisted topic, is reported."""
    for rel in ("levels/test_vcycle.py", "schemes/test_vcycle.py", "test_odds.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    monkeypatch.setattr(sys.modules[__name__], "TESTS", tmp_path)
    assert [o.split(":")[0] for o in _layout_offenders()] == [
        "levels/test_vcycle.py",
        "test_odds.py",
    ]
