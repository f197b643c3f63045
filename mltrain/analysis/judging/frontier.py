"""The judge of ``mltrain-compare``: the tuned single-level frontier L*(C) and every method's FLOP
ratio against it (DESIGN.md section 8; fixed-budget re-evaluations of layer stacking and
dropping, Kaddour et al. 2023, arXiv 2307.06440).

Definitions (FLOPs C are counts of training FLOPs, losses L are final validation losses in
nats/token):

- Frontier runs: single-level runs at several budgets (``train.target_flops``; runs whose
  budgets agree within 1 % are one budget) × learning rates (``optimizer.lr``) × seeds
  (``train.seed``), each with its schedule completed at its own budget. Runs that differ in
  anything else (e.g. the optimizer) form separate frontiers.
- Per budget: the best learning rate by mean final validation loss over its seeds (a learning
  rate with a diverged or unfinished seed is not a candidate); its point is (mean FLOPs spent,
  mean final loss) of its seeds.
- L*(C): the best points sorted by C, made monotone non-increasing in C (running minimum:
  :func:`monotone`), interpolated linearly in log C between budgets (:func:`frontier_loss`);
  C*(L) is its inverse, the smallest C with L*(C) <= L (:func:`frontier_flops`).
- r = C_method / C*(L_method) (:func:`mltrain.analysis.judging.judge.r_frontier`): the FLOPs a
  method spent over those the tuned frontier needs for the method's final loss; r < 1 saves
  compute. Gap at equal FLOPs: L_method -
  L*(C_method). Outside the frontier's range both are bounds (:class:`~mltrain.analysis.judging.curves.Bounded`),
  never extrapolations. Both FLOP totals (``perf/flops`` with head, ``perf/flops_nonembed``;
  the frontier's points then use its runs' non-embedding totals); per seed, and the mean,
  min and max over seeds (:func:`mltrain.analysis.judging.curves.over_seeds`).

Grouping by budget and the best schedule and learning rate per budget are in
:mod:`mltrain.analysis.judging.budgets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mltrain.analysis.judging.budgets import (
    BUDGET_TOLERANCE,
    Budget,
    build_schedules,
    frontier_budget,
    group_budgets,
    planned_flops,
    rerun_command,
    schedule_of,
    short_of_budget,
)
from mltrain.analysis.judging.curves import Bounded, fmt_flops
from mltrain.analysis.judging.grouping import (
    Configuration,
    identity,
    label_suffixes,
    optimizer_differences,
    setting_differences,
)
from mltrain.analysis.judging.judge import MethodResult, judge_config
from mltrain.analysis.judging.runs import Run, is_single_level

MIN_BUDGETS = 4  # DESIGN.md section 8
# what a frontier varies: the budget and the tuned hyperparameters, the learning rate and the
# schedule (its shape: a warmup-stable-decay run may beat a cosine one at the same budget)
FAMILY_FREE = ("train.target_flops", "train.flops_scale", "train.steps", "optimizer.lr")
TUNED_PREFIXES = ("schedule.",)


# --------------------------------------------------------------------------- L*(C) and C*(L)
def monotone(losses: Sequence[float]) -> np.ndarray:
    """The best points' losses (nats/token, in order of increasing budget) made monotone
    non-increasing: the running minimum (a larger budget is never worse than a smaller one)."""
    return np.minimum.accumulate(np.asarray(losses, dtype=float))


def frontier_loss(c: float, flops: Sequence[float], env: Sequence[float]) -> Bounded:
    """L*(c): the envelope ``env`` (nats/token) at budgets ``flops`` (counts, increasing),
    linear in log FLOPs; below the smallest budget "> env[0]", above the largest
    "< env[-1]" (a bound, never an extrapolation). A ``c`` within BUDGET_TOLERANCE (1 %) of
    an end budget is that budget (a run sized by ``train.target_flops`` spends up to one step
    less than its budget)."""
    x, y = np.log(np.asarray(flops, dtype=float)), np.asarray(env, dtype=float)
    lo, hi = math.exp(x[0]), math.exp(x[-1])
    if c < lo * (1 - BUDGET_TOLERANCE):
        return Bounded.above(y[0])
    if c > hi * (1 + BUDGET_TOLERANCE):
        return Bounded.below(y[-1])
    c = min(max(c, lo), hi)
    return Bounded.exact(float(np.interp(math.log(c), x, y)))


def frontier_flops(loss: float, flops: Sequence[float], env: Sequence[float]) -> Bounded:
    """C*(loss): the smallest FLOPs (count) at which the envelope reaches ``loss``
    (L*(C) <= loss), linear in log FLOPs between budgets; "> largest budget" when the loss is
    below the envelope's last value, "< smallest budget" when it is above its first."""
    f, y = np.asarray(flops, dtype=float), np.asarray(env, dtype=float)
    if loss < y[-1]:
        return Bounded.above(f[-1])
    if loss > y[0]:
        return Bounded.below(f[0])
    i = int(np.flatnonzero(y <= loss)[0])
    if i == 0 or y[i] == loss:  # at a budget's own loss: that budget, exactly
        return Bounded.exact(f[i])
    t = (y[i - 1] - loss) / (y[i - 1] - y[i])
    return Bounded.exact(float(math.exp(math.log(f[i - 1]) + t * math.log(f[i] / f[i - 1]))))


