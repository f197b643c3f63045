"""Helpers for the tests: tiny configs, in-process jobs, the installed CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TINY = [
    "model=tiny",
    "data.batch_size=4",
    "logger=none",
    "train.eval_batches=2",
    "train.log_every=1000",
    "train.progress=false",
    "schedule.warmup_steps=0",
]


# presets that need an optional Hydra plugin (`make install-extras`), and the module it brings
PLUGIN_PRESETS = {"optuna_delta": "hydra_plugins.hydra_optuna_sweeper"}


def has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package (hydra_plugins) is missing
        return False


def plugin_missing(preset: str) -> bool:
    module = PLUGIN_PRESETS.get(preset)
    return module is not None and not has_module(module)


def compose(*overrides: str):
    """The config of ``mltrain <TINY> <overrides>``."""
    from mltrain.config import compose as _compose

    return _compose(TINY + list(overrides))


def make_job(run_dir: Path, *overrides: str):
    """A :class:`mltrain.job.Job` on one CPU process for ``compose(*overrides)``."""
    from mltrain.job import Job
    from mltrain.train.distributed import DistContext

    return Job(compose(*overrides), run_dir, DistContext())


def run_job(run_dir: Path, *overrides: str):
    """:func:`make_job`, run to the end and closed; returns the job (its model, trainer...)."""
    job = make_job(run_dir, *overrides)
    try:
        job.run()
    finally:
        job.close()
    return job


def losses(run_dir: Path) -> list[tuple]:
    """(step, level, train/loss, val/loss) of every record of a run: what a resumed run must
    repeat bit for bit."""
    recs = read_jsonl(run_dir / "metrics.jsonl")
    return [(r["step"], r["level"], r.get("train/loss"), r.get("val/loss")) for r in recs]


def final_params(run_dir: Path) -> dict:
    """The model tensors of the run's newest checkpoint."""
    from mltrain.train.checkpoint import list_checkpoints, load_checkpoint

    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["model"]


def stop_after(job, n_steps: int) -> None:
    """Deliver a preemption signal after ``n_steps`` optimizer steps (in-process SIGTERM)."""
    import signal

    t = job.trainer
    original = t.take_step

    def step(level, *args):
        original(level, *args)
        if t.p.step == n_steps:
            t.signals.signum = signal.SIGTERM

    t.take_step = step


def preempt(run_dir: Path, *overrides: str, stop_at: int, match: str | None = None) -> None:
    """Run ``compose(*overrides)`` in ``run_dir`` until a SIGTERM after ``stop_at`` optimizer
    steps stops it (:class:`mltrain.errors.Preempted`, message matching ``match``), then close
    it as the preempted process would; resume it with ``train.resume=auto``."""
    import pytest

    from mltrain.errors import Preempted

    job = make_job(run_dir, *overrides)
    stop_after(job, stop_at)
    with pytest.raises(Preempted, match=match):
        job.run()
    job.close()


def run_mltrain(
    args: list[str],
    cwd: Path,
    timeout: float = 300,
    entry: str = "mltrain",
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """The installed console script (``mltrain`` or ``mltrain-compare``) in a subprocess."""
    exe = Path(sys.executable).parent / entry
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cli(args: list[str], cwd: Path, capsys) -> tuple[int, str, str]:
    """``mltrain <args>`` in this process (the real entry point, without interpreter start-up):
    returns (exit status, stdout, stderr)."""
    from mltrain import cli as entry

    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["mltrain", *args]
    os.chdir(cwd)
    code = 0
    try:
        entry.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        entry.FAILED_JOBS.clear()
    out = capsys.readouterr()
    return code, out.out, out.err


def digest(folder: Path) -> dict:
    """Every file under ``folder``: size, mtime and content hash (to prove nothing changed)."""
    import hashlib

    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``), read by
    :func:`mltrain.train.tracking.read_wandb_records` (LevelDB's log format, checksums checked)."""
    from mltrain.train.tracking import read_wandb_records

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    return read_wandb_records(path)


def flat_coarsening(coarsening: dict) -> dict:
    """A ``coarsening`` config section as mltrain wrote it before the sections and the explicit
    ``coarsening.scheme`` (one flat dict, old key names; :data:`mltrain.config.RENAMED`)."""
    from mltrain.config import RENAMED

    old_of = {
        new.split(".", 1)[1]: old.split(".", 1)[1]
        for old, new in RENAMED.items()
        if old.startswith("coarsening.")
    }
    # width levels: no flat name
    added_since = {"hierarchy.width_factor", "hierarchy.width_factors", "vcycle.alpha"}
    out = {}
    for section, value in coarsening.items():
        if section == "scheme":
            continue
        for key, v in value.items():
            if f"{section}.{key}" not in added_since:
                out[old_of[f"{section}.{key}"]] = v
    return out
