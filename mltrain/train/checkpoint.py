"""Crash-safe checkpoints in ``<run_dir>/checkpoints/``.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
renamed over its final name (``ckpt_<step>.pt``, ``step`` = optimizer steps of all levels),
and the folder is fsync'ed; so a kill at any moment leaves either the previous set of
checkpoints or the new one, never a half-written file under a final name. The newest
``keep`` checkpoints are kept. Loading tries the newest first and falls back to an older
one, with a warning, when a file is truncated or corrupt.

Checkpoints are plain dicts loaded with ``torch.load(weights_only=True)``: tensors,
numbers, strings, lists and dicts only. This module owns their format: :func:`make_state`
wraps the trainer's part (:meth:`mltrain.train.trainer.Trainer.state_dict`: model, optimizers,
progress, extensions' state, sampler, RNGs, pending record) with what identifies the run
(config, data fingerprint, W&B run id, whether the state is finite), :func:`check_fits`
decides whether a checkpoint may continue a given run, and :func:`extension_states` reads the
extensions' state of checkpoints of every version. The trainer writes and restores its own
part (:meth:`~mltrain.train.trainer.Trainer.save`,
:meth:`~mltrain.train.trainer.Trainer.load_state_dict`).

A checkpoint written when the state was not finite (a diverged run) is marked unhealthy: it is
never called "the last good checkpoint" and ``train.resume=auto`` takes the newest healthy one.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from mltrain.config import flatten, is_inert, upgrade
from mltrain.config.scheme import SCHEMES
from mltrain.errors import CheckpointError, DivergenceError, Preempted

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
FORMAT = 1
_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Final-named checkpoints in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict, directory: Path, step: int, keep: int) -> Path:
    """Write ``state`` atomically as ``ckpt_<step>.pt`` and keep the newest ``keep`` files.

    Raises:
        CheckpointError: the folder cannot be written (names the path and the reason).
    """
    directory = Path(directory)
    final = checkpoint_path(directory, step)
    tmp = directory / f".{final.name}.tmp{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(directory)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {e.strerror or e}") from None
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path) -> dict:
    """Load one checkpoint file on the CPU.

    Raises:
        CheckpointError: missing, truncated or not a mltrain checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"train.resume: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(e).__name__}): truncated or corrupt"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not an mltrain checkpoint")
    return state


def load_latest(directory: Path) -> tuple[dict, Path] | None:
    """The newest readable, healthy checkpoint in ``directory`` and its path, or None if there
    is none.

    Unreadable newer files and unhealthy ones (written after the run diverged) are reported
    (warning) and skipped; stale temporary files from a write that was killed are removed.

    Raises:
        CheckpointError: checkpoints exist but none is readable.
    """
    directory = Path(directory)
    if directory.is_dir():
        for stale in directory.glob(".ckpt_*.tmp*"):
            stale.unlink(missing_ok=True)
    candidates = list_checkpoints(directory)
    errors = []
    for path in reversed(candidates):
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            log.warning("%s; trying the previous checkpoint", e)
            errors.append(str(e))
            continue
        if state.get("healthy", True):
            return state, path
        log.warning("checkpoint %s holds a non-finite state; trying the previous one", path)
        errors.append(f"checkpoint {path} holds a non-finite state (the run had diverged)")
    if candidates:
        raise CheckpointError(f"no usable checkpoint in {directory}: {errors[0]}")
    return None


def latest_healthy(directory: Path) -> Path | None:
    """The newest checkpoint in ``directory`` whose state was finite, or None."""
    for path in reversed(list_checkpoints(directory)):
        try:
            if load_checkpoint(path).get("healthy", True):
                return path
        except CheckpointError:
            continue
    return None


def make_state(
    trainer_state: dict,
    *,
    config: dict,
    data_fingerprint: str,
    wandb_id: str | None,
    healthy: bool,
) -> dict:
    """A checkpoint: the trainer's state plus the format, the resolved ``config`` (nested dict),
    the sha256 of the token streams, the W&B run id and whether the state is finite."""
    return {
        "format": FORMAT,
        **trainer_state,
        "config": config,
        "data_fingerprint": data_fingerprint,
        "wandb_id": wandb_id,
        "healthy": bool(healthy),
    }


def _schema_defaults() -> dict:
    """``{"section.key": default}`` of every schema field (:data:`mltrain.config.SECTIONS`)."""
    from omegaconf import OmegaConf

    from mltrain.config import SECTIONS

    out = {}
    for section, schema in SECTIONS.items():
        node = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)
        out.update(flatten(node, section + "."))
    return out


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """``(key, saved value, current value)`` of every setting that differs between a saved
    config and this run's, sorted by key, other than the settings that do not change training
    (:func:`mltrain.config.inert_keys`); ``<unset>`` for a key one of them lacks. Renamed keys
    of older configs are upgraded first; a setting added since the saved config was written
    counts as its schema default (what that run did), e.g. ``coarsening.patch.size`` = 1."""
    a, b = flatten(upgrade(saved)), flatten(upgrade(current))
    defaults = _schema_defaults()
    for key in set(b) - set(a):
        if key in defaults:
            a[key] = defaults[key]
    out = []
    for key in sorted(set(a) | set(b)):
        if is_inert(key):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append((key, a.get(key, "<unset>"), b.get(key, "<unset>")))
    return out


