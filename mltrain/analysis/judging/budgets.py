"""One budget of a tuned single-level frontier (:mod:`mltrain.analysis.judging.frontier`): frontier runs
grouped by budget (``train.target_flops``; budgets within :data:`BUDGET_TOLERANCE`, 1 %, are one
budget), and per budget the best LR schedule and learning rate by mean final validation loss
over seeds (DESIGN.md section 8), with the warnings of an under-tuned grid (best learning rate at
an edge, too few seeds: the command that adds them) and of diverged or unfinished seeds. FLOPs
are counts of training FLOPs, losses nats/token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mltrain.analysis.judging.curves import fmt_flops
from mltrain.analysis.judging.runs import (
    Run,
    _num,
    beside,
    configured_budget,
    planned_flops,
    short_of_budget,
)
from mltrain.analysis.judging.seeds import by_seed, repeated_seeds, seed_mean

BUDGET_TOLERANCE = 0.01  # runs whose budgets agree within 1 % are one budget
MIN_SEEDS = 3  # DESIGN.md section 8


def frontier_budget(run: Run) -> float:
    """The budget a frontier run is grouped at (FLOPs with head): its configured budget
    (:func:`mltrain.analysis.judging.runs.configured_budget`, which is
    ``mltrain.plan.plan.budget_of`` read from a flattened config) when its plan reaches it (runs of several sizes, whose steps differ, then share it); else
    what it planned (``run.json``; a run capped by ``train.max_steps`` sits at the FLOPs of its
    capped plan, :func:`short_of_budget`), else what it spent."""
    b = configured_budget(run.flat)
    return b if b is not None and not short_of_budget(run) else planned_flops(run)


def group_budgets(runs: Sequence[Run], tol: float = BUDGET_TOLERANCE) -> list[list[Run]]:
    """Runs grouped by budget (:func:`frontier_budget`): sorted, a new group whenever a budget is
    more than ``tol`` above the first of the current group."""
    groups: list[list[Run]] = []
    for r in sorted(runs, key=frontier_budget):
        if groups and frontier_budget(r) <= frontier_budget(groups[-1][0]) * (1 + tol):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def lr_of(run: Run) -> float:
    """A run's peak learning rate, ``optimizer.lr``."""
    return _num(run.flat.get("optimizer.lr"))


def schedule_of(run: Run) -> str:
    """A run's LR schedule, as a short name: ``cosine``, ``wsd``, plus its other schedule
    settings when they are not the schema's defaults (e.g. ``wsd decay_fraction=0.1``)."""
    from mltrain.config import ScheduleConfig

    default = ScheduleConfig()
    parts = [str(run.flat.get("schedule.name", "?"))]
    for k, v in sorted(run.flat.items()):
        if k.startswith("schedule.") and k != "schedule.name":
            leaf = k.split(".", 1)[1]
            if getattr(default, leaf, v) != v:
                parts.append(f"{leaf}={v:g}" if isinstance(v, float) else f"{leaf}={v}")
    return " ".join(parts)


def schedule_overrides(schedule: str) -> str:
    """The overrides that train with ``schedule`` (a :func:`schedule_of` name):
    ``wsd decay_fraction=0.1`` -> ``schedule=wsd schedule.decay_fraction=0.1``."""
    name, *settings = schedule.split()
    return " ".join([f"schedule={name}", *(f"schedule.{s}" for s in settings)])


@dataclass
class Budget:
    """One budget of a frontier: its runs by learning rate and the best learning rate's point."""

    budget: float  # FLOPs with head (train.target_flops, or the first run's spent FLOPs)
    by_lr: dict[float, list[Run]]  # every run of the best schedule, by learning rate
    losses: dict[float, float]  # mean final loss of each candidate learning rate
    best_lr: float | None = None
    best: list[Run] = field(default_factory=list)  # the best learning rate's runs
    schedule: str = ""  # the LR schedule of these runs (the best one at this budget)
    others: dict[str, float] = field(default_factory=dict)  # other schedules' best losses

    @property
    def loss(self) -> float:
        """Mean final validation loss of the best learning rate's seeds (NaN without one)."""
        return self.losses.get(self.best_lr, math.nan)

    @property
    def seeds(self) -> int:
        """Distinct seeds of the best learning rate (a repeated seed counts once)."""
        return len(by_seed(self.best))

    def spread(self) -> tuple[float, float]:
        """Min and max final validation loss (nats/token) over the best learning rate's seeds."""
        losses = [r.final_val_loss for r in self.best]
        return (min(losses), max(losses)) if losses else (math.nan, math.nan)

    def flops(self, total: str = "head") -> float:
        """Mean FLOPs (counts) spent by the seeds that did not diverge (NaN if none)."""
        """Mean FLOPs spent by the best learning rate's seeds under ``total``."""
        return float(np.mean([r.total(total) for r in self.best])) if self.best else math.nan


