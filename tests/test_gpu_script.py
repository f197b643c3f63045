"""scripts/gpu_check.sh end to end in its CPU dry run: the tiny model, a few steps.

Slow (about 2 minutes): `make test-all`. The GPU run itself needs a CUDA device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_part_and_equal_flops_runs(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={
            **os.environ,
            # the script calls python, mltrain and mltrain-compare: this environment's
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": "1",
        },
    )
    assert res.returncode == 0, res.stderr[-2000:]
    log = (out / "gpu_check.log").read_text()
    assert "done:" in log
    budget = float(re.search(r"training FLOPs with head\): (\S+)", log).group(1))
    for part in ("pytest_gpu.log", "throughput.txt", "compare.txt", "compare/summary.md"):
        assert (out / part).is_file(), part
    runs = {"paper_recipe", "best_scheme", "single_level_same_flops", "single_level_same_flops_wsd"}
    assert {p.name for p in (out / "runs").iterdir()} == runs

    def last(name):
        return [json.loads(x) for x in (out / "runs" / name / "metrics.jsonl").open()][-1]

    # a single-level fine step's FLOPs: a run sized by train.target_flops=budget spends the
    # budget within one such step (single-level: rounded down; stages: each stage's share)
    sl = last("single_level_same_flops")
    fine_step = sl["perf/flops"] / sl["fine_step"]
    for name in runs - {"paper_recipe"}:
        spent = last(name)["perf/flops"]
        assert abs(spent - budget) < fine_step, (name, spent, budget, fine_step)
    assert sl["perf/flops"] <= budget
    recipe = [json.loads(x) for x in (out / "runs" / "paper_recipe" / "metrics.jsonl").open()]
    assert recipe[-1]["perf/flops"] == pytest.approx(budget, rel=1e-9)  # the budget is its FLOPs


def _stubs(tmp_path: Path, nvidia_ok: bool) -> tuple[Path, Path]:
    """A PATH folder with stand-ins for nvidia-smi, timeout, python, mltrain and
    mltrain-compare that record (working directory, arguments) in calls.log."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls.log"
    stubs.mkdir(parents=True)
    record = f'echo "$PWD|$(basename "$0") $*" >> {calls}\n'
    scripts = {
        "nvidia-smi": "echo 'GPU 0: NVIDIA H100 80GB HBM3'" if nvidia_ok else "exit 9",
        "timeout": record + 'shift\nexec "$@"',
        # the CUDA check reads its program from stdin; flops_budget prints the budget
        "python": record
        + 'case "$*" in *flops_budget*) echo 123456789 ;; -) cat >/dev/null; echo "NVIDIA H100 80GB HBM3, torch 2.x" ;; esac',
        "mltrain": record,
        "mltrain-compare": record,
    }
    for name, body in scripts.items():
        (stubs / name).write_text("#!/bin/bash\n" + body + "\n")
        (stubs / name).chmod(0o755)
    return stubs, calls


def _gpu_check(tmp_path: Path, stubs: Path, env: dict) -> subprocess.CompletedProcess:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "out"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=elsewhere,  # launched from outside the repository
        env={"PATH": f"{stubs}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path), **env},
    )


def test_gpu_check_without_a_gpu_stops_at_once_with_one_line_and_writes_nothing(tmp_path):
    stubs, _ = _stubs(tmp_path, nvidia_ok=False)
    res = _gpu_check(tmp_path, stubs, {})
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no CUDA device here" in res.stderr
    assert not (tmp_path / "elsewhere" / "out").exists()
    # a GPU listed, but this torch is a CPU build: the same, one line naming torch
    stubs, _ = _stubs(tmp_path / "b", nvidia_ok=True)
    res = _gpu_check(tmp_path / "b", stubs, {"PYTHON": sys.executable})
    if "sees no CUDA device" not in res.stderr:
        pytest.skip("this torch sees a CUDA device")
    assert res.returncode == 1 and res.stdout == "" and res.stderr.count("\n") == 1
    assert not (tmp_path / "b" / "elsewhere" / "out").exists()


