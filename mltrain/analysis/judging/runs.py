"""Reading runs for ``mltrain-compare``: configs, curves, roles, divergence.

A run directory holds ``.hydra/config.yaml`` and ``metrics.jsonl`` (DESIGN.md section 5), and,
for runs of newer versions, ``run.json`` (role, status, divergence, thread count, device; its
format and reader: :mod:`mltrain.runrecord`).
:func:`find_runs` finds them below any directories (a run, a sweep, ``outputs/runs``);
:mod:`mltrain.analysis.judging.grouping` groups them into configurations (runs that differ only by seed and by
keys that do not change training, :data:`IGNORED`) and names them.

A run *diverged* when its ``run.json`` says ``"status": "diverged"`` or (older runs without
``run.json``) when any record holds a non-finite ``train/loss`` or ``val/loss``; its curves keep
the finite records before that step, and it has no final loss.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from mltrain.analysis.judging.curves import fmt_flops
from mltrain.config import flatten, inert_keys, upgrade
from mltrain.metrics import METRICS_FILE, read_metrics
from mltrain.readback import is_multilevel, scheme_of
from mltrain.runrecord import UnreadableRecord, read_run_record, role_of

PROG = "mltrain-compare"
# Keys that do not make a different configuration: the seed (runs that differ by it are the
# seeds of one configuration) and the settings tagged as not changing training in the schema
# (mltrain.config.inert_keys: the same list a resume may change).
IGNORED = ("train.seed", "hydra.", *inert_keys())
# Keys already expressed by the base label.
LABEL_KEYS = (
    "coarsening.hierarchy.name",
    "coarsening.vcycle.delta",
    "coarsening.vcycle.coarse_steps",
    "coarsening.vcycle.window",
    "coarsening.stages.levels",
    "coarsening.stages.shares",
    "coarsening.stages.grow_init",
    "train.target_flops",
    "optimizer._partial_",
)
# The role of a single-level run sized by train.target_flops that a cap (train.max_steps)
# stopped short of its budget: tabulated, but not the same-FLOPs run of anything.
CAPPED = "single_level/capped"
TOTALS = {"head": "perf/flops", "nonembed": "perf/flops_nonembed"}
LOSS_KEYS = ("train/loss", "val/loss")


class CompareError(Exception):
    """Bad input: reported as one line ``mltrain-compare: error: ...``, exit status 2."""


def warn(message: str) -> None:
    """One line on stderr (runs skipped, points dropped)."""
    print(f"{PROG}: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- runs
@dataclass
class Series:
    """One curve of a run, points in step order: FLOPs (counts, two totals), wall-clock
    seconds, fine steps and loss (nats/token)."""

    flops: np.ndarray
    flops_nonembed: np.ndarray
    wall_s: np.ndarray
    fine_step: np.ndarray
    loss: np.ndarray
    iteration: np.ndarray  # the plan's iterations (:func:`iterations`)

    @classmethod
    def from_records(cls, records: list[dict], loss_key: str, before_fine: int = 0) -> Series:
        """The curve of ``loss_key`` over ``records`` (missing values NaN); ``before_fine``:
        the optimizer steps taken before the first fine step (:func:`steps_before_fine`)."""
        cols = [
            [_num(r.get(k)) for r in records]
            for k in ("perf/flops", "perf/flops_nonembed", "perf/wall_s", "fine_step", loss_key)
        ]
        return cls(*(np.asarray(c, dtype=float) for c in cols), iterations(records, before_fine))

    def x(self, total: str) -> np.ndarray:
        """FLOPs under ``total`` ("head" or "nonembed")."""
        return self.flops if total == "head" else self.flops_nonembed


def _num(v) -> float:
    """A record's value as a float: numbers as they are, the strings "nan", "inf", "-inf" (how
    non-finite values are written as valid JSON) as those floats, anything else NaN."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
        return float(v.strip().lower().replace("infinity", "inf"))
    return math.nan


def _first_nonfinite(records: list[dict]) -> dict | None:
    """The first record whose ``train/loss`` or ``val/loss`` is present and not finite."""
    for r in records:
        if any(k in r and r[k] is not None and not math.isfinite(_num(r[k])) for k in LOSS_KEYS):
            return r
    return None


def steps_before_fine(records: list[dict]) -> int:
    """Optimizer steps a run took before its first fine step: for a coarse-to-fine run
    (``coarsening.scheme=stages``) the steps of its stages before the fine stage."""
    before = [_num(r.get("step")) for r in records if _num(r.get("fine_step")) == 0]
    return int(max(before, default=0))


