"""The study drivers (scripts/*.sh) with recording stand-ins for mltrain, mltrain-compare and
third_pick.py: every command a driver runs must compose to a plan as mltrain would compose it
(nothing is trained); runlib's resumable runs are marked done, skipped and reported."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


# --------------------------------------------------------------------------- shell drivers
STUB = r"""#!/bin/bash
# records its arguments (one shell-quoted line) and makes the run or sweep directory (a run's
# with the run.json field scripts/demo.sh reads); one line under a lock, since the demo runs two
# at once (unlocked, their pieces interleaved: "mltrainmltrain ..." on a CI machine)
line="$(basename "$0")$(printf ' %q' "$@")"
{ flock 9; printf '%s\n' "$line" >> "$CALLS"; } 9>> "$CALLS.lock"
for a in "$@"; do case $a in
  hydra.run.dir=*) mkdir -p "${a#*=}"; echo '{"threads": 1}' > "${a#*=}/run.json" ;;
  hydra.sweep.dir=*) mkdir -p "${a#*=}" ;;
esac; done
"""
# third_pick.py's answers for results_third.sh: the lrs tried (best first), a best run (its
# overrides, its name) and a gap to the envelope (within 0.05 nats: every seed runs)
PICK = r"""#!/bin/bash
printf 'python %s\n' "$*" >> "$CALLS"
case "$2 $*" in
  lrs*) echo "4e-3 2e-3" ;; gap*) echo "0.01" ;;
  *growbest_tune*--name*) echo "growbest_tune_L3_sh0.8" ;;
  *--name*) echo "env_L3_lr4e-3_b8_s0" ;; best*) echo "optimizer.lr=4e-3" ;;
esac
"""


def stubs(tmp_path: Path) -> dict:
    """A PATH with stand-ins for mltrain, mltrain-compare and python (the env to use)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    # python3 (scripts/demo.sh reads run.json with it) is this interpreter: /usr/bin and /bin
    # need not have one (Python in /usr/local/bin, a venv, conda)
    py3 = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'
    for name, body in (
        ("mltrain", STUB),
        ("mltrain-compare", STUB),
        ("python", PICK),
        ("python3", py3),
    ):
        (bin_ / name).write_text(body)
        (bin_ / name).chmod(0o755)
    return {
        "PATH": f"{bin_}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "CALLS": str(tmp_path / "calls.log"),
    }


def bash(script: str, *args: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def calls(env: dict, program: str = "mltrain") -> list[list[str]]:
    lines = Path(env["CALLS"]).read_text().splitlines() if Path(env["CALLS"]).exists() else []
    return [shlex.split(x)[1:] for x in lines if x.split(" ", 1)[0] == program]


def first_values(args: list[str]) -> list[str]:
    """A run's overrides: a sweep's first value of each swept key, Hydra's own keys and the
    resume setting left out."""
    out = []
    for a in args:
        if a == "-m" or a.startswith(("hydra.", "train.resume=")):
            continue
        key, _, value = a.partition("=")
        if "," in value and not value.startswith(("[", "(")):
            value = value.split(",")[0]
        out.append(f"{key}={value}" if _ else a)
    return out


# settings that only repeat a command at another seed, budget or branch point
REPEATS = ("train.seed=", "train.flops_scale=", "train.branch_points=", "train.branch_from=")


def assert_compose(commands: list[list[str]], refused: dict | None = None) -> int:
    """Each command composes, validates and sizes its plan as mltrain would (nothing trained),
    but those that hold a key of ``refused`` (override -> the error's start), which must be
    refused so. Returns how many distinct commands were checked."""
    import mltrain.schemes  # noqa: F401
    from mltrain.config import compose, typed, validate
    from mltrain.errors import ConfigError
    from mltrain.plan.plan import build_plan

    seen = set()
    for args in commands:
        over = tuple(a for a in first_values(args) if not a.startswith(REPEATS))
        if over in seen:
            continue
        seen.add(over)
        cfg = compose(list(over))
        validate(cfg)
        known = [v for k, v in (refused or {}).items() if k in over]
        if known:
            with pytest.raises(ConfigError, match=known[0]):
                build_plan(typed(cfg), int(cfg.data.bpe_vocab_size))
        else:
            build_plan(typed(cfg), int(cfg.data.bpe_vocab_size))
    return len(seen)


def test_runlib_marks_done_skips_and_reports_failures(tmp_path):
    env = stubs(tmp_path)
    out = tmp_path / "out"
    lib = SCRIPTS / "runlib.sh"
    script = (
        f'OUT={out}; COMMON="logger=none"; mkdir -p $OUT; . {lib}\n'
        "run a model=tiny; run a model=tiny; sweep s optimizer.lr=0.1,0.2; sweep s x=1\n"
    )
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "== a: mltrain model=tiny logger=none (" + res.stdout.splitlines()[0].rsplit("(", 1)[1],
        "== a: done",
        "== s: mltrain -m optimizer.lr=0.1,0.2 logger=none ("
        + res.stdout.splitlines()[2].rsplit("(", 1)[1],
        "== s: done",
    ]
    assert calls(env) == [
        ["model=tiny", "logger=none", f"hydra.run.dir={out}/a", "train.resume=auto"],
        [
            "-m",
            "optimizer.lr=0.1,0.2",
            "logger=none",
            f"hydra.sweep.dir={out}/s",
            "train.resume=auto",
        ],
    ]
    (tmp_path / "bin" / "mltrain").write_text("#!/bin/bash\nexit 3\n")  # a failing run
    res = subprocess.run(
        ["bash", "-c", script.replace("run a", "run b")], capture_output=True, text=True, env=env
    )
    assert f"!! b failed or was interrupted (run again to continue): {out}/b.log" in res.stdout
    assert not (out / "b" / ".done").exists()
    # a run another stream holds (its lock) is skipped, not started a second time
    n = len(calls(env))
    held = subprocess.Popen(["flock", str(out / "c.lock"), "sleep", "30"])
    try:
        for _ in range(100):  # until the holder has the lock
            if subprocess.run(["flock", "-n", str(out / "c.lock"), "true"]).returncode:
                break
            time.sleep(0.05)
        res = subprocess.run(
            ["bash", "-c", script.replace("run a", "run c")],
            capture_output=True,
            text=True,
            env=env,
        )
    finally:
        held.kill()
        held.wait()
    assert res.stdout.splitlines()[:2] == ["== c: running in another stream, skipped"] * 2
    assert len(calls(env)) == n and not (out / "c.log").exists()  # nothing ran