def test_gpu_check_runs_every_step_from_the_repository_root_within_eight_minutes(tmp_path):
    stubs, calls = _stubs(tmp_path, nvidia_ok=True)
    res = _gpu_check(tmp_path, stubs, {"PYTHON": str(stubs / "python")})
    assert res.returncode == 0, res.stderr
    lines = [line.split("|", 1) for line in calls.read_text().splitlines()]
    assert {cwd for cwd, _ in lines} == {str(ROOT)}
    limited = [cmd.split() for _, cmd in lines if cmd.startswith("timeout ")]
    assert sum(int(c[1]) for c in limited) <= 8 * 60
    steps = [" ".join(c[2:]) for c in limited]
    assert len(steps) == 8, steps  # tests, benchmark, budget, 4 runs, compare
    assert "-m pytest -q -m gpu" in steps[0] and "--device cuda" in steps[1]
    runs = [s for s in steps if s.startswith(str(stubs / "mltrain "))]
    assert len(runs) == 4 and all("train.device=cuda" in s for s in runs)
    assert all("train.target_flops=123456789" in s for s in runs[1:])
    out = tmp_path / "elsewhere" / "out"  # OUTDIR relative to the caller's directory
    assert "done:" in (out / "gpu_check.log").read_text()
    # a failing step stops the script with its log
    (stubs / "mltrain").write_text("#!/bin/bash\necho 'CUDA error: out of memory'; exit 3\n")
    res = _gpu_check(tmp_path / "again", stubs, {"PYTHON": str(stubs / "python")})
    assert res.returncode == 1
    assert "run paper_recipe failed (exit status 3)" in res.stderr
    assert "CUDA error: out of memory" in res.stderr


def _script_runs(device: str = "cuda") -> dict[str, list[str]]:
    """The overrides of each run gpu_check.sh makes on a GPU (``cuda``: its non-dry-run
    settings) or in its dry run (``cpu``), read from the script itself."""
    import re
    import shlex

    text = (ROOT / "scripts" / "gpu_check.sh").read_text()

    def var(name: str) -> str:
        return re.findall(rf'^\s*{name}="([^"]*)"', text, re.M)[-1]

    # the branch: the SIZE that names the device, and the step counts on the line after it
    pattern = rf'^\s*SIZE="([^"]*train.device={device}[^"]*)"\n(.*)$'
    size, counts = re.findall(pattern, text, re.M)[0]
    values = dict(re.findall(r"(\w+)=(\d+)", counts))
    common = var("COMMON").replace("$SIZE", size)
    for k, v in values.items():
        common = common.replace(f"${k}", v)
    recipe = var("RECIPE")
    for k, v in values.items():
        recipe = recipe.replace(f"${k}", v)
    split = shlex.split
    return {
        "paper_recipe": split(common) + split(recipe),
        "best_scheme": split(common) + split(var("BEST")),
        "single_level_same_flops": split(common) + ["coarsening=none"],
        "single_level_same_flops_wsd": split(common) + split(var("SL_BEST")),
    }


def test_the_dry_run_runs_compose_to_their_schemes():
    """The dry run's four runs (tiny model, a few steps) on the CPU: the budget run is the
    paper recipe's V-cycle, the others sized by its FLOPs (the slow test runs them; its
    benchmark step is tests/test_scripts.py's bench_throughput test)."""
    import mltrain.schemes  # noqa: F401
    from mltrain.config import compose, typed, validate
    from mltrain.plan.plan import build_plan

    runs = _script_runs("cpu")
    plans = {}
    for name, overrides in runs.items():
        cfg = compose(overrides + ["train.target_flops=1e9"] * (name != "paper_recipe"))
        validate(cfg)
        assert cfg.model.n_layer == 4 and cfg.train.device == "cpu", name  # model=tiny
        plans[name] = build_plan(typed(cfg), 8192)
    (stage,) = plans["paper_recipe"].stages  # 8 steps, V-cycles in the first 2 of 2+2 steps
    assert stage.iterations == 8 and stage.cycle_at == range(0, 2)
    assert plans["paper_recipe"].steps_per_level() == {"fine": 8, "coarse_a": 4, "coarse_b": 4}
    assert [s.level for s in plans["best_scheme"].stages] == ["coarse_2", "coarse_1", "fine"]
    assert not plans["single_level_same_flops"].multilevel


def test_every_run_of_the_script_composes_to_its_own_scheme_in_either_order():
    """The best scheme keeps its stages whatever preset is composed with it (experiment=paper's
    V-cycle settings live in coarsening.vcycle, which a staged run does not read), and the
    plan of each run is what the script's comments say, with its overrides in either order."""
    import mltrain.schemes  # noqa: F401
    from mltrain.config import compose, typed, validate
    from mltrain.plan.plan import build_plan

    runs = _script_runs()
    assert "experiment=paper" in runs["best_scheme"]
    for name, overrides in runs.items():
        plans = []
        for order in (overrides, list(reversed(overrides))):
            cfg = compose(order)
            validate(cfg)
            plans.append(build_plan(typed(cfg), None))
        a, b = plans
        assert [(s.level, s.iterations, s.cycle, s.cycle_at) for s in a.stages] == [
            (s.level, s.iterations, s.cycle, s.cycle_at) for s in b.stages
        ], name
        if name == "best_scheme":
            assert [s.level for s in a.stages] == ["coarse_2", "coarse_1", "fine"]
            assert all(not s.cycle for s in a.stages)  # no V-cycle inherited from the preset
        elif name == "paper_recipe":
            (stage,) = a.stages
            assert stage.cycle_at == range(0, 10) and len(stage.cycle) == 7
        else:
            assert not a.multilevel and len(a.levels) == 1
