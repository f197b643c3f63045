"""What a method is judged against, and the ratios ``mltrain-compare`` prints.

A *judge* (:class:`Judge`) is a measured curve L*(C) of the best final validation loss
(nats/token) reachable with C training FLOPs (counts), under each FLOP total (``head``:
``perf/flops``, ``nonembed``: ``perf/flops_nonembed``), and its inverse C*(L). Two implement it:
the tuned single-level frontier of one architecture
(:class:`mltrain.analysis.judging.frontier.Frontier`, DESIGN.md section 8) and the
compute-optimal envelope over the model sizes of one family
(:class:`mltrain.analysis.judging.envelope.Envelope`; Kaddour et al. 2023, arXiv 2307.06440).
Outside the FLOPs it measured (:meth:`Judge.bounds`) a judge answers with a bound
(:class:`~mltrain.analysis.judging.curves.Bounded`), never an extrapolation.

The ratios the reports print, each ``C / C*(L)`` of a run's FLOPs C and final loss L (r < 1
saves compute), against a different judge:

- ``r`` (:func:`r_frontier`): against the tuned frontier of the configuration's optimizer and
  data (the ``frontier.csv`` and ``summary.md`` tables);
- ``r_same`` (:func:`r_same`): against the frontier of the configuration's own final
  architecture within an envelope's family;
- ``r_env`` (:func:`r_env`): against the envelope, the best single-level training of any
  measured size.

The gap ``L − L*(C)`` (nats/token) goes with each (:func:`gap`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mltrain.analysis.judging.budgets import schedule_of, schedule_overrides
from mltrain.analysis.judging.curves import Bounded, over_seeds
from mltrain.analysis.judging.grouping import Configuration
from mltrain.analysis.judging.runs import TOTALS, Run


@runtime_checkable
class Judge(Protocol):
    """A measured L*(C) with its inverse C*(L), what it measured, and what it warns about."""

    label: str  # named in tables and warnings, e.g. "tuned frontier, AdamW"
    warnings: list[str]  # its own (under-tuned budgets, a size grid's edge...)

    def loss_at(self, c: float, total: str = "head") -> Bounded:
        """L*(c) (nats/token) at ``c`` FLOPs under ``total``: exact within :meth:`bounds`."""
        ...

    def flops_for(self, loss: float, total: str = "head") -> Bounded:
        """C*(loss) (FLOPs): the fewest FLOPs at which L* reaches ``loss`` (L* <= loss)."""
        ...

    def bounds(self, total: str = "head") -> tuple[float, float]:
        """The smallest and largest FLOPs it measured under ``total``."""
        ...

    def differences(self, run: Run) -> dict[str, list[str]]:
        """What makes ``run`` train other data, another model, another number of tokens per
        step or with another optimizer than the judge's runs, in the parts this judge cares
        about (:func:`mltrain.analysis.judging.grouping.setting_differences` and
        :func:`~mltrain.analysis.judging.grouping.optimizer_differences`; an envelope, whose
        sizes differ in the model, leaves out ``model``)."""
        ...

    def schedules(self) -> set[str]:
        """The LR schedules its runs tried at any budget
        (:func:`mltrain.analysis.judging.budgets.schedule_of`): a method trained with another
        has a ratio that credits the schedule as well as the method."""
        ...


# --------------------------------------------------------------------------- the ratios
def ratio(c: float, c_star: Bounded) -> Bounded:
    """r = c / C*, with C* exact or a bound (a lower bound on C* is an upper bound on r)."""
    if c_star.is_exact:
        return Bounded.exact(c / c_star.lo)
    if c_star.kind == ">":
        return Bounded.below(c / c_star.lo)
    return Bounded.above(c / c_star.hi)


def gap(loss: float, l_star: Bounded) -> Bounded:
    """L_method - L*(C_method) (nats/token), with L* exact or a bound."""
    if l_star.is_exact:
        return Bounded.exact(loss - l_star.lo)
    if l_star.kind == "<":
        return Bounded.above(loss - l_star.hi)
    return Bounded.below(loss - l_star.lo)


def r_frontier(c: float, loss: float, frontier: Judge, total: str = "head") -> Bounded:
    """The reports' ``r``: ``c`` FLOPs over C*(``loss``) of a tuned single-level ``frontier``
    (:class:`mltrain.analysis.judging.frontier.Frontier`), FLOPs under ``total``."""
    return ratio(c, frontier.flops_for(loss, total))


def r_same(c: float, loss: float, own: Judge, total: str = "head") -> Bounded:
    """``r_same``: ``c`` FLOPs over C*(``loss``) of ``own``, the frontier of the method's own
    final architecture in an envelope's family (today's ``r`` of that architecture)."""
    return ratio(c, own.flops_for(loss, total))


def r_env(c: float, loss: float, env: Judge, total: str = "head") -> Bounded:
    """``r_env``: ``c`` FLOPs over C*_env(``loss``) of the envelope over sizes ``env``
    (:class:`mltrain.analysis.judging.envelope.Envelope`)."""
    return ratio(c, env.flops_for(loss, total))


RatioOf = Callable[[float, float, Judge, str], Bounded]
RATIO_NAMES = {r_frontier: "r", r_same: "r_same", r_env: "r_env"}  # as the reports name them


# --------------------------------------------------------------------------- judging methods
@dataclass
class SeedResult:
    """One method run against a judge (FLOPs counts, losses nats/token)."""

    run: Run
    flops: dict[str, float]  # total -> FLOPs spent
    loss: float  # final validation loss (NaN when diverged)
    r: dict[str, Bounded | None]  # total -> C / C*(L)
    gap: dict[str, Bounded | None]  # total -> L - L*(C)


@dataclass
class MethodResult:
    """A configuration judged against one judge: per seed, and mean/min/max over seeds."""

    config: Configuration
    judge: Judge
    seeds: list[SeedResult]  # every run, diverged ones with r = gap = None
    r: dict[str, tuple[Bounded, Bounded, Bounded] | None]  # total -> (mean, min, max)
    gap: dict[str, tuple[Bounded, Bounded, Bounded] | None]
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> list[SeedResult]:
        """The seeds that did not diverge."""
        return [s for s in self.seeds if not s.run.diverged]

    def flops(self, total: str = "head") -> float:
        """Mean FLOPs (counts) spent under ``total`` by the seeds that did not diverge (NaN
        if none)."""
        h = self.healthy
        return float(np.mean([s.flops[total] for s in h])) if h else math.nan

    def loss(self) -> tuple[float, float, float] | None:
        """Mean, min and max final validation loss (nats/token) of the seeds that did not diverge."""
        h = [s.loss for s in self.healthy]
        return (float(np.mean(h)), min(h), max(h)) if h else None


def judge_seed(run: Run, judge: Judge, r_of: RatioOf = r_frontier) -> SeedResult:
    """``r_of`` and the gap of one run under both totals (None for a diverged run)."""
    flops = {t: run.total(t) for t in TOTALS}
    if run.diverged:
        return SeedResult(run, flops, math.nan, dict.fromkeys(TOTALS), dict.fromkeys(TOTALS))
    loss = run.final_val_loss
    r = {t: r_of(flops[t], loss, judge, t) for t in TOTALS}
    g = {t: gap(loss, judge.loss_at(flops[t], t)) for t in TOTALS}
    return SeedResult(run, flops, loss, r, g)


def judge_config(config: Configuration, judge: Judge, r_of: RatioOf = r_frontier) -> MethodResult:
    """Every finished run of ``config`` against ``judge`` with the ratio ``r_of`` (an unfinished
    one is left out with a warning); warns where a run differs from the judge's runs in what
    the judge compares (:meth:`Judge.differences`)."""
    # a run still going (or killed) has no final loss yet: left out, said in a warning
    unfinished = [(r, why) for r in config.runs if not r.diverged and (why := r.incomplete())]
    left_out = {id(r) for r, _ in unfinished}
    seeds = [judge_seed(r, judge, r_of) for r in config.runs if id(r) not in left_out]
    h = [s for s in seeds if not s.run.diverged]
    res = MethodResult(
        config,
        judge,
        seeds,
        {t: over_seeds([s.r[t] for s in h]) if h else None for t in TOTALS},
        {t: over_seeds([s.gap[t] for s in h]) if h else None for t in TOTALS},
    )
    for r, why in unfinished:
        res.warnings.append(f"`{config.label}`: seed {r.seed} left out, {why}")
    for part, diff in judge.differences(config.runs[0]).items():
        verb = "differ" if part == "tokens per step" else "differs"
        res.warnings.append(
            f"`{config.label}`: {part} {verb} from `{judge.label}`: " + ", ".join(diff)
        )
    if (w := schedule_warning(config, judge, RATIO_NAMES.get(r_of, "r"))) is not None:
        res.warnings.append(w)
    return res


def schedule_warning(config: Configuration, judge: Judge, ratio_name: str = "r") -> str | None:
    """The warning for a configuration whose LR schedule
    (:func:`mltrain.analysis.judging.budgets.schedule_of`) is none that ``judge``'s runs tried
    at any budget (:meth:`Judge.schedules`), with the runs that would try it; None when it is
    one, or when either side does not record a schedule (older runs). A frontier tunes its
    schedule as it tunes its learning rate: a method whose schedule it never tried (a wsd run
    against a cosine frontier) has a ratio that credits the schedule as well as the method."""
    run = config.runs[0]
    tried = judge.schedules()
    if "schedule.name" not in run.flat or not tried or any(t.startswith("?") for t in tried):
        return None
    own = schedule_of(run)
    if own in tried:
        return None
    return (
        f"`{config.label}`: schedule {own} not among those `{judge.label}` tried "
        f"({', '.join(sorted(tried))}): {ratio_name} may credit the schedule; "
        f"add frontier runs with {schedule_overrides(own)}"
    )
