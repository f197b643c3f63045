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
    "train.eval_sequences=8",
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
    """A :class:`mltrain.job.Job` in this process for ``compose(*overrides)``, on the device a
    test names (``train.device=cuda``: the GPU; it then needs CUDA), else on the CPU (the
    default ``auto`` stays on the CPU here, so results do not depend on the machine).

    Raises:
        ConfigError: ``train.device=cuda`` where CUDA is not available."""
    import torch

    from mltrain.job import Job
    from mltrain.train.distributed import DistContext, resolve_device

    cfg = compose(*overrides)
    setting = str(cfg.train.device)
    device = torch.device("cpu") if setting == "auto" else resolve_device(setting)
    return Job(cfg, run_dir, DistContext(device=device))


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
    original = t.train_step

    def step(level, *args):
        original(level, *args)
        if t.progress.steps == n_steps:
            t.signals.signum = signal.SIGTERM

    t.train_step = step


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


class PassCounter:
    """Counts the forward and backward passes a model actually runs, and prices each by the
    FLOP convention of DESIGN.md section 3, written out here from the text (not imported from
    mltrain.model.flops), so a test of a run's recorded FLOPs checks them against the passes
    that ran rather than against the plan's own arithmetic.

    Forward hooks on every block and on the head see each pass: a block evaluation on a
    ``(B, T, d)`` input costs ``B·T·(24·d² + 4·T·d)`` FLOPs, the head on ``(B, T, d)``
    ``B·T·2·d·V`` (the pass ends there), embeddings 0. A gradient hook on the logits sees the
    backward pass (``.backward()`` or ``torch.autograd.grad``), which costs 2 × the forward of
    its pass. Passes inside ``trainer.evaluate`` (validation, growth's measurements) are kept
    apart as evaluation passes (``perf/flops_eval``).

    ``passes``: one dict per pass (``blocks``: block evaluations, ``path``: the blocks in the
    order evaluated, ``positions``: B·T, ``tokens``: the token ids embedded, ``forward``/``nonembed``: its forward FLOPs with and
    without the head, ``backward``: 0 or 1, ``eval``: inside ``trainer.evaluate``,
    ``training``: the model's mode).
    """

    def __init__(self, model, trainer=None) -> None:
        self.passes: list[dict] = []
        self._blocks: list[tuple[int, int]] = []  # (block, FLOPs) of the pass in flight
        self._in_eval = 0
        self._handles = [
            b.register_forward_hook(lambda m, a, out, i=i: self._on_block(i, a[0]))
            for i, b in enumerate(model.blocks)
        ]
        self._handles.append(model.lm_head.register_forward_hook(self._on_head))
        self._tokens = 0  # token ids the pass in flight embedded (K·B·T at a patch level)
        self._handles.append(
            model.wte.register_forward_hook(
                lambda m, a, out: setattr(self, "_tokens", a[0].numel())
            )
        )
        self.model = model
        if trainer is not None:  # an instance attribute shadows the method for this trainer
            evaluate = trainer.evaluate

            def counted(*args, **kwargs):
                self._in_eval += 1
                try:
                    return evaluate(*args, **kwargs)
                finally:
                    self._in_eval -= 1

            trainer.evaluate = counted

    def _on_block(self, i: int, x) -> None:
        B, T, d = x.shape
        self._blocks.append((i, B * T * (24 * d * d + 4 * T * d)))

    def _on_head(self, module, args, logits) -> None:
        x = args[0]
        positions, d, V = x.numel() // x.shape[-1], x.shape[-1], module.weight.shape[0]
        nonembed = sum(f for _, f in self._blocks)
        rec = {
            "blocks": len(self._blocks),
            "path": tuple(i for i, _ in self._blocks),
            "positions": positions,
            "tokens": self._tokens,
            "nonembed": nonembed,
            "forward": nonembed + positions * 2 * d * V,
            "backward": 0,
            "eval": self._in_eval > 0,
            "training": self.model.training,
        }
        self._blocks = []
        self.passes.append(rec)
        if logits.requires_grad:
            logits.register_hook(lambda g, rec=rec: rec.update(backward=rec["backward"] + 1))

    def flops(self, eval: bool = False, head: bool = True) -> int:
        """FLOPs of the counted passes (training passes, or with ``eval`` the evaluation ones):
        forward + 2 × forward per backward."""
        key = "forward" if head else "nonembed"
        return sum(p[key] * (1 + 2 * p["backward"]) for p in self.passes if p["eval"] == eval)

    def training(self) -> list[dict]:
        """The passes outside evaluation that ran a backward pass (optimizer steps, gradients)."""
        return [p for p in self.passes if p["backward"] and not p["eval"]]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def val_loss_by_hand(model, val_batches, micro: int, path) -> float:
    """Mean cross-entropy (nats/token) of ``model`` along ``path`` on the validation windows
    ``(N, T+1)``, in evaluation mode, in chunks of ``micro`` windows weighted by their size
    (float64 sums): the number a run records as ``val/loss``, computed outside the trainer."""
    import torch

    was = model.training
    model.eval()
    num = den = 0.0
    with torch.no_grad():
        for b in val_batches.split(micro):
            _, loss = model(b[:, :-1], b[:, 1:], path=path)
            num, den = num + loss.double().item() * len(b), den + len(b)
    model.train(was)
    return num / den


def counted_run(run_dir: Path, *overrides: str):
    """:func:`run_job` with a :class:`PassCounter` on the model and trainer from the start;
    returns (job, counter)."""
    job = make_job(run_dir, *overrides)
    counter = PassCounter(job.model, job.trainer)
    try:
        job.run()
    finally:
        job.close()
        counter.close()
    return job, counter


def run_torchrun(cwd: Path, *overrides: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=<nproc> -m mltrain.cli <TINY> <overrides>`` in
    ``cwd`` (gloo on the CPU, one thread per process); fails the test with the end of stderr
    when it does not exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", "-m", "mltrain.cli"]
    res = subprocess.run(
        [*cmd, *TINY, *overrides], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res
