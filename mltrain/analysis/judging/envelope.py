"""The judge over model sizes: the compute-optimal envelope L*_env(C) of tuned single-level
frontiers of several model sizes of one family, and every method's r against it.

A fixed-budget comparison against one architecture credits "train a smaller model first" as a
saving; the question a researcher asks is whether a scheme beats the best single-level training
of *any* model size at its budget (Kaddour et al. 2023, arXiv 2307.06440; compute-optimal sizes:
Hoffmann et al. 2022). Definitions (FLOPs C are counts of training FLOPs, losses L final
validation losses in nats/token, under each FLOP total, ``head`` and ``nonembed``, separately):

- A *family*: frontier runs that agree in everything (data, tokenizer, sequence length, tokens
  per step, optimizer...) except the model size (:data:`mltrain.analysis.judging.sizes.SIZE_KEYS`), the
  budget, the learning rate, the schedule and the seed. Each size has its tuned frontier
  L*_N(C) (:func:`mltrain.analysis.judging.frontier.build_frontier`: best schedule and learning rate per
  budget, seeds averaged, monotone, linear in log C).
- The envelope's points: the FLOPs of every size's budgets, those within 1 % merged
  (:data:`mltrain.analysis.judging.budgets.BUDGET_TOLERANCE`); at each, the lowest L*_N over the sizes
  whose measured range holds it exactly (interpolated within a size's range, never
  extrapolated), and the size that gives it (the *best size*). L*_env is those losses made
  monotone (running minimum) and linear in log C between points; C*_env(L) its inverse.
  Between points this chord lies at or below min_N L*_N (a minimum of lines is concave), so the
  envelope never flatters a method.
- ``r_env = C / C*_env(L)`` and the gap ``L − L*_env(C)``; ``r_same`` the same against the
  frontier of the method's own final architecture (today's r). Outside the envelope's range
  both are bounds (:class:`~mltrain.analysis.judging.curves.Bounded`), never extrapolations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mltrain.analysis.judging.budgets import BUDGET_TOLERANCE
from mltrain.analysis.judging.curves import Bounded, fmt_flops
from mltrain.analysis.judging.frontier import Frontier, frontier_flops, frontier_loss, monotone
from mltrain.analysis.judging.grouping import (
    Configuration,
    identity,
    optimizer_differences,
    setting_differences,
)
from mltrain.analysis.judging.judge import MethodResult, judge_config, r_env, r_same
from mltrain.analysis.judging.runs import TOTALS, Run
from mltrain.analysis.judging.sizes import (
    SIZE_KEYS,
    Params,
    run_params,
    size_key,
    size_label,
    tokens_of,
)

# nats/token: a size this close to the best at a budget could be the best once tuned further
# (issue 30's threshold for "within reach of the envelope")
CLOSE = 0.05


@dataclass
class Size:
    """One model size of a family: its tuned frontier and parameter counts."""

    frontier: Frontier
    key: tuple  # (n_layer, n_embd, n_head)
    label: str  # "3 blocks, d=128"
    params: Params | None

    @property
    def ref(self):
        """A best run of its smallest budget (its settings stand for the size)."""
        return self.frontier.budgets[0].best[0]


@dataclass
class Point:
    """One point of the envelope under one FLOP total: FLOPs (count), the lowest L*_N there
    (``raw``, nats/token), the monotone value (``loss``) and the size that gives ``raw``."""

    flops: float
    raw: float
    loss: float
    size: Size
    others: dict[str, float] = field(default_factory=dict)  # size label -> L*_N at these FLOPs


@dataclass
class BudgetChoice:
    """Per budget (FLOPs with head): the best size and its tokens per parameter."""

    budget: float  # FLOPs with head
    losses: dict[str, float]  # size label -> L*_N (nats/token) at this budget
    size: Size  # the best size
    tokens: float  # tokens its best runs trained on (mean)

    def tokens_per_param(self, which: str = "total") -> float:
        """Tokens over the best size's ``total`` or ``nonembed`` parameters (NaN if unknown)."""
        p = self.size.params
        return self.tokens / p.get(which) if p is not None else math.nan