# --------------------------------------------------------------------------- the frontier
@dataclass
class Frontier:
    """A tuned single-level frontier: budgets in increasing order, each with its best point; a
    :class:`mltrain.analysis.judging.judge.Judge`."""

    label: str
    budgets: list[Budget]  # only budgets with a best point, sorted by FLOPs
    runs: list[Run]  # every tuned run (diverged ones included), for the plot
    warnings: list[str] = field(default_factory=list)

    @property
    def losses(self) -> np.ndarray:
        """Each budget's best mean final validation loss (nats/token), in budget order."""
        return np.asarray([b.loss for b in self.budgets], dtype=float)

    @property
    def envelope(self) -> np.ndarray:
        """L* at each budget: :attr:`losses` made monotone (:func:`monotone`)."""
        return monotone(self.losses)

    def flops(self, total: str = "head") -> np.ndarray:
        """Each budget's FLOPs (counts, mean spent by its best runs) under ``total``."""
        return np.asarray([b.flops(total) for b in self.budgets], dtype=float)

    def loss_at(self, c: float, total: str = "head") -> Bounded:
        """L*(c) under ``total`` (:func:`frontier_loss`)."""
        return frontier_loss(c, self.flops(total), self.envelope)

    def flops_for(self, loss: float, total: str = "head") -> Bounded:
        """C*(loss) under ``total`` (:func:`frontier_flops`)."""
        return frontier_flops(loss, self.flops(total), self.envelope)

    def bounds(self, total: str = "head") -> tuple[float, float]:
        """The FLOPs (counts) of its smallest and largest budget under ``total``."""
        f = self.flops(total)
        return float(f[0]), float(f[-1])

    def differences(self, run: Run) -> dict[str, list[str]]:
        """Where ``run`` trains other data, another model, another number of tokens per step
        or another optimizer than this frontier's runs (:func:`setting_differences` and
        :func:`optimizer_differences` against a best run of its smallest budget)."""
        ref = self.budgets[0].best[0]
        return setting_differences(run, ref) | optimizer_differences(run, ref)

    def schedules(self) -> set[str]:
        """The LR schedules (:func:`mltrain.analysis.judging.budgets.schedule_of`) its runs
        tried at any budget, diverged ones included (every budget's best and other schedules
        when it holds no runs)."""
        tried = {schedule_of(r) for r in self.runs}
        for b in self.budgets:
            tried |= {b.schedule, *b.others} - {""}
        return tried


def build_frontier(runs: Sequence[Run], label: str = "tuned frontier") -> Frontier:
    """L*(C) of one family of tuned runs (same settings except budget, learning rate, schedule
    and seed): per budget the best schedule and learning rate
    (:func:`mltrain.analysis.judging.budgets.build_schedules`)."""
    warnings = [  # placed at what they planned (budgets.frontier_budget), named here
        f"{r.path}: {why}; it is a frontier point at {fmt_flops(planned_flops(r))}, not at its "
        "configured budget"
        for r in runs
        if (why := short_of_budget(r))
    ]
    groups = group_budgets(runs)
    budgets = [build_schedules(g, warnings) for g in groups]
    budgets = sorted((b for b in budgets if b.best), key=lambda b: b.flops("head"))
    f = Frontier(label, budgets, list(runs), warnings)
    if budgets and len(budgets) < MIN_BUDGETS:
        n = len(budgets)
        warnings.append(
            f"{n} budget{'s' if n > 1 else ''} (DESIGN.md §8 asks ≥ {MIN_BUDGETS})"
            + next_budget_hint(budgets[-1], [frontier_budget(g[0]) for g in groups])
        )
    for b, env in zip(budgets, f.envelope):
        if b.loss > env:
            warnings.append(
                f"budget {fmt_flops(b.budget)}: best loss {b.loss:.4f} is above a smaller "
                f"budget's ({env:.4f}); the frontier uses {env:.4f} there (made monotone)"
            )
    return f


