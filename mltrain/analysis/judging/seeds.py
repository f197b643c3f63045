"""Seeds of ``mltrain-compare``'s runs: runs that repeat a seed (a sweep run twice, a wsd branch
beside the standalone run it equals bit for bit) are one seed, counted and averaged once."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def by_seed(runs: Sequence) -> dict:
    """``runs`` (:class:`mltrain.analysis.judging.runs.Run`) by ``train.seed``, in order of first
    appearance."""
    out: dict = {}
    for r in runs:
        out.setdefault(r.seed, []).append(r)
    return out


def seed_mean(runs: Sequence, value: Callable) -> float:
    """The mean of ``value(run)`` over distinct seeds (runs repeating a seed averaged first)."""
    return float(np.mean([np.mean([value(r) for r in rs]) for rs in by_seed(runs).values()]))


def repeated_seeds(runs: Sequence) -> list[str]:
    """One phrase per seed that several of ``runs`` share, naming them:
    ``seed 0 by 2 runs (a, b)``."""
    return [
        f"seed {seed} by {len(rs)} runs ({', '.join(str(r.path) for r in rs)})"
        for seed, rs in by_seed(runs).items()
        if len(rs) > 1
    ]
