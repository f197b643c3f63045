"""Reading finished runs for ``mltrain-compare`` and grouping them into configurations.

A run directory holds ``.hydra/config.yaml`` and ``metrics.jsonl`` (DESIGN.md section 5).
:func:`find_runs` finds them below any directories (a run, a sweep, ``outputs/runs``);
:func:`group_configurations` groups runs that differ only by seed (and by keys that do not
change training, :data:`IGNORED`) and labels them readably, e.g. ``single_level``,
``single_level (iso-FLOP)``, ``even_odd δ=0.25 m=20 w=5 optimizer=adamw``.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mltrain.config import flatten, inert_keys, upgrade
from mltrain.plan import is_multilevel
from mltrain.tracking import METRICS_FILE, read_metrics

PROG = "mltrain-compare"
# Keys that do not make a different configuration: the seed (runs that differ by it are the
# seeds of one configuration) and the settings tagged as not changing training in the schema
# (mltrain.config.inert_keys: the same list a resume may change).
IGNORED = ("train.seed", "hydra.", *inert_keys())
# Keys already expressed by the base label.
LABEL_KEYS = (
    "coarsening.name",
    "coarsening.delta",
    "coarsening.coarse_steps",
    "coarsening.window",
    "train.target_flops",
    "optimizer._partial_",
)
TOTALS = {"head": "perf/flops", "nonembed": "perf/flops_nonembed"}


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

    @classmethod
    def from_records(cls, records: list[dict], loss_key: str) -> Series:
        cols = [
            [r.get(k, math.nan) for r in records]
            for k in ("perf/flops", "perf/flops_nonembed", "perf/wall_s", "fine_step", loss_key)
        ]
        return cls(*(np.asarray(c, dtype=float) for c in cols))

    def x(self, total: str) -> np.ndarray:
        """FLOPs under ``total`` ("head" or "nonembed")."""
        return self.flops if total == "head" else self.flops_nonembed


@dataclass
class Run:
    """One run directory: its resolved config (nested dict) and its curves."""

    path: Path
    config: dict
    val: Series  # evaluations (step 0 included)
    train: Series  # fine-level training steps
    last: dict  # the last record

    @property
    def name(self) -> str:
        return str(self.path)

    @cached_property
    def flat(self) -> dict:
        """The config as ``{"dotted.key": value}``."""
        return flatten(self.config)

    @property
    def seed(self):
        return self.flat.get("train.seed")

    @property
    def final_val_loss(self) -> float:
        return float(self.val.loss[-1]) if len(self.val.loss) else math.nan

    def total(self, total: str = "head") -> float:
        """Training FLOPs of the whole run (the last record's cumulative count)."""
        return float(self.last.get(TOTALS[total], math.nan))

    @property
    def wall_s(self) -> float:
        return float(self.last.get("perf/wall_s", math.nan))


def load_run(path: Path) -> Run:
    """Read ``path/.hydra/config.yaml`` and ``path/metrics.jsonl``.

    Raises:
        FileNotFoundError: the metrics file or the config is missing, or holds no records or
            no finite validation loss.
    """
    from omegaconf import OmegaConf

    path = Path(path)
    cfg_path = path / ".hydra" / "config.yaml"
    if not (path / METRICS_FILE).is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} (a failed job?)")
    if not cfg_path.is_file():
        raise FileNotFoundError("no .hydra/config.yaml")
    records = sorted(read_metrics(path / METRICS_FILE), key=lambda r: r.get("step", 0))
    if not records:
        raise FileNotFoundError(f"{METRICS_FILE} holds no records")
    cfg = OmegaConf.load(cfg_path)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve here (e.g. ${now:})
        config = OmegaConf.to_container(cfg, resolve=False)
    config = upgrade(config)  # keys renamed since the run was made
    val = [
        r
        for r in records
        if isinstance(r.get("val/loss"), int | float) and math.isfinite(r["val/loss"])
    ]
    if not val:
        raise FileNotFoundError(f"{METRICS_FILE} holds no finite val/loss (nothing to compare)")
    train = [r for r in records if r.get("level") == "fine" and "train/loss" in r]
    return Run(
        path,
        config,
        Series.from_records(val, "val/loss"),
        Series.from_records(train, "train/loss"),
        records[-1],
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
        found = []
        for root, subdirs, files in os.walk(p):
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
    """The run's plan trains the fine level only (:func:`mltrain.plan.is_multilevel`)."""
    return not is_multilevel(flat)


def _ignored(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in IGNORED)


def identity(flat: dict) -> tuple:
    """What makes two runs the same configuration: the config without :data:`IGNORED` keys;
    for single-level runs without the (unused) coarsening settings, and without
    ``train.steps`` when ``train.target_flops`` sets the length."""
    single = is_single_level(flat)
    out = {}
    for k, v in flat.items():
        if _ignored(k) or (single and k.startswith("coarsening.")):
            continue
        if k == "train.steps" and flat.get("train.target_flops") is not None:
            continue
        out[k] = v
    out["single_level"] = single
    return tuple(sorted(out.items(), key=lambda kv: kv[0]))


@dataclass
class Configuration:
    """Runs that differ only by seed (:func:`identity`), with a readable label."""

    runs: list[Run]
    label: str = ""

    @property
    def flat(self) -> dict:
        return self.runs[0].flat

    @property
    def single_level(self) -> bool:
        return is_single_level(self.flat)

    @property
    def iso_flop(self) -> bool:
        return self.flat.get("train.target_flops") is not None

    def mean_total(self, total: str = "head") -> float:
        return float(np.mean([r.total(total) for r in self.runs]))


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ",".join(map(fmt_value, v)) + "]"
    return str(v)


def _relevant(key: str, flat: dict) -> bool:
    """Whether ``key`` means anything for this configuration (coarsening settings do not for
    a single-level run, ``train.steps`` does not when ``train.target_flops`` is set)."""
    if key.startswith("coarsening.") and is_single_level(flat):
        return False
    return not (key == "train.steps" and flat.get("train.target_flops") is not None)


def _differing_keys(configs: list[Configuration]) -> list[str]:
    flats = [c.flat for c in configs]
    keys = sorted({k for f in flats for k in f})
    out = []
    for k in keys:
        if _ignored(k) or k in LABEL_KEYS:
            continue
        groups: dict = {}
        for f in flats:  # optimizer.* compared among runs of the same optimizer class only
            if _relevant(k, f):
                sub = (
                    f.get("optimizer._target_")
                    if k.startswith("optimizer.") and k != "optimizer._target_"
                    else None
                )
                groups.setdefault(sub, set()).add(fmt_value(f.get(k)))
        if any(len(v) > 1 for v in groups.values()):
            out.append(k)
    return out


def base_label(flat: dict) -> str:
    """``single_level`` or ``<coarsening> δ=.. m=.. w=..``, `` (iso-FLOP)`` with a budget."""
    if is_single_level(flat):
        label = "single_level"
    else:
        label = (
            f"{flat.get('coarsening.name')} δ={fmt_value(flat.get('coarsening.delta'))} "
            f"m={flat.get('coarsening.coarse_steps')} w={flat.get('coarsening.window')}"
        )
    return label + (" (iso-FLOP)" if flat.get("train.target_flops") is not None else "")


def group_configurations(runs: list[Run]) -> list[Configuration]:
    """Group ``runs`` into configurations and label them.

    Order: single-level configurations first (those without ``train.target_flops`` before
    the iso-FLOP ones), then the others in the order their first run was found.
    """
    by_id: dict[tuple, Configuration] = {}
    for run in runs:
        by_id.setdefault(identity(run.flat), Configuration([])).runs.append(run)
    configs = list(by_id.values())
    for c in configs:
        c.runs.sort(key=lambda r: (str(r.seed), r.name))
    configs.sort(key=lambda c: (0 if not c.iso_flop else 1) if c.single_level else 2)  # stable
    keys = _differing_keys(configs)
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    budgets = {c.flat.get("train.target_flops") for c in configs if c.iso_flop}
    for c in configs:
        f = c.flat
        label = base_label(f)
        if c.iso_flop and len(budgets) > 1:
            label = label[:-1] + f" {f['train.target_flops']:.3g})"
        for k, leaf in zip(keys, leaves):
            if not _relevant(k, f) or k not in f:
                continue
            name = (
                "optimizer"
                if k == "optimizer._target_"
                else (leaf if leaves.count(leaf) == 1 else k)
            )
            value = (
                str(f[k]).rsplit(".", 1)[-1].lower()
                if k == "optimizer._target_"
                else fmt_value(f[k])
            )
            label += f" {name}={value}"
        c.label = label
    seen: dict[str, int] = {}
    for c in configs:
        n = seen[c.label] = seen.get(c.label, 0) + 1
        if n > 1:
            c.label += f" #{n}"
    return configs