def _tried(runs: Sequence[Run]) -> str:
    return ", ".join(f"{lr:g}" for lr in sorted({lr_of(r) for r in runs}))


def build_budget(runs: Sequence[Run], warnings: list[str]) -> Budget:
    """The best learning rate of one budget's runs (appends warnings: edge of the grid, too few
    seeds, diverged or unfinished seeds)."""
    budget = frontier_budget(runs[0])
    by_lr: dict[float, list[Run]] = {}
    for r in runs:
        by_lr.setdefault(lr_of(r), []).append(r)
    b = Budget(budget, dict(sorted(by_lr.items())), {})
    where = f"budget {fmt_flops(budget)}"
    pending: dict[float, set[int]] = {}  # seeds left out as unfinished (running or killed)
    for lr, rs in b.by_lr.items():
        bad = [r for r in rs if r.diverged]
        unfinished = [(r, r.incomplete()) for r in rs if not r.diverged and r.incomplete()]
        if bad:
            warnings.append(
                f"{where}: lr {lr:g} not a frontier point: "
                + "; ".join(f"seed {r.seed} {r.diverged_text}" for r in bad)
            )
        else:
            if unfinished:  # a seed still running (or killed) is left out, not its finished ones
                done = [r for r in rs if not r.incomplete()]
                pending[lr] = {r.seed for r, _ in unfinished}
                warnings.append(
                    f"{where}: lr {lr:g}: "
                    + "; ".join(f"seed {r.seed} left out, {why}" for r, why in unfinished)
                    + ("" if done else " (no finished seed: not a frontier point)")
                )
                rs[:] = done
            if rs:  # a seed repeated by several runs counts once
                b.losses[lr] = seed_mean(rs, lambda r: r.final_val_loss)
                if repeats := repeated_seeds(rs):
                    warnings.append(
                        f"{where}: lr {lr:g}: one seed repeated, counted once: "
                        + "; ".join(repeats)
                    )
    if not b.losses:
        if any(r.diverged for r in runs):
            warnings.append(
                f"{where}: no learning rate finished without diverging; no frontier point"
            )
        else:
            warnings.append(f"{where}: no learning rate has finished yet; no frontier point")
        return b
    b.best_lr = min(b.losses, key=lambda lr: (b.losses[lr], lr))
    b.best = list(b.by_lr[b.best_lr])
    lrs = sorted(b.by_lr)
    if len(lrs) == 1:
        warnings.append(
            f"{where}: only one learning rate tried ({lrs[0]:g}): the frontier may be under-tuned"
        )
    elif b.best_lr in (lrs[0], lrs[-1]):
        side = "smallest" if b.best_lr == lrs[0] else "largest"
        # one step of the grid beyond its edge (the grid's own ratio there)
        beyond = lrs[0] ** 2 / lrs[1] if side == "smallest" else lrs[-1] ** 2 / lrs[-2]
        command = rerun_command(
            b.best[0], sorted(by_seed(b.best)), {"optimizer.lr": f"{beyond:.3g}"}
        )
        warnings.append(
            f"{where}: best lr {b.best_lr:g} is the {side} tried ({_tried(runs)}): the frontier "
            f"may be under-tuned; extend the grid with: {command}"
        )
    have = set(by_seed(b.best))
    n = len(have)
    if n < MIN_SEEDS:
        # a seed still running (or killed) is not started again: it is waited for or resumed
        waiting = sorted(pending.get(b.best_lr, set()) - have)[: MIN_SEEDS - n]
        taken = have | set(waiting)
        more = [s for s in range(MIN_SEEDS + len(taken)) if s not in taken][
            : MIN_SEEDS - n - len(waiting)
        ]
        line = (
            f"{where}: best lr {b.best_lr:g} has "
            + ("only one seed" if n == 1 else f"{n} seeds")
            + f" (DESIGN.md §8 asks ≥ {MIN_SEEDS})"
        )
        if waiting:
            one = len(waiting) == 1
            line += (
                f"; seed{'' if one else 's'} {', '.join(map(str, waiting))} unfinished (left out "
                f"above): let {'it' if one else 'them'} finish if running, else resume "
                f"{'it' if one else 'them'} (train.resume=auto)"
            )
        if more:
            line += f"; add {'the others' if waiting else 'them'} with: " + rerun_command(
                b.best[0], more
            )
        warnings.append(line)
    return b