def test_demo_commands_compose_and_the_compare_follows(tmp_path):
    """The demo's two runs (side by side, so in either order) are the committed rows' commands:
    growth 1 -> 2 blocks and the 1-block model at 1/8 of 3.2e13 FLOPs, one thread each; the
    user's overrides reach both; mltrain-compare follows on the two."""
    env = stubs(tmp_path)
    res = bash("demo.sh", "train.seed=1", env={**env, "DEMO_DIR": str(tmp_path / "d")})
    assert res.returncode == 0, res.stderr
    runs = sorted(calls(env), key=lambda a: a[-1])
    assert [a[-1] for a in runs] == [
        f"hydra.run.dir={tmp_path}/d/{n}" for n in ("growth", "single_best_size")
    ]
    assert calls(env, "mltrain-compare") == [[f"{tmp_path}/d", "--out", f"{tmp_path}/d/compare"]]
    assert assert_compose(runs) == 2
    for a in runs:
        assert {"train.target_flops=3.2e13", "train.flops_scale=0.125", "train.threads=1"} <= set(a)
        assert "train.seed=1" in a and "optimizer.lr=4e-3" in a
    assert "model.n_layer=2" in runs[0] and "coarsening.stages.shares=[0.8,0.2]" in runs[0]
    assert "model.n_layer=1" in runs[1] and "experiment=third_envelope" in runs[1]
    # the committed runs these repeat: the same overrides but the demo's own (logging, eval)
    rec = ROOT / "docs/results/third_edition/runs"
    for a, name in zip(runs, ("growbest_b8_s0", "env_L1_lr4e-3_b8_s0")):
        committed = {
            x.strip("- \n") for x in (rec / name / ".hydra/overrides.yaml").read_text().splitlines()
        }
        keys = {x.split("=")[0] for x in committed} - {
            "logger",
            "train.progress",
            "train.checkpoint_every",
            "train.resume",
            "train.seed",
        }
        mine = {x for x in a if x.split("=")[0] in keys}
        assert mine == {x for x in committed if x.split("=")[0] in keys}, name


def test_envelope_runs_a_trunk_then_its_branches(tmp_path):
    env = {**stubs(tmp_path), "SIZES": "model.n_layer=2", "LRS": "1e-3", "POINTS": "0.25 0.5"}
    out = tmp_path / "env"
    res = bash("envelope.sh", str(out), "model=tiny", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"judge: mltrain-compare METHOD_RUNS --frontier {out}"
    runs = calls(env)
    tag = "n_layer_2_lr1e-3_seed0"
    assert [a[-2] for a in runs] == [
        f"hydra.run.dir={out}/{tag}_{s}" for s in ("trunk", "s0.25", "s0.5")
    ]
    assert "train.branch_points=[0.25,0.5]" in runs[0] and "train.flops_scale=2" in runs[0]
    assert f"train.branch_from={out}/{tag}_trunk" in runs[1] and "train.flops_scale=0.25" in runs[1]
    assert assert_compose(runs) == 1  # one size and lr: the branches repeat the trunk


def test_results_every_part_runs_commands_that_compose(tmp_path):
    env = stubs(tmp_path)
    out = tmp_path / "study"
    parts = bash("results.sh", str(out), "list", env=env).stdout.split()
    assert {"frontier_tune", "growth", "compare"} <= set(parts)
    res = bash("results.sh", str(out), *parts, env={**env, "DOCS": str(tmp_path / "docs")})
    assert res.returncode == 0, res.stderr
    runs = calls(env)
    assert len(runs) > 40 and assert_compose(runs) > 15
    assert len(calls(env, "mltrain-compare")) >= 5
    assert bash("results.sh", str(out), "nope", env=env).returncode == 2


def test_results_third_every_part_runs_commands_that_compose(tmp_path):
    env = stubs(tmp_path)
    out = tmp_path / "third"
    res = bash("results_third.sh", str(out), "env_trunks", env={**env, "PY": "/bin/false"})
    assert res.returncode == 3  # a part whose inputs are missing says so and stops
    assert (
        "!! no finished run for env_probe (L=2) yet: run that part first" in res.stdout + res.stderr
    )
    parts = bash("results_third.sh", str(out), "list", env=env).stdout.split()
    assert {"env_probe", "tune", "seeds", "compare"} <= set(parts)
    res = bash(
        "results_third.sh",
        str(out),
        *parts,
        env={**env, "SIZES": "3", "DOCS": str(tmp_path / "docs")},
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    runs = calls(env)
    assert any("experiment=grow_recursive" in r for r in runs)
    # the width V-cycle at d=48 (3 heads) runs at a third of the width: every command composes
    assert any("coarsening.hierarchy.width_factor=3" in r for r in runs)
    assert len(runs) > 40 and assert_compose(runs) > 15