def next_budget_hint(largest: Budget, tried: Sequence[float] = ()) -> str:
    """``"; add one at 8.00e3 with: mltrain -m ..."``: the sweep that adds the budget twice the
    ``largest`` one (``train.flops_scale`` doubled, so ``train.target_flops`` stays the
    family's), at one seed, over the best learning rate there and its neighbours in the grid
    tried (the grid's ratio beyond an edge; 2 when one rate was tried). Empty when the runs are
    sized by ``train.steps`` (no budget to double); when a larger budget has runs (``tried``,
    every budget with runs) that gave no point yet, that budget is named instead: starting
    another would repeat runs still going."""
    later = [c for c in tried if c > largest.budget * (1 + BUDGET_TOLERANCE)]
    if later:
        return (
            f"; {fmt_flops(min(later))} has runs but no frontier point yet (its warning says why)"
        )
    best = largest.best[0]
    target = best.flat.get("train.target_flops")
    if target is None:
        return ""
    scale = float(best.flat.get("train.flops_scale") or 1.0)
    lrs = sorted(largest.by_lr)
    i = lrs.index(largest.best_lr)
    # beyond an edge, the grid's own ratio there (2 when one rate was tried)
    below = lrs[i - 1] if i > 0 else lrs[0] / (lrs[1] / lrs[0] if len(lrs) > 1 else 2.0)
    above = lrs[i + 1] if i + 1 < len(lrs) else lrs[-1] * (lrs[-1] / lrs[-2] if i else 2.0)
    grid = ",".join(f"{lr:.3g}" for lr in (below, lrs[i], above))
    command = rerun_command(
        best, [best.seed], {"train.flops_scale": f"{2 * scale:g}", "optimizer.lr": grid}
    )
    return f"; add one at {fmt_flops(2 * largest.budget)} with: {command}"


def family_key(run: Run) -> tuple:
    """What a frontier family shares: the configuration without budget, learning rate and
    schedule (the tuned hyperparameters)."""
    flat = {
        k: v
        for k, v in run.flat.items()
        if k not in FAMILY_FREE and not k.startswith(TUNED_PREFIXES)
    }
    return identity(flat)


def frontier_families(runs: Sequence[Run], warnings: list[str]) -> list[Frontier]:
    """Frontier runs split into families (:func:`family_key`), one :class:`Frontier` each,
    labelled ``tuned frontier, SGD`` (plus the keys that differ between families). Runs that
    are not single-level are left out with a warning."""
    fams: dict[tuple, list[Run]] = {}
    for r in runs:
        if not is_single_level(r.flat):
            warnings.append(f"{r.path}: not single-level; not a frontier run (left out)")
            continue
        fams.setdefault(family_key(r), []).append(r)
    groups = list(fams.values())
    flats = [g[0].flat for g in groups]
    tuned = sorted({k for f in flats for k in f if k.startswith(TUNED_PREFIXES)})
    suffixes = label_suffixes(
        flats, skip=("optimizer._target_", "optimizer._partial_", *FAMILY_FREE, *tuned)
    )
    out = []
    for g, suffix in zip(groups, suffixes):
        opt = str(g[0].flat.get("optimizer._target_", "?")).rsplit(".", 1)[-1]
        f = build_frontier(g, f"tuned frontier, {opt}{suffix}")
        if f.budgets:
            out.append(f)
        else:
            warnings.append(f"{f.label}: no budget has a usable best learning rate")
            warnings.extend(f.warnings)
    return out


# --------------------------------------------------------------------------- judging methods
@dataclass
class Judgement:
    """The frontiers and every configuration judged against each of them."""

    frontiers: list[Frontier]
    results: list[MethodResult]
    warnings: list[str] = field(default_factory=list)  # not tied to one frontier

    def all_warnings(self) -> list[str]:
        """Every warning, each once: general, per frontier (prefixed by its label), per method."""
        out = list(self.warnings)
        for f in self.frontiers:
            out += [f"{f.label}: {w}" for w in f.warnings]
        for r in self.results:
            out += [w for w in r.warnings if w not in out]
        return out


def judge(frontier_runs: Sequence[Run], configs: Sequence[Configuration]) -> Judgement:
    """Build the frontiers from ``frontier_runs`` and judge every configuration against each.

    Args:
        frontier_runs: tuned single-level runs (budgets × learning rates × seeds).
        configs: the configurations to judge (multilevel or any other non-frontier runs).
    """
    warnings: list[str] = []
    frontiers = frontier_families(frontier_runs, warnings)
    results = [judge_config(c, f) for f in frontiers for c in configs]
    return Judgement(frontiers, results, warnings)