def rerun_command(run: Run, seeds: Sequence[int], changes: dict[str, str] | None = None) -> str:
    """The ``mltrain -m`` command that repeats ``run`` (its command-line overrides) at ``seeds``,
    with the settings ``changes`` (``{"optimizer.lr": "0.016"}``) in place of its own, quoted
    for the shell and for Hydra. A branch of a wsd trunk (``train.branch_from``) is repeated as
    the standalone run at its budget (bit for bit the same run): its trunk was trained at one
    seed, so ``train.branch_from`` is left out and ``train.branch_points=[]`` given (a preset's
    own branch points would not fit its budget). Any other run keeps its ``train.branch_points``
    (``[]`` too: left out, the preset's would come back).

    The sweep goes next to ``run`` (``hydra.sweep.dir``, named by what it adds: ``NAME_seeds1-2``,
    ``NAME_lr0.016``), so the same mltrain-compare over a directory above ``run`` finds it."""
    from omegaconf import OmegaConf

    from mltrain.config.overrides import hydra_value, shell_command

    path = run.path / ".hydra" / "overrides.yaml"
    try:
        overrides = [str(o) for o in OmegaConf.load(path)] if path.is_file() else []
    except Exception:
        overrides = []
    drop = ("train.seed", "hydra.", "train.resume", "train.branch_from")
    named = dict(changes or {})  # what the sweep adds: its folder's name
    changes = dict(named)
    if any(o.lstrip("+~").startswith("train.branch_from=") for o in overrides):
        drop += ("train.branch_points",)
        changes.setdefault("train.branch_points", "[]")
    keep = [
        o
        for o in overrides
        if not o.lstrip("+~").startswith(drop) and o.lstrip("+~").split("=")[0] not in changes
    ]
    seeds_arg = "train.seed=" + ",".join(str(s) for s in seeds)
    new = [f"{k}={v}" for k, v in changes.items()]
    added = "_".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in named.items()) or "seeds" + "-".join(
        str(s) for s in seeds
    )
    sweep_dir = beside(run.path, added.replace(",", "-"))
    return shell_command(
        ["mltrain", "-m", *keep, *new, seeds_arg, f"hydra.sweep.dir={hydra_value(str(sweep_dir))}"]
    )


def build_schedules(runs: Sequence[Run], warnings: list[str]) -> Budget:
    """One budget's point: the best schedule (:func:`schedule_of`) by its best learning rate's
    mean final loss; the learning-rate warnings of that schedule only (a schedule that lost
    need not be tuned further), and the other schedules' best losses in ``others``."""
    by_schedule: dict[str, list[Run]] = {}
    for r in runs:
        by_schedule.setdefault(schedule_of(r), []).append(r)
    candidates = []
    for name, group in sorted(by_schedule.items()):
        w: list[str] = []
        b = build_budget(group, w)
        b.schedule = name
        candidates.append((b, w))
    usable = [(b, w) for b, w in candidates if b.best]
    for b, w in candidates:  # a schedule with no usable point says why (unfinished, diverged)
        if not b.best:
            warnings.extend(x for x in w if "left out" in x or "not a frontier point" in x)
    if not usable:
        for _, w in candidates:
            warnings.extend(x for x in w if x not in warnings)
        return candidates[0][0]
    best, w = min(usable, key=lambda bw: (bw[0].loss, bw[0].schedule))
    if len(by_schedule) > 1:
        w = [x.replace(": best lr", f": best lr ({best.schedule})", 1) for x in w]
    warnings.extend(w)
    best.others = {b.schedule: b.loss for b, _ in usable if b is not best}
    return best