def iterations(records: list[dict], before_fine: int) -> np.ndarray:
    """Each record's iteration of the run's plan: its fine step, after the ``before_fine``
    steps of the stages before the fine stage (a record of such a stage: its ``step``). With
    ``before_fine`` 0 (a single-level or V-cycle run) these are the fine steps; a
    coarse-to-fine run's count every stage's steps, so its curve starts where its training did."""
    fine = np.asarray([_num(r.get("fine_step")) for r in records], dtype=float)
    if not before_fine:
        return fine
    step = np.asarray([_num(r.get("step")) for r in records], dtype=float)
    return np.where(fine == 0, step, fine + before_fine)


SPAN_KEYS = {
    "flops": "perf/flops",
    "flops_nonembed": "perf/flops_nonembed",
    "wall_s": "perf/wall_s",
}


def coarse_spans(records: list[dict]) -> dict[str, np.ndarray]:
    """Where coarse phases ran, per x quantity (``flops``, ``flops_nonembed``, ``wall_s``): an
    array of ``[start, end]`` rows, one per run of consecutive non-fine records, from the
    record before the phase to its last record (FLOPs are counts, wall-clock in seconds)."""
    spans: dict[str, list] = {k: [] for k in SPAN_KEYS}
    prev, start = None, None
    for r in records:
        coarse = r.get("level", "fine") != "fine"
        if coarse and start is None:
            start = prev if prev is not None else r
        if not coarse and start is not None:
            for k, key in SPAN_KEYS.items():
                spans[k].append((_num(start.get(key)), _num(prev.get(key))))
            start = None
        prev = r
    if start is not None:
        for k, key in SPAN_KEYS.items():
            spans[k].append((_num(start.get(key)), _num(prev.get(key))))
    return {k: np.asarray(v, dtype=float).reshape(-1, 2) for k, v in spans.items()}


def configured_budget(flat: dict) -> float | None:
    """A run's FLOP budget from its config (FLOPs with head): ``train.target_flops`` times
    ``train.flops_scale`` (1 when absent), or None when the run is sized by ``train.steps``
    (``mltrain.plan.plan.budget_of``, read from a flattened config: analysis/ reads runs and
    does not import the plan, pyproject.toml's contracts)."""
    t = flat.get("train.target_flops")
    if t is None:
        return None
    scale = flat.get("train.flops_scale")
    return float(t) * (1.0 if scale is None else float(scale))


def derive_role(flat: dict) -> str:
    """The role of a run that does not record one (older runs), from its flattened config
    without ``logger.job_type`` (:func:`mltrain.runrecord.role_of`)."""
    return role_of(None, not is_single_level(flat), flat.get("train.target_flops") is not None)


def planned_flops(run: Run) -> float:
    """Training FLOPs (with head) of a run's plan as it ran (``run.json``, a cap such as
    ``train.max_steps`` included); for an older run without it, the FLOPs it spent."""
    planned = _num(run.meta.get("planned_flops"))
    return planned if math.isfinite(planned) else run.total("head")


def short_of_budget(run: Run) -> str | None:
    """Why a run's plan stops short of its configured budget (``train.target_flops`` ×
    ``train.flops_scale``) by more than one step of its costliest level, as ``mode=smoke``'s
    ``train.max_steps`` does; None when it has no budget or its plan reaches it (a plan sized by
    a budget comes within half such a step of it: a staged run's last stage ends within half a
    fine step, more than its mean iteration when most iterations were coarse)."""
    budget = configured_budget(run.flat)
    planned = planned_flops(run)
    if budget is None or not math.isfinite(planned) or planned <= 0:
        return None
    steps = _num(run.meta.get("iterations", run.last.get("step")))
    step = planned / max(steps, 1) if math.isfinite(steps) else 0.0  # an iteration's mean
    per_level = run.meta.get("steps_per_level")
    if isinstance(per_level, dict):  # each level's mean step (metrics' FLOPs per level)
        for level, n in per_level.items():
            spent = _num(run.last.get(f"perf/flops_level/{level}"))
            if isinstance(n, int | float) and n > 0 and math.isfinite(spent):
                step = max(step, spent / n)
    if planned >= budget - step * (1 + 1e-9):
        return None
    cap = run.flat.get("train.max_steps")
    why = f"train.max_steps={cap} capped its plan" if cap is not None else "its plan stops"
    return f"{why} at {fmt_flops(planned)} of its {fmt_flops(budget)} FLOPs budget"


def beside(run_dir: Path, what: str) -> Path:
    """The folder ``<run_dir's name>_<what>`` next to ``run_dir`` (a character other than a
    letter, digit, ``.`` or ``-`` written ``_``, so Hydra reads it as one plain value): where a
    printed command that repeats or completes a run writes, so the same mltrain-compare over the
    folder above finds its runs."""
    return run_dir.parent / re.sub(r"[^\w.-]", "_", f"{run_dir.name}_{what}")