@dataclass
class Envelope:
    """L*_env(C) over the sizes of one family (see the module docstring); a
    :class:`mltrain.analysis.judging.judge.Judge`."""

    label: str
    sizes: list[Size]  # sorted by total parameters (by blocks × width² when unknown)
    points: dict[str, list[Point]]  # total -> points in increasing FLOPs
    choices: list[BudgetChoice]  # per budget with head
    warnings: list[str] = field(default_factory=list)  # the envelope's own (size grid, counts)
    size_warnings: list[str] = field(default_factory=list)  # each size frontier's, prefixed

    def flops(self, total: str = "head") -> np.ndarray:
        """The points' FLOPs (counts) under ``total``."""
        return np.asarray([p.flops for p in self.points[total]], dtype=float)

    def losses(self, total: str = "head") -> np.ndarray:
        """The points' monotone losses (nats/token) under ``total``."""
        return np.asarray([p.loss for p in self.points[total]], dtype=float)

    def loss_at(self, c: float, total: str = "head") -> Bounded:
        """L*_env(c) (:func:`mltrain.analysis.judging.frontier.frontier_loss`)."""
        return frontier_loss(c, self.flops(total), self.losses(total))

    def flops_for(self, loss: float, total: str = "head") -> Bounded:
        """C*_env(loss) (:func:`mltrain.analysis.judging.frontier.frontier_flops`)."""
        return frontier_flops(loss, self.flops(total), self.losses(total))

    def size_of(self, flat: dict) -> Size | None:
        """The size of this family with the architecture of ``flat``, None if not measured."""
        return next((s for s in self.sizes if s.key == size_key(flat)), None)

    def choice_at(self, c: float) -> tuple[BudgetChoice, bool]:
        """The budget choice nearest ``c`` (FLOPs with head) in log C, and whether ``c`` is that
        budget (within 1 %)."""
        best = min(self.choices, key=lambda b: abs(math.log(c / b.budget)))
        return best, abs(c / best.budget - 1) <= BUDGET_TOLERANCE

    def bounds(self, total: str = "head") -> tuple[float, float]:
        """The FLOPs (counts) of its first and last point under ``total``."""
        f = self.flops(total)
        return float(f[0]), float(f[-1])

    def differences(self, run: Run) -> dict[str, list[str]]:
        """Where ``run`` trains other data, another number of tokens per step or another
        optimizer than the family's runs (:func:`setting_differences` and
        :func:`optimizer_differences` against its smallest size); the model is left out,
        since the family's sizes differ in it."""
        ref = self.sizes[0].ref
        diff = setting_differences(run, ref) | optimizer_differences(run, ref)
        return {part: keys for part, keys in diff.items() if part != "model"}

    def schedules(self) -> set[str]:
        """The LR schedules its sizes' runs tried at any budget
        (:meth:`mltrain.analysis.judging.frontier.Frontier.schedules`)."""
        return {s for size in self.sizes for s in size.frontier.schedules()}


def _size_order(s: Size) -> float:
    if s.params is not None:
        return s.params.total
    n, d, _ = s.key
    return float((n or 0) * (d or 0) ** 2)


def _own(s: Size, total: str) -> list[tuple[float, float, float]]:
    """A size's measured points as (group key, FLOPs spent, L*_N): with head the key is the
    configured budget (``train.target_flops`` × ``train.flops_scale``: sizes that spend up to
    a step less or more than one budget still share it), else the FLOPs spent."""
    f = s.frontier
    flops, env = f.flops(total), f.envelope
    keys = [b.budget for b in f.budgets] if total == "head" and hasattr(f, "budgets") else flops
    return [(float(k), float(x), float(e)) for k, x, e in zip(keys, flops, env) if math.isfinite(x)]


def envelope_points(sizes: Sequence[Size], total: str) -> list[Point]:
    """The envelope's points under ``total`` (module docstring): per budget (:func:`_own`'s
    keys within 1 %), each size's own L*_N there, or its L*_N interpolated at the budget's mean
    FLOPs when its measured range holds them; the lowest, its size, and the running minimum."""
    xs = sorted(((k, x, e, s) for s in sizes for k, x, e in _own(s, total)), key=lambda t: t[0])
    groups: list[list] = []
    for item in xs:
        if groups and item[0] <= groups[-1][0][0] * (1 + BUDGET_TOLERANCE):
            groups[-1].append(item)
        else:
            groups.append([item])
    raw = []
    for g in groups:
        x0 = float(np.mean([x for _, x, _, _ in g]))
        at = {s.label: (e, s, x) for _, x, e, s in g}  # measured at this budget
        for s in sizes:
            if s.label not in at and (est := s.frontier.loss_at(x0, total)).is_exact:
                at[s.label] = (est.lo, s, x0)
        label = min(at, key=lambda k: (at[k][0], _size_order(at[k][1])))
        loss, best, x = at[label]
        raw.append((x, loss, best, {k: v for k, (v, _, _) in at.items()}))
    env = monotone([r[1] for r in raw])
    return [Point(x, lo, e, s, o) for (x, lo, s, o), e in zip(raw, env)]


