"""The format of ``run.json``: what a run directory records about its run besides its config
(``.hydra/``) and its records (``metrics.jsonl``, :mod:`mltrain.metrics`).

The job (:mod:`mltrain.job`) holds its run directory while it runs (:func:`hold_run_dir`),
writes ``run.json`` when its checks have passed (status ``running``) and again when the run
ends; ``mltrain-compare`` (:mod:`mltrain.analysis`), scripts and exports read it. Runs of earlier versions may lack the file or any field: readers treat every field as
optional. The fields of :class:`RunRecord`, in the order they are written:

- ``role``: the run's comparison role and W&B job type (:func:`role_of`).
- ``status``: one of :data:`STATUSES`; ``diverged_at``: ``{"step", "fine_step", "level"}`` of
  a diverged run (as the failing step's record numbers them), else null.
- ``threads`` (torch's CPU threads), ``device`` (``cpu``, ``cuda:0``), ``precision`` (the
  resolved ``train.precision``: ``fp32``, ``bf16`` or ``fp16``), ``world`` (processes).
- ``torch``, ``mltrain``: the versions it ran with.
- the plan's summary (:meth:`mltrain.plan.plan.Plan.summary`), at the top level:
  ``multilevel``, ``iterations``, ``fine_steps``, ``steps_per_level``, ``levels``,
  ``planned_tokens``, and when FLOPs are counted ``planned_flops``,
  ``planned_flops_nonembed`` (FLOPs with head / non-embedding).
- ``data``: tokens planned and seen against the training split
  (:func:`mltrain.plan.epochs.epoch_count`; ``seen`` filled when the run ends).
- ``validation``: ``sequences``, ``tokens`` and ``fingerprint`` of the validation set
  (:func:`mltrain.data.sampler.validation_fingerprint`).
- ``params``: ``total``, ``nonembed`` (scalars, the tied head counted once; without the token
  and position embeddings) and ``vocab`` (V).
- ``branch`` (a warmup–stable–decay branch only): ``{"trunk": <run dir>, "step": <its branch
  point>}``; ``branch_points`` (a trunk only): ``{"<iteration>": <budget scale>}``
  (:mod:`mltrain.train.branch`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mltrain.errors import ConfigError

RUN_FILE = "run.json"
# running: written at the start; the others when the run ends (preempted: stopped by a signal
# after a checkpoint; failed: any other error)
STATUSES = ("running", "completed", "diverged", "preempted", "failed")


LOCK_FILE = ".mltrain.lock"


def hold_run_dir(run_dir: Path):
    """Hold ``run_dir`` for this process (an exclusive ``flock`` on ``run_dir/.mltrain.lock``,
    released when the process ends, however it ends), so that a command pasted twice, or a run
    resumed while it still runs, does not train two processes into one directory. Returns the
    open lock file (keep it open).

    Raises:
        ConfigError: another process holds it; nothing in ``run_dir`` was written.
    """
    f = open(run_dir / LOCK_FILE, "a")  # noqa: SIM115  (held open for the run)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConfigError(
            f"another mltrain process is running in {run_dir}: let it finish (it resumes with "
            "train.resume=auto if stopped), or give another hydra.run.dir"
        ) from None
    return f


def role_of(job_type: str | None, multilevel: bool, sized_by_flops: bool) -> str:
    """A run's comparison role (its W&B job type): ``job_type`` (``logger.job_type``) when set,
    else ``multilevel`` for a run that trains any level besides the fine one, else
    ``single_level/same_flops`` when it is sized by a FLOPs budget (``train.target_flops``),
    else ``single_level/same_steps``. The one place mltrain derives a role."""
    if job_type:
        return str(job_type)
    if multilevel:
        return "multilevel"
    return "single_level/same_flops" if sized_by_flops else "single_level/same_steps"


@dataclass
class RunRecord:
    """One run's ``run.json`` (the fields are described in the module's docstring); ``plan``
    is written flat, at the top level."""

    role: str
    threads: int
    device: str
    precision: str
    world: int
    torch: str
    mltrain: str
    plan: dict
    data: dict
    validation: dict
    params: dict
    status: str = "running"
    diverged_at: dict | None = None
    branch: dict | None = None
    branch_points: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON object, keys in the order of the module's docstring; ``branch`` and
        ``branch_points`` only when set (``branch_points`` keyed by the iteration as a
        string, as JSON keys are)."""
        if self.status not in STATUSES:
            raise ValueError(f"run status {self.status!r} is not one of {', '.join(STATUSES)}")
        out = {
            "role": self.role,
            "status": self.status,
            "diverged_at": self.diverged_at,
            "threads": self.threads,
            "device": self.device,
            "precision": self.precision,
            "world": self.world,
            "torch": self.torch,
            "mltrain": self.mltrain,
            **self.plan,
            "data": self.data,
            "validation": self.validation,
            "params": self.params,
        }
        if self.branch:
            out["branch"] = self.branch
        if self.branch_points:
            out["branch_points"] = {str(k): v for k, v in self.branch_points.items()}
        return out

    def ended(self, status: str, diverged_at: dict | None = None, **changes) -> RunRecord:
        """This record with the run's final ``status`` (and other ``changes``, e.g. ``data``)."""
        return dataclasses.replace(self, status=status, diverged_at=diverged_at, **changes)


def write_run_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``run_dir/run.json`` atomically (a temporary file renamed over it); returns its
    path.

    Raises:
        ValueError: a status not in :data:`STATUSES`.
        OSError: the directory cannot be written.
    """
    final = Path(run_dir) / RUN_FILE
    tmp = final.with_name(f".{RUN_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record.to_json(), indent=1) + "\n")
    os.replace(tmp, final)
    return final


class UnreadableRecord(ValueError):
    """``run.json`` exists but is not a JSON object (a torn or foreign file)."""


def read_run_record(run_dir: Path) -> dict:
    """``run_dir/run.json`` as a dict (every field optional: runs of earlier versions lack
    some); empty when there is no file (runs older than ``run.json``).

    Raises:
        UnreadableRecord: the file cannot be read or is not a JSON object (names the file).
    """
    f = Path(run_dir) / RUN_FILE
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise UnreadableRecord(f"{f}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise UnreadableRecord(f"{f}: unreadable (not a JSON object)")
    return meta