@dataclass
class Run:
    """One run directory: its resolved config (nested dict), its curves and its metadata.

    ``val`` and ``train`` hold finite losses only (a diverged run's curves end before its
    divergence); ``meta`` is ``run.json`` (empty for older runs); ``diverged_step`` is the
    ``step`` at which the run diverged, None if it did not; ``spans`` are its coarse phases
    (:func:`coarse_spans`).
    """

    path: Path
    config: dict
    val: Series  # evaluations (step 0 included)
    train: Series  # fine-level training steps
    last: dict  # the last record
    meta: dict = field(default_factory=dict)
    diverged_step: int | None = None
    spans: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def diverged(self) -> bool:
        """Whether the run diverged (see :attr:`diverged_step`)."""
        return self.diverged_step is not None

    @property
    def status(self) -> str:
        """``run.json``'s status; for older runs ``diverged`` or ``unknown``."""
        if self.diverged:
            return "diverged"
        return str(self.meta.get("status") or "unknown")

    @property
    def role(self) -> str:
        """``run.json``'s role, else :func:`mltrain.runrecord.role_of` of the config (its
        ``logger.job_type`` when set); a single-level run sized by a FLOPs budget whose plan
        stops short of it (:func:`short_of_budget`, e.g. ``mode=smoke``'s ``train.max_steps``)
        is :data:`CAPPED`, not a same-FLOPs run."""
        role = str(
            self.meta.get("role") or self.flat.get("logger.job_type") or derive_role(self.flat)
        )
        if role == "single_level/same_flops" and short_of_budget(self) is not None:
            return CAPPED
        return role

    @property
    def trained(self) -> bool:
        """Whether the run holds a training record (an optimizer step with FLOPs); a run
        stopped right after its step-0 evaluation does not."""
        return len(self.train.loss) > 0 or self.total("head") > 0

    @property
    def threads(self) -> int | None:
        """CPU threads the run used (``run.json``), None when not recorded."""
        t = self.meta.get("threads")
        return int(t) if isinstance(t, int | float) else None

    @property
    def device(self) -> str | None:
        """Device the run used (``run.json``), None when not recorded."""
        d = self.meta.get("device")
        return str(d) if d else None

    @property
    def world(self) -> int:
        """Processes that trained the run (``run.json``), 1 when not recorded."""
        w = self.meta.get("world")
        return int(w) if isinstance(w, int | float) and w >= 1 else 1

    def incomplete(self) -> str | None:
        """Why the run did not finish its planned length (None if it did, or diverged):
        ``run.json``'s status, or for older runs fewer fine steps than ``train.steps`` / fewer
        FLOPs than their budget (:func:`configured_budget`: ``train.target_flops`` ×
        ``train.flops_scale``) minus one step."""
        if self.diverged:
            return None
        status = self.meta.get("status")
        done = int(_num(self.last.get("fine_step", 0)))
        if status in ("running", "preempted", "failed"):
            return f"{status} at fine step {done}"
        if status == "completed":
            return None
        budget = configured_budget(self.flat)
        if budget is not None:
            spent = self.total("head")
            step = spent / max(done, 1)
            if spent < budget - step * (1 + 1e-9):
                return (
                    f"stopped at {fmt_flops(spent)} of {fmt_flops(budget)} FLOPs (fine step {done})"
                )
            return None
        steps = self.flat.get("train.steps")
        if steps is not None and done < steps:
            return f"stopped at fine step {done} of {steps}"
        return None

    @cached_property
    def flat(self) -> dict:
        """The config as ``{"dotted.key": value}``."""
        return flatten(self.config)

    @property
    def seed(self):
        return self.flat.get("train.seed")

    @property
    def final_val_loss(self) -> float:
        """The last evaluation's validation loss (nats/token); NaN for a diverged run."""
        if self.diverged or not len(self.val.loss):
            return math.nan
        return float(self.val.loss[-1])

    def total(self, total: str = "head") -> float:
        """Training FLOPs of the whole run (the last record's cumulative count)."""
        return _num(self.last.get(TOTALS[total]))

    @property
    def wall_s(self) -> float:
        """Seconds since the run started, at its last record (resumes included)."""
        return _num(self.last.get("perf/wall_s"))

    @property
    def diverged_text(self) -> str:
        """``diverged at step N`` (N: ``step``, optimizer steps of all levels)."""
        return f"diverged at step {self.diverged_step}"


def read_run_json(path: Path) -> dict:
    """``path/run.json`` as a dict (:func:`mltrain.runrecord.read_run_record`); empty when
    absent (older runs) or unreadable (with a message)."""
    try:
        return read_run_record(path)
    except UnreadableRecord as e:
        warn(f"warning: {e}; using the config and metrics only")
        return {}