def _choices(sizes: Sequence[Size], points: list[Point]) -> list[BudgetChoice]:
    out = []
    for p in points:
        b = next(
            (
                b
                for b in p.size.frontier.budgets
                if abs(b.flops("head") / p.flops - 1) <= BUDGET_TOLERANCE
            ),
            None,
        )
        tokens = float(np.mean([tokens_of(r) for r in b.best])) if b is not None else math.nan
        budget = b.budget if b is not None else p.flops
        out.append(BudgetChoice(budget, dict(p.others), p.size, tokens))
    return out


def build_envelope(frontiers: Sequence[Frontier], label: str = "envelope") -> Envelope:
    """The envelope over ``frontiers`` (one per size of one family), with the warnings of
    DESIGN.md §8 per size (prefixed by the size) and where the best size sits at the edge of
    the size grid."""
    sizes = []
    for f in frontiers:
        ref = f.budgets[0].best[0]
        sizes.append(Size(f, size_key(ref.flat), size_label(ref.flat), run_params(ref)))
    sizes.sort(key=_size_order)
    points = {t: envelope_points(sizes, t) for t in TOTALS}
    env = Envelope(label, sizes, points, _choices(sizes, points["head"]))
    for s in sizes:
        env.size_warnings += [f"{s.label}: {w}" for w in s.frontier.warnings]
        if s.params is None:
            env.warnings.append(
                f"{s.label}: vocabulary unknown (no run.json params, model.vocab_size or "
                "perf/tokens): no parameter counts"
            )
    if len(sizes) > 1:
        for c in env.choices:
            edge = "smallest" if c.size is sizes[0] else "largest" if c.size is sizes[-1] else None
            if edge is None:
                continue
            what = "a smaller model" if edge == "smallest" else "a larger model"
            grid = "; ".join(s.label for s in sizes)  # a label holds a comma itself
            command = beyond_command(sizes, c, edge)
            env.warnings.append(
                f"budget {fmt_flops(c.budget)}: the best size ({c.size.label}) is the {edge} "
                f"of the size grid ({grid}): the compute-optimal size may lie beyond it; add "
                f"{what}" + (f" with: {command}" if command else "")
            )
    return env


def next_size(sizes: Sequence[Size], edge: str) -> dict[str, int] | None:
    """The settings of the size one step beyond the ``smallest`` or ``largest`` of ``sizes``:
    half or twice the blocks of a depth family (sizes differ in ``model.n_layer``), else half
    or twice the width with as many heads per width (a width family, or a depth family already
    at one block); None when there is none (one block of width 1)."""
    n, d, h = (sizes[0] if edge == "smallest" else sizes[-1]).key
    f = 0.5 if edge == "smallest" else 2
    if len({s.key[0] for s in sizes}) > 1 and n and int(n * f) >= 1:
        return {"model.n_layer": int(n * f)}
    if d and h and int(d * f) >= 1 and int(h * f) >= 1 and int(d * f) % int(h * f) == 0:
        return {"model.n_embd": int(d * f), "model.n_head": int(h * f)}
    return None


def beyond_command(sizes: Sequence[Size], choice: BudgetChoice, edge: str) -> str | None:
    """The command that adds the size beyond the grid's ``edge`` (:func:`next_size`) at the
    budget ``choice``: the edge size's best run there with the new size, at every learning rate
    that size tried there; None when there is no such size or run."""
    from mltrain.analysis.judging.budgets import rerun_command

    size = sizes[0] if edge == "smallest" else sizes[-1]
    new = next_size(sizes, edge)
    b = next(
        (b for b in size.frontier.budgets if abs(b.budget / choice.budget - 1) <= BUDGET_TOLERANCE),
        None,
    )
    if new is None or b is None or not b.best:
        return None
    lrs = ",".join(f"{lr:g}" for lr in b.by_lr)
    changes = {k: str(v) for k, v in new.items()} | {"optimizer.lr": lrs}
    return rerun_command(b.best[0], [b.best[0].seed], changes)


def family_of(f: Frontier) -> tuple:
    """What the sizes of one family share: a frontier's settings without the size keys (and
    without budget, learning rate, schedule and seed, which a frontier already varies)."""
    from mltrain.analysis.judging.frontier import FAMILY_FREE, TUNED_PREFIXES

    flat = f.budgets[0].best[0].flat
    drop = (*FAMILY_FREE, *SIZE_KEYS)
    return identity(
        {k: v for k, v in flat.items() if k not in drop and not k.startswith(TUNED_PREFIXES)}
    )


