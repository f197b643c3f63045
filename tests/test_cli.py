"""The installed ``mltrain`` command, as a user runs it (subprocess, temporary cwd)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_mltrain


def test_smoke_run_writes_only_its_run_directory(tmp_path):
    """Default model, multilevel default (even_odd), mode=smoke, through the console script."""
    res = run_mltrain(["mode=smoke"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]  # nothing else in the cwd
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    for f in (
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "mltrain.log",
        "metrics.jsonl",
    ):
        assert (run_dir / f).is_file(), f
    assert list((run_dir / "checkpoints").glob("ckpt_*.pt"))
    recs = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in recs if "train/loss" in r]
    assert all(math.isfinite(r["train/loss"]) for r in train)
    flops = [r["perf/flops"] for r in train]
    assert all(a < b for a, b in zip(flops, flops[1:]))
    # mode=smoke: 1 V-cycle (2 coarse steps per level) then fine steps, in the paper's order
    assert [r["level"] for r in train] == [
        "fine",
        "coarse_a",
        "coarse_a",
        "coarse_b",
        "coarse_b",
        "fine",
        "fine",
        "fine",
    ]
    assert "final val/loss" in res.stderr + res.stdout


def test_bad_input_is_one_line_nonzero_and_leaves_no_run_directory(tmp_path):
    res = run_mltrain(["mode=smoke", "model.n_embd=100", "model.n_head=3"], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "mltrain: error: model.n_embd=100 must be divisible by model.n_head=3"
    ]
    assert not any((tmp_path / "outputs" / "runs").glob("*"))


@pytest.mark.parametrize("multirun", [[], ["-m", "train.seed=0,1"]])
def test_a_value_that_does_not_resolve_is_one_line_and_leaves_no_directory(tmp_path, multirun):
    """``train.steps=${oops}`` printed Hydra's "Error executing job with overrides" before the
    error line and left the run directory (and in a sweep, every job's directory and a failed
    job each), found by a helper."""
    res = run_mltrain([*multirun, "mode=smoke", "train.steps=${oops}"], cwd=tmp_path)
    where = "job 0 of the sweep's 2 (train.seed=0): " if multirun else ""
    tail = "; no job was started" if multirun else ""
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"mltrain: error: {where}Interpolation key 'oops' not found{tail}"
    ]
    assert not (tmp_path / "outputs").exists()


def test_a_run_directory_another_process_trains_in_is_refused_and_left_as_it_is(tmp_path, capsys):
    """A command pasted twice (or a resume while the run still goes) trained two processes into
    one directory, each overwriting the other's checkpoints and records (found by a helper).
    A job holds its directory with flock; here another process holds it (this test, through
    the same lock file), so the job is refused in one line and the directory is unchanged."""
    import fcntl

    from tests.helpers import cli, digest

    run_dir = tmp_path / "run"
    args = [
        "mode=smoke",
        "model=tiny",
        "data.batch_size=4",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]
    code, _, err = cli(args, tmp_path, capsys)
    assert code == 0, err
    before = digest(run_dir)
    with open(run_dir / ".mltrain.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out, err = cli([*args, "train.resume=auto"], tmp_path, capsys)
        assert code == 2 and err.strip().splitlines() == [
            f"mltrain: error: another mltrain process is running in {run_dir}: let it finish (it "
            "resumes with train.resume=auto if stopped), or give another hydra.run.dir"
        ]
        assert digest(run_dir) == before and not out.strip()
    code, _, err = cli([*args, "train.resume=auto"], tmp_path, capsys)  # released: it runs
    assert code == 0, err


def test_help_lists_the_config_groups(tmp_path):
    """The groups a user chooses, and no internal one: the optimizers' schemas were listed as
    a group ``schema/optimizer: adamw, sgd`` that no user sets."""
    res = run_mltrain(["--help"], cwd=tmp_path)
    assert res.returncode == 0
    section = res.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    groups = [line.split(":", 1)[0] for line in section.splitlines()[2:] if line.strip()]
    assert groups == [
        "coarsening",
        "data",
        "experiment",
        "logger",
        "mode",
        "model",
        "optimizer",
        "schedule",
    ]
    assert "optimizer: adamw, sgd" in section.splitlines()
    assert "schema/" not in res.stdout


def test_regular_wheel_install_finds_the_configs(tmp_path):
    """A non-editable install carries conf/ inside the package (mltrain/conf)."""
    repo = Path(__file__).resolve().parents[1]
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(repo),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("mltrain-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "mltrain" / "conf" / "config.yaml").is_file()
    env = {"PYTHONPATH": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c", "import mltrain.config as c; print(c.config_dir())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert Path(probe.stdout.strip()) == target / "mltrain" / "conf"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mltrain.cli",
            "mode=smoke",
            "model=tiny",
            "train.steps=2",
            "coarsening=none",
            "data.batch_size=2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert list((tmp_path / "outputs" / "runs").glob("*/metrics.jsonl"))


@pytest.mark.parametrize("entry", ["mltrain", "mltrain-compare"])
def test_console_scripts_are_installed(entry):
    assert (Path(sys.executable).parent / entry).exists()
