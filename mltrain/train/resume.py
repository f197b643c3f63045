"""Where a run starts: from step 0, from a checkpoint of its own run directory
(``train.resume=auto``), from another run's checkpoint (``train.resume=<file>``), or from a
trunk's branch point (``train.branch_from``, :mod:`mltrain.train.branch`).

:func:`resume_point` decides (rank 0 looks at the run directory, every rank follows), loads
the checkpoint and checks that it fits this run, before anything is written;
:meth:`ResumePoint.restore_metrics` then brings ``metrics.jsonl`` to the checkpoint's step.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from mltrain.config import MLTrainConfig
from mltrain.errors import CheckpointError
from mltrain.metrics import METRICS_FILE, truncate_metrics
from mltrain.plan.plan import Plan
from mltrain.runrecord import UnreadableRecord, read_run_record
from mltrain.train import branch as br
from mltrain.train import checkpoint as ckpt
from mltrain.train import distributed as D

log = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """Where a run starts.

    Attributes:
        path: the checkpoint it continues (None: step 0).
        state: that checkpoint, loaded and checked (None: step 0); the trainer restores it.
        branch: ``{"trunk": <run dir>, "step": <branch point>}`` for a branch (``run.json``'s
            ``branch``), else None.
    """

    path: Path | None = None
    state: dict | None = None
    branch: dict | None = None

    @property
    def starts_branch(self) -> bool:
        """Whether the run starts here from a trunk's branch point (not resumes a branch)."""
        return self.path is not None and self.path.parent.name == br.BRANCH_DIR

    @property
    def earlier_run_dir(self) -> Path | None:
        """The run directory of the run this one continues (a trunk's is not continued)."""
        return self.path.parent.parent if self.path and not self.starts_branch else None

    @property
    def wandb_id(self) -> str | None:
        """The W&B run this run continues (None: a new W&B run)."""
        return (self.state or {}).get("wandb_id")

    @property
    def precision(self) -> str | None:
        """The precision the checkpoint was written in (``train.precision=auto`` keeps it)."""
        return (self.state or {}).get("precision")

    def restore_metrics(self, run_dir: Path) -> None:
        """Bring ``run_dir/metrics.jsonl`` to the checkpoint's step (copied from the earlier
        run directory first when the run continues into a new one); from step 0, empty a
        ``metrics.jsonl`` already there (``resume=auto`` found no checkpoint: the same run
        restarts). The tracker then asks W&B which of its steps W&B lacks."""
        metrics = Path(run_dir) / METRICS_FILE
        if self.path is not None:
            step = int(self.state["progress"]["logged_step"])
            source = self.path.parent.parent / METRICS_FILE
            if source.resolve() != metrics.resolve() and source.is_file() and not metrics.exists():
                shutil.copyfile(source, metrics)
            if metrics.is_file():
                truncate_metrics(metrics, step)
        elif metrics.is_file():
            truncate_metrics(metrics, -1)


def decide(cfg: MLTrainConfig, plan: Plan, run_dir: Path, config: dict) -> Path | None:
    """The checkpoint a run continues from, or None to start from step 0.

    - ``train.resume`` unset: the run directory must not hold a run already; a branch
      (``train.branch_from``) starts from its trunk's branch point.
    - ``auto``: the newest readable, healthy checkpoint of this run directory; with none, a
      branch starts from its trunk's point, and a run already there (killed before its first
      checkpoint) restarts, if its settings match.
    - a path: a checkpoint file; its run continues into this run directory, which must then be
      new (or the checkpoint's own).

    Args:
        cfg: the typed config; plan: the run's plan; run_dir: the run directory;
        config: the resolved config (nested dict), compared with a run already there.

    Raises:
        CheckpointError: naming the directory or file and what to do instead.
    """
    resume = cfg.train.resume
    ckdir = run_dir / ckpt.CKPT_DIR
    metrics = run_dir / METRICS_FILE
    holds_run = bool(ckpt.list_checkpoints(ckdir)) or metrics.is_file()
    if resume is None:
        if holds_run:
            raise CheckpointError(
                f"run directory {run_dir} already holds a run; continue it with "
                "train.resume=auto or choose a new hydra.run.dir"
            )
        return br.branch_start(cfg, plan)[0] if cfg.train.branch_from else None
    if resume == "auto":
        found = ckpt.load_latest(ckdir)
        if found is not None:
            return found[1]
        if cfg.train.branch_from:  # a branch killed before its first checkpoint
            return br.branch_start(cfg, plan)[0]
        saved = run_dir / ".hydra" / "config.yaml"
        if metrics.is_file() and saved.is_file():
            before = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
            ckpt.check_compatible(before, config, saved)
        log.info("train.resume=auto: no checkpoint in %s, starting from step 0", ckdir)
        return None
    path = Path(resume).expanduser()
    if not resume.strip() or path.is_dir():
        raise CheckpointError(
            f"train.resume={resume!r} is not a checkpoint file: give auto or a path such as "
            "outputs/runs/<run>/checkpoints/ckpt_000000300.pt"
        )
    if holds_run and path.resolve().parent != ckdir.resolve():
        raise CheckpointError(
            f"run directory {run_dir} already holds another run; train.resume={path} "
            "continues into a new directory: choose a new hydra.run.dir"
        )
    return path


def load(path: Path, *, config: dict, total_steps: int, data_fingerprint: str, world: int) -> dict:
    """Load the checkpoint ``path`` and check it fits this run
    (:func:`mltrain.train.checkpoint.check_fits`; a trunk's branch point:
    :func:`mltrain.train.branch.check_point`, and its W&B run is not continued).

    Raises:
        CheckpointError: unreadable, or the first setting/length/data that differs.
    """
    state = ckpt.load_checkpoint(path)
    if path.parent.name == br.BRANCH_DIR:  # a trunk's state: this run's budget differs
        br.check_point(state, path, config=config, data_fingerprint=data_fingerprint)
        state["wandb_id"] = None  # a run of its own, not the trunk's W&B run
        return state
    ckpt.check_fits(
        state,
        path,
        config=config,
        total_steps=total_steps,
        data_fingerprint=data_fingerprint,
        world=world,
    )
    return state


def recorded_branch(run_dir: Path) -> dict | None:
    """A resumed branch's ``branch`` entry of ``run.json`` (written at its start), None when
    there is none or the file is unreadable."""
    try:
        return read_run_record(run_dir).get("branch")
    except UnreadableRecord:
        return None


def resume_point(
    cfg: MLTrainConfig,
    plan: Plan,
    run_dir: Path,
    config: dict,
    data_fingerprint: str,
    ctx: D.DistContext,
) -> ResumePoint:
    """Where this run starts: :func:`decide` on rank 0 (every rank gets its answer or its
    error), the checkpoint :func:`load`-ed and checked on every rank, and the branch it is.

    Raises:
        CheckpointError, ConfigError: as :func:`decide` and :func:`load`.
    """
    path = D.main_decides(lambda: decide(cfg, plan, run_dir, config), ctx)
    out = ResumePoint(path)
    if out.starts_branch:
        out.branch = {"trunk": str(path.parent.parent), "step": int(path.stem[5:])}
    elif cfg.train.branch_from:
        out.branch = recorded_branch(run_dir)
    if path is not None:
        out.state = load(
            path,
            config=config,
            total_steps=plan.iterations,
            data_fingerprint=data_fingerprint,
            world=ctx.world,
        )
    return out