# --------------------------------------------------------------------------- judging methods
@dataclass
class EnvelopeResult:
    """A configuration against the envelope (``env``) and against its own size (``same``,
    None when its final architecture has no frontier in the family)."""

    config: Configuration
    envelope: Envelope
    env: MethodResult
    same: MethodResult | None
    params: Params | None  # its final model's

    def size_multiple(self, which: str = "total") -> tuple[float, BudgetChoice, bool] | None:
        """Its final model's parameters over the best size's at its budget (nearest budget,
        and whether it is that budget), None when a count is unknown."""
        if self.params is None or not self.env.healthy:
            return None
        choice, exact = self.envelope.choice_at(self.env.flops("head"))
        if choice.size.params is None:
            return None
        return self.params.get(which) / choice.size.params.get(which), choice, exact


def judge_envelope(env: Envelope, config: Configuration) -> EnvelopeResult:
    """r_env and the gap against ``env`` (per seed, mean/min/max over seeds, both FLOP totals),
    and r_same against the frontier of the configuration's own final architecture."""
    res = judge_config(config, env, r_env)
    size = env.size_of(config.runs[0].flat)
    same = judge_config(config, size.frontier, r_same) if size is not None else None
    return EnvelopeResult(config, env, res, same, run_params(config.runs[0]))


@dataclass
class EnvelopeJudgement:
    """The envelopes of every family with several sizes and every configuration against each."""

    envelopes: list[Envelope]
    results: list[EnvelopeResult]

    def fold(self, warnings: Sequence[str]) -> tuple[list[str], list[str]]:
        """``warnings`` (of :meth:`Judgement.all_warnings
        <mltrain.analysis.judging.frontier.Judgement.all_warnings>`) split into those to show
        and those to fold (:meth:`off_envelope`), each in its order."""
        own = {r.same.judge.label for r in self.results if r.same is not None}
        aside = [w for w in warnings if self.off_envelope(w, own)]
        return [w for w in warnings if w not in aside], aside

    def off_envelope(self, warning: str, own: set[str]) -> bool:
        """Whether ``warning`` (``"<frontier label>: budget <C>: ..."``) is about a point no
        judged number reads and tuning it is unlikely to change which size is best: a size more
        than :data:`CLOSE` nats above every envelope's best size at that budget, that no method
        ends at (``own``: the frontiers r_same reads), and a warning about its lr grid or seeds,
        not about runs left out (unfinished or diverged: its point may yet be anywhere)."""
        if any(x in warning for x in ("left out", "not a frontier point", "no learning rate")):
            return False
        for e in self.envelopes:
            for size in e.sizes:
                head = f"{size.frontier.label}: budget "
                if size.frontier.label in own or not warning.startswith(head):
                    continue
                at = warning[len(head) :].split(":", 1)[0]
                choice = next((c for c in e.choices if fmt_flops(c.budget) == at), None)
                if choice is None or size.label not in choice.losses:
                    return False
                best = choice.losses[choice.size.label]
                return choice.losses[size.label] > best + CLOSE
        return False

    def all_warnings(self) -> list[str]:
        out = [f"{e.label}: {w}" for e in self.envelopes for w in e.warnings]
        for r in self.results:
            out += [w for w in r.env.warnings if w not in out]
            if r.same is None:
                out.append(
                    f"`{r.config.label}`: no frontier of its own size "
                    f"({size_label(r.config.runs[0].flat)}) in `{r.envelope.label}`: r_same n/a"
                )
        return out


def judge_sizes(frontiers: Sequence[Frontier], configs: Sequence[Configuration]):
    """Envelopes of the frontier families with at least two sizes, every configuration judged
    against each; None when no family has two sizes."""
    fams: dict[tuple, list[Frontier]] = {}
    for f in frontiers:
        fams.setdefault(family_of(f), []).append(f)
    envs = []
    for group in fams.values():
        if len({size_key(f.budgets[0].best[0].flat) for f in group}) < 2:
            continue
        opt = group[0].label.split(",")[1].split()[0] if "," in group[0].label else ""
        label = f"envelope, {opt} ({len(group)} sizes)" if opt else f"envelope ({len(group)} sizes)"
        envs.append(build_envelope(group, label))
    if not envs:
        return None
    return EnvelopeJudgement(envs, [judge_envelope(e, c) for e in envs for c in configs])