def check_compatible(saved: dict, current: dict, path: Path) -> None:
    """Raise :class:`CheckpointError` naming the first setting that differs between a saved
    config and this run's (:func:`config_differences`)."""
    differences = config_differences(saved, current)
    if differences:
        key, was, now = differences[0]
        raise CheckpointError(
            f"train.resume: {path} was written with {key}={was}, "
            f"this run has {key}={now}; resume with the same settings or start a new run"
        )


def check_fits(
    state: dict,
    path: Path,
    *,
    config: dict,
    total_steps: int,
    data_fingerprint: str,
    world: int | None = None,
) -> None:
    """Whether the checkpoint ``state`` (read from ``path``) may continue this run: same
    settings (:func:`check_compatible`), same length, same number of processes ``world``
    (a checkpoint that does not record it is not checked), same tokens.

    Raises:
        CheckpointError: the first thing that differs.
    """
    check_compatible(state.get("config", {}), config, path)
    if state.get("total_steps") != total_steps:
        raise CheckpointError(
            f"train.resume: checkpoint {path} belongs to a run of {state.get('total_steps')} fine steps, "
            f"this run has {total_steps}"
        )
    saved_world = state.get("world")
    if world is not None and saved_world is not None and saved_world != world:
        raise CheckpointError(
            f"train.resume: checkpoint {path} was written by {saved_world} processes, this run "
            f"has {world}: the global batch (data.batch_size x train.grad_accum x processes) and "
            f"the order of the data would change; resume with {saved_world} processes"
        )
    data = state.get("data_fingerprint")
    if data is not None and data != data_fingerprint:
        raise CheckpointError(
            f"train.resume: checkpoint {path} was trained on other tokens (the corpus or the "
            "tokenizer changed since); resume with the same data or start a new run"
        )


def rng_state(device: torch.device | None = None) -> dict:
    """The Python, NumPy, torch and CUDA random states (tensors and plain values only).

    CUDA: the state of this process's own ``device`` only (``cuda_device``), not of every
    visible GPU, so that a checkpoint resumes wherever its rank's device has another index or
    fewer GPUs are visible. Every rank seeds its device alike and rank 0 writes the checkpoint,
    so rank 0's state is every rank's."""
    np_state = np.random.get_state()
    cuda = device is not None and device.type == "cuda"
    return {
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
        "cuda": [],
        "cuda_device": torch.cuda.get_rng_state(device) if cuda else None,
    }


def set_rng_state(rng: dict, device: torch.device | None = None) -> None:
    """Restore :func:`rng_state` into this process (CUDA: into its own ``device``). A
    checkpoint of older versions holds the state of every visible GPU (``cuda``): the one of
    ``device``'s index is restored when it is there, else the first."""
    random.setstate(rng["python"])
    n = rng["numpy"]
    np.random.set_state((n[0], n[1].numpy(), n[2], n[3], n[4]))
    torch.set_rng_state(rng["torch"])
    if device is None or device.type != "cuda":
        return
    state = rng.get("cuda_device")
    if state is None and rng.get("cuda"):
        states, index = rng["cuda"], device.index or 0
        state = states[index] if index < len(states) else states[0]
    if state is not None:
        torch.cuda.set_rng_state(state, device)


# --------------------------------------------------------------------------- older checkpoints
def extension_states(state: dict) -> dict:
    """Each extension's saved state by name; an older checkpoint's layout is read by each
    scheme's :attr:`~mltrain.config.scheme.Scheme.upgrade_checkpoint` (the V-cycle's open
    phases were once in the trainer's state)."""
    out = dict(state.get("extensions") or {})
    for name in SCHEMES:
        SCHEMES.get(name).upgrade_checkpoint(state, out)
    return out


def divergence(
    what: str, value: float, step: int, fine: int, level: str, directory: Path | None
) -> DivergenceError:
    """The error of a non-finite ``what`` at ``step`` (``fine`` step, ``level``, as the failing
    step's record numbers them), naming the newest finite checkpoint in ``directory``."""
    good = latest_healthy(directory) if directory is not None else None
    kept = (
        f"the last good checkpoint is kept: {good}"
        if good
        else "no finite checkpoint had been written yet"
    )
    err = DivergenceError(
        f"non-finite {what} ({value}) at step {step} (fine step {fine}, level {level}); "
        f"stopped, {kept}"
    )
    err.where = {"step": step, "fine_step": fine, "level": level}
    return err


def preempted(signum: int, step: int, fine: int, path, run_dir) -> Preempted:
    """The error that ends a run stopped by ``signum`` after writing checkpoint ``path``; its
    message is the command that continues it (the run's own overrides from
    ``.hydra/overrides.yaml``, ``train.resume=auto`` and its directory, quoted for the shell
    and for Hydra), its exit code 128 + ``signum``."""
    import signal

    from omegaconf import OmegaConf

    from mltrain.config.overrides import override, shell_command

    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    try:
        overrides = [str(o) for o in OmegaConf.load(saved)] if saved.is_file() else []
    except Exception:
        overrides = []
    keep = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "train.resume"))]
    cmd = ["mltrain", *keep, "train.resume=auto", override("hydra.run.dir", str(run_dir))]
    err = Preempted(
        f"stopped by {signal.Signals(signum).name} at step {step} (fine step {fine}); "
        f"checkpoint {path}; continue with: " + shell_command(cmd)
    )
    err.exit_code = 128 + int(signum)
    return err