def load_run(path: Path) -> Run:
    """Read ``path/.hydra/config.yaml``, ``path/metrics.jsonl`` and ``path/run.json`` (if any).
    A run still running (``run.json``) that has not evaluated yet has empty curves (``val``,
    ``train``, ``last``): :meth:`Run.incomplete` says it is running, and the judges leave it out
    but do not ask for its seed again.

    Raises:
        FileNotFoundError: the config is missing; or, for a run not running, the metrics file is
            missing or holds no records or (when it did not diverge) no finite validation loss.
    """
    from omegaconf import OmegaConf

    path = Path(path)
    cfg_path = path / ".hydra" / "config.yaml"
    meta = read_run_json(path)
    running = meta.get("status") == "running"
    # a job that has just started (run.json running, its config written) is read with empty
    # curves: unfinished, so left out of every judgement, yet its seed is not asked for again
    starting = running and cfg_path.is_file()
    has_metrics = (path / METRICS_FILE).is_file()
    if not has_metrics and not starting:
        why = "still running, no evaluation yet" if running else "a failed job?"
        raise FileNotFoundError(f"no {METRICS_FILE} ({why})")
    if not cfg_path.is_file():
        raise FileNotFoundError("no .hydra/config.yaml")
    records = []
    if has_metrics:
        records = sorted(read_metrics(path / METRICS_FILE), key=lambda r: r.get("step", 0))
    if not records and not starting:
        raise FileNotFoundError(f"{METRICS_FILE} holds no records")
    cfg = OmegaConf.load(cfg_path)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve here (e.g. ${now:})
        config = OmegaConf.to_container(cfg, resolve=False)
    config = upgrade(config)  # keys renamed since the run was made
    bad = _first_nonfinite(records)
    diverged_step = None
    if meta.get("status") == "diverged" or bad is not None:
        at = meta.get("diverged_at") if isinstance(meta.get("diverged_at"), dict) else {}
        step = at.get("step", bad.get("step") if bad is not None else records[-1].get("step"))
        diverged_step = int(_num(step)) if math.isfinite(_num(step)) else 0
    val = [r for r in records if math.isfinite(_num(r.get("val/loss")))]
    if diverged_step is not None:
        val = [r for r in val if _num(r.get("step")) < diverged_step]
    if not val and diverged_step is None and not starting:
        why = "still running, no evaluation yet" if running else "nothing to compare"
        raise FileNotFoundError(f"{METRICS_FILE} holds no finite val/loss ({why})")
    train = [
        r
        for r in records
        if r.get("level") == "fine"
        and math.isfinite(_num(r.get("train/loss")))
        and (diverged_step is None or _num(r.get("step")) < diverged_step)
    ]
    scheme = scheme_of(flatten(config))
    staged = scheme is not None and scheme.staged
    before = (
        steps_before_fine(records) if staged else 0
    )  # a V-cycle's coarse steps are not iterations
    return Run(
        path,
        config,
        Series.from_records(val, "val/loss", before),
        Series.from_records(train, "train/loss", before),
        records[-1] if records else {},
        meta,
        diverged_step,
        coarse_spans(records),
    )


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The runs under ``paths`` (run directories, or directories above them, searched
    recursively), in natural order; run directories that cannot be read are skipped with
    a message.

    Raises:
        CompareError: a path does not exist, or no run was found at all.
    """
    dirs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CompareError(f"{p} does not exist")
        if not p.is_dir():
            raise CompareError(f"{p} is not a directory (give run or sweep directories)")
        found, walked = [], set()
        # symlinked directories are followed (a study links its sweeps together), each real
        # directory once (a link back up cannot loop)
        for root, subdirs, files in os.walk(p, followlinks=True):
            real = Path(root).resolve()
            if real in walked:
                subdirs.clear()
                continue
            walked.add(real)
            if (Path(root) / ".hydra").is_dir() or METRICS_FILE in files:
                found.append(Path(root))
                subdirs.clear()
            else:
                subdirs[:] = [d for d in subdirs if d not in ("wandb", "checkpoints", "compare")]
        dirs += sorted(found, key=_natural)
    runs, seen = [], set()
    for d in dirs:
        if d.resolve() in seen:
            continue
        seen.add(d.resolve())
        try:
            runs.append(load_run(d))
        except Exception as e:  # a torn or foreign file: skip the run, keep the others
            warn(f"skipping {d}: {e}")
    if not runs:
        raise CompareError(f"no runs with {METRICS_FILE} found in {', '.join(map(str, paths))}")
    return runs


# --------------------------------------------------------------------------- configurations
def is_single_level(flat: dict) -> bool:
    """The run's plan trains the fine level only (:func:`mltrain.readback.is_multilevel`)."""
    return not is_multilevel(flat)


def _ignored(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in IGNORED)
