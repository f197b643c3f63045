"""Better coarse corrections for the V-cycle (issue 15): first-order coherence (τ-correction),
line-searched δ and outer momentum, as operations of the plan and one trainer extension.

Settings of the ``coarsening`` group (all off by default; the paper's recipe is unchanged):

``tau`` (``none`` | ``exact`` | ``cheap``)
    The τ-correction of MG/OPT (Nash 2000, "A multigrid approach to discretized optimization
    problems", Optim. Methods Softw. 14; the first-order coherence of RMTR, Gratton, Sartenaer,
    Toint 2008, SIAM J. Optim. 19): right after ``Restrict(H)`` a :class:`Tau` operation sets,
    for the parameters y that level H trains (restriction is injection: R x are the same
    tensors),

        v = ∇f_H(R x; ξ) − R g_h(x; ξ)

    where g_h is the parent level's gradient (the fine gradient for a child of the fine level);
    every step of the phase then follows ∇f_H(y; ξ_j) − v (:meth:`Corrections.on_gradients`,
    after the all-reduce, before clipping), i.e. minimises f_H(y) − ⟨v, y⟩, whose gradient at
    R x on ξ is the restricted parent gradient: the first coarse step moves along R g_h and the
    correction is a descent direction of the parent objective to first order. v is dropped
    when the phase closes (:class:`Transfer`).

    - ``exact``: both gradients at the current x on one fresh batch ξ (drawn from a sampler of
      the training tokens of its own, so the training batches are unchanged): extra FLOPs one
      training pass of the parent and one of H (:meth:`Tau.extra_flops`).
    - ``cheap``: ξ and g_h are the batch and the (all-reduced, unclipped, τ-corrected) gradient
      of the parent level's most recent step, so only the coarse pass is extra. With
      ``fine_step=before`` that is the fine step of the same iteration, taken at the
      parameters just before it (one step stale; for a second sibling phase the restriction
      point has also moved by the first phase's transfer). With ``fine_step=after`` it is the
      previous iteration's fine step, so the first V-cycle needs one before it:
      ``coarsening.start`` >= 1 (refused otherwise). Nested levels reuse their parent's last
      coarse step.

    Shared parameters (token and position embeddings, the tied head, the final norm) are in
    both gradients and in v like any other parameter the level trains. With
    ``train_shared=false`` a coarse level does not train them: v covers its blocks only and
    the shared tensors keep receiving no update. Nested phases (``recursive``, nested
    ``custom`` levels) follow MG/OPT's recursion: the child's v is taken against the parent's
    *corrected* gradient ∇f_parent − v_parent, so the child minimises its model of the
    parent's corrected objective. Gradients are computed in training mode (dropout drawing
    from its own seeded RNG, torch's global RNG untouched), without loss scaling.

``line_search`` (``none`` | ``grid`` | ``parabola``), ``line_search_max``
    At the close of a phase (:class:`Transfer`) the parent objective is evaluated along the
    phase's correction d at δ ∈ {0, ¼, ½, 1, 2, 4, …} up to ``line_search_max`` (which is
    included), on one held-aside batch of training windows (``line_search_batch`` sequences,
    default one global batch; drawn from a third sampler of the training tokens, never
    validation data; a fresh batch per phase, its sequences shared out among the ranks; its
    tokens are not counted in ``perf/tokens``, which counts tokens trained on), with the
    model in evaluation mode. ``grid`` takes the δ of lowest loss; ``parabola`` also
    evaluates the vertex of the parabola through the best grid point and its two neighbours
    (the midpoint towards its neighbour when the best is at an end of the grid) and takes the
    lowest of all. δ = 0 unless some δ > 0 is strictly lower than δ = 0. The parent
    objective is the parent's loss, less ⟨v_parent, δ·d⟩ when the parent phase is itself
    τ-corrected. Every forward is counted (:meth:`Transfer.extra_flops`); the chosen δ goes on
    the next record as ``coarsening/delta/<level>``, and the loss it gained on that batch
    (nats/token, >= 0) as ``coarsening/delta_gain/<level>``.

``momentum`` (β in [0, 1))
    Outer momentum on corrections (Nesterov-style; stacking as accelerated gradient descent,
    Agarwal et al. 2024, arXiv 2403.04978): with Δ = θ_after − θ_before of the phase,
    u ← βu + Δ and θ ← θ_before + δ·(Δ + βu), one u per level, kept across V-cycles and in
    checkpoints. β = 0 is Eq. 4 exactly (bit for bit).

The extra FLOPs of a phase's :class:`Tau` and :class:`Transfer` are booked to that phase's level
(``perf/flops_level/<level>``) and counted in ``perf/flops`` and the plan's total alike.
Everything is all-reduced or computed from identical parameters, so under torchrun every rank
takes the same corrections; the extension's state (v, the reused gradient, u, its samplers)
is part of every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mltrain.config import CoarseningConfig
from mltrain.data.sampler import BatchSampler
from mltrain.errors import ConfigError
from mltrain.levels.base import Level
from mltrain.model.flops import FlopCount
from mltrain.plan.operations import EXTENSIONS, handles
from mltrain.plan.vcycle import Defer, Op, Operation, Prolong, Restrict
from mltrain.train import distributed as D

if TYPE_CHECKING:
    from mltrain.train.trainer import Trainer

# seed offsets of the extension's samplers and generator (the trainer's use +1 and +2)
_TAU_SEED, _SEARCH_SEED, _RNG_SEED = 1501, 1502, 1503


def _forward(plan, level: str) -> FlopCount:
    """FLOPs of one forward pass of ``level`` on one step's positions: a training step is
    3 forward passes (DESIGN.md section 3)."""
    f = plan.step_flops[level]
    return FlopCount(f.total // 3, f.nonembed // 3)


@dataclass(frozen=True)
class Tau(Operation):
    """Compute the τ-correction v of the phase just opened on ``level`` against ``parent``'s
    (corrected) gradient; ``form`` is ``exact`` or ``cheap`` (module docstring)."""

    level: str
    parent: str
    form: str

    def extra_flops(self, plan) -> FlopCount:
        """One training pass of ``level`` (both forms) and one of ``parent`` (exact form)."""
        f = plan.step_flops[self.level]
        return f + plan.step_flops[self.parent] if self.form == "exact" else f


@dataclass(frozen=True)
class Transfer(Operation):
    """Close the innermost phase on ``level`` (as Prolong, or Defer when ``summed``), with
    outer momentum ``momentum`` (β) and δ = ``delta`` or line-searched over ``grid``
    (``search``: ``grid`` or ``parabola``) on ``parent``'s objective."""

    level: str
    parent: str
    summed: bool = False
    delta: float = 0.25
    momentum: float = 0.0
    search: str = "none"
    grid: tuple[float, ...] = ()
    positions: int | None = None  # held-aside batch × T; None: one step's positions

    @property
    def evaluations(self) -> int:
        """Forward passes of the line search (0 without one)."""
        if self.search == "none":
            return 0
        return len(self.grid) + (1 if self.search == "parabola" else 0)

    def extra_flops(self, plan) -> FlopCount:
        """The line search's forwards of ``parent`` on the held-aside batch."""
        f = _forward(plan, self.parent)
        if self.positions is not None:  # per position: f / one step's positions (exact)
            n, tps = self.positions, plan.tokens_per_step
            f = FlopCount(f.total * n // tps, f.nonembed * n // tps)
        return f * self.evaluations


def search_grid(maximum: float) -> tuple[float, ...]:
    """The δ values a line search evaluates: 0, ¼, ½, 1, then 2, 4, … below ``maximum``, and
    ``maximum`` itself (only values <= ``maximum``), ascending. E.g. 2 -> (0, ¼, ½, 1, 2)."""
    out = [d for d in (0.0, 0.25, 0.5, 1.0) if d <= maximum]
    d = 2.0
    while d < maximum:
        out.append(d)
        d *= 2
    if maximum not in out:
        out.append(float(maximum))
    return tuple(out)


def search_delta(
    objective: Callable[[float], float], grid: Sequence[float], mode: str
) -> tuple[float, dict[float, float]]:
    """The δ of a line search and every value it evaluated (``{δ: objective(δ)}``).

    ``objective`` is called once per grid value (ascending, starting with 0), and once more
    with ``mode="parabola"``: at the vertex of the parabola through the best grid point and
    its two neighbours (convex: the best is strictly below its left neighbour and not above
    its right one), or, when the best is at an end of the grid, at the midpoint between it and
    its neighbour. The result is the lowest value's δ (the smallest δ on ties); 0 unless that
    value is strictly below objective(0).
    """
    values: list[tuple[float, float]] = [(d, float(objective(d))) for d in grid]
    if mode == "parabola" and len(values) >= 2:
        losses = [v for _, v in values]
        i = min(range(len(values)), key=lambda k: (losses[k], k))
        if 0 < i < len(values) - 1:
            (x0, y0), (x1, y1), (x2, y2) = values[i - 1], values[i], values[i + 1]
            s1, s2 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
            a = (s2 - s1) / (x2 - x0)
            cand = (x0 + x1) / 2 - s1 / (2 * a) if a > 0 else x1
        else:
            j = 1 if i == 0 else i - 1
            cand = (values[i][0] + values[j][0]) / 2
        values.append((cand, float(objective(cand))))
    best_d, best = values[0]
    for d, v in values[1:]:
        if v < best or (v == best and d < best_d):
            best_d, best = d, v
    start = values[0][1]
    chosen = best_d if best < start else 0.0
    return chosen, dict(values)


def uses_corrections(c: CoarseningConfig) -> bool:
    """Whether any mechanism of this module is switched on."""
    return c.tau != "none" or c.line_search != "none" or float(c.momentum) > 0


def check_ranks(c: CoarseningConfig, world: int) -> None:
    """Refuse a line search whose held-aside batch has fewer rows (``line_search_batch``
    sequences) than there are processes: a rank without rows would measure a NaN loss, every
    δ would compare as NaN and δ = 0 would be chosen silently.

    Raises:
        ConfigError: ``line_search_batch`` < ``world`` with a line search on.
    """
    rows = c.line_search_batch
    if c.line_search != "none" and rows is not None and int(rows) < world:
        raise ConfigError(
            f"coarsening.line_search_batch={rows} is smaller than the {world} processes: each "
            f"rank needs at least one sequence; use coarsening.line_search_batch>={world} or null"
        )


def decorate_cycle(
    cycle: tuple[Op, ...], c: CoarseningConfig, levels: list[Level], seq_len: int
) -> tuple:
    """The V-cycle with the corrections ``c`` asks for: :class:`Tau` right after each
    ``Restrict``, and each ``Prolong``/``Defer`` replaced by a :class:`Transfer`
    (``seq_len``: T, for the held-aside batch's positions). Unchanged when every mechanism is
    off.

    Raises:
        ConfigError: ``tau=cheap`` with ``fine_step=after`` and ``start=0`` (no fine step
            before the first V-cycle), or a τ-correction on a patch level.
    """
    if not uses_corrections(c) or not cycle:
        return cycle
    if c.tau == "cheap" and c.fine_step == "after" and int(c.start) == 0:
        raise ConfigError(
            "coarsening.tau=cheap with coarsening.fine_step=after reuses the previous "
            "iteration's fine step: set coarsening.start >= 1, or use coarsening.tau=exact"
        )
    by_name = {lv.name: lv for lv in levels}
    if c.tau != "none":
        bad = [lv.name for lv in levels if lv.patch != 1]
        if bad:
            raise ConfigError(
                f"coarsening.tau={c.tau} needs token-level coarse levels, but {bad[0]} is a "
                "patch level: use coarsening.tau=none"
            )
    grid = search_grid(float(c.line_search_max)) if c.line_search != "none" else ()
    rows = c.line_search_batch
    positions = None if rows is None or c.line_search == "none" else int(rows) * int(seq_len)
    out: list[Op] = []
    for op in cycle:
        if isinstance(op, Prolong | Defer):
            out.append(
                Transfer(
                    op.level,
                    by_name[op.level].parent,
                    isinstance(op, Defer),
                    float(c.delta),
                    float(c.momentum),
                    c.line_search,
                    grid,
                    positions,
                )
            )
        else:
            out.append(op)
        if isinstance(op, Restrict) and c.tau != "none":
            out.append(Tau(op.level, by_name[op.level].parent, c.tau))
    return tuple(out)


def _dev(d: dict, device) -> dict:
    return {k: v.to(device) for k, v in d.items()}


def _cpu(d: dict) -> dict:
    return {k: v.detach().cpu() for k, v in d.items()}


class Corrections:
    """The per-run state of the corrections (a trainer extension, ``name = "corrections"``).

    Attributes:
        v: level -> {parameter name: τ-correction tensor (the parameter's shape)} of the open
            phases.
        last: parent level -> {"batch": its last step's windows on this rank ``(B_rank, T+1)``
            int64, "grads": {name: that step's corrected gradient}} (``tau=cheap``).
        u: level -> {parameter name: outer momentum buffer} (``momentum`` > 0).
        tau_sampler, search_sampler: training windows for the exact τ and the line search.
        generator: seeds of the τ passes' dropout RNG and of random paths.
    """

    name = "corrections"

    def __init__(self, t: Trainer) -> None:
        c, seed = t.cfg.coarsening, int(t.cfg.train.seed)
        self.tau_sampler = BatchSampler(t.data.train, t.seq_len, seed=seed + _TAU_SEED)
        self.search_sampler = BatchSampler(t.data.train, t.seq_len, seed=seed + _SEARCH_SEED)
        self.generator = torch.Generator().manual_seed(seed + _RNG_SEED)
        self.device = t.ctx.device
        self.v: dict[str, dict[str, torch.Tensor]] = {}
        self.last: dict[str, dict] = {}
        self.u: dict[str, dict[str, torch.Tensor]] = {}
        self.capture: dict[str, list[str]] = {}  # parent -> parameters its children train
        if c.tau == "cheap":
            for lv in t.plan.levels[1:]:
                names = self.capture.setdefault(lv.parent, [])
                names += [n for n in t.level_params[lv.name] if n not in names]

    # ---------------------------------------------------------------- gradients
    def on_gradients(self, t: Trainer, level: Level) -> None:
        """Subtract the open phase's v from ``level``'s gradient (times the fp16 loss scale);
        with ``tau=cheap`` keep the corrected gradient and batch of a parent level's step."""
        scale = float(t.scaler.get_scale()) if t.scaler else 1.0
        params = t.level_params[level.name]
        v = self.v.get(level.name)
        if v:
            for n, p in params.items():
                if p.grad is not None:
                    p.grad.sub_(v[n] if scale == 1.0 else v[n] * scale)
        names = self.capture.get(level.name)
        if names:
            grads = {}
            for n in names:
                g = t.all_params[n].grad
                g = torch.zeros_like(t.all_params[n]) if g is None else g.detach().clone()
                grads[n] = g if scale == 1.0 else g / scale
            self.last[level.name] = {"batch": t.last_batch, "grads": grads}

    def gradient(
        self, t: Trainer, level: Level, batch: torch.Tensor, names: list[str]
    ) -> dict[str, torch.Tensor]:
        """∇f_level − v_level (v_level when ``level`` has an open τ-corrected phase) with
        respect to the parameters ``names``, at the current parameters on this rank's windows
        ``batch`` ``(B_rank, T+1)``, averaged over micro-batches and ranks (as a training
        step's gradient: the mean loss in nats/token). ``.grad`` is not touched."""
        params = [t.all_params[n] for n in names]
        grads = [torch.zeros_like(p) for p in params]
        path = level.sample_path(self.generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        cuda = t.ctx.device.type == "cuda"
        with torch.random.fork_rng(devices=[t.ctx.device] if cuda else []):
            torch.manual_seed(seed)
            for micro in batch.to(t.ctx.device).split(t.micro):
                with t.autocast():
                    _, loss = t.model(micro[:, :-1], micro[:, 1:], path=path)
                gs = torch.autograd.grad(loss.float() / t.accum, params, allow_unused=True)
                for acc, g in zip(grads, gs):
                    if g is not None:
                        acc.add_(g.to(acc.dtype))
        if t.ctx.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            D.all_reduce_sum(flat, t.ctx.world).div_(t.ctx.world)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        out = dict(zip(names, grads))
        v = self.v.get(level.name)
        if v:
            for n in names:
                out[n].sub_(v[n])
        return out

    # ---------------------------------------------------------------- line search
    @torch.no_grad()
    def held_loss(self, t: Trainer, level: Level, batch: torch.Tensor) -> float:
        """Mean cross-entropy (nats/token) of ``level``'s path on the held-aside windows
        (this rank's ``batch``), over every rank, in evaluation mode."""
        model = t.model
        was_training = model.training
        model.eval()
        total = torch.zeros(2, device=t.ctx.device, dtype=torch.float64)
        for micro in batch.to(t.ctx.device).split(t.micro):
            with t.autocast():
                _, loss = model(micro[:, :-1], micro[:, 1:], path=level.path)
            total += torch.stack(
                [loss.double() * len(micro), torch.tensor(float(len(micro)), device=total.device)]
            )
        model.train(was_training)
        total = D.all_reduce_sum(total, t.ctx.world)
        return float(total[0] / total[1])

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "v": {k: _cpu(d) for k, d in self.v.items()},
            "last": {
                k: {"batch": d["batch"].cpu(), "grads": _cpu(d["grads"])}
                for k, d in self.last.items()
            },
            "u": {k: _cpu(d) for k, d in self.u.items()},
            "tau_sampler": self.tau_sampler.state_dict(),
            "search_sampler": self.search_sampler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.device
        self.v = {k: _dev(d, device) for k, d in state["v"].items()}
        self.last = {
            k: {"batch": d["batch"], "grads": _dev(d["grads"], device)}
            for k, d in state["last"].items()
        }
        self.u = {k: _dev(d, device) for k, d in state["u"].items()}
        self.tau_sampler.load_state_dict(state["tau_sampler"])
        self.search_sampler.load_state_dict(state["search_sampler"])
        self.generator.set_state(state["generator"])


def of(t: Trainer) -> Corrections:
    """The run's :class:`Corrections` extension."""
    return next(e for e in t.extensions if isinstance(e, Corrections))


def _factory(t: Trainer) -> Corrections | None:
    c = t.cfg.coarsening
    return Corrections(t) if uses_corrections(c) and len(t.plan.levels) > 1 else None


EXTENSIONS.append(_factory)


# --------------------------------------------------------------------------- handlers
@handles(Tau)
def _tau(t: Trainer, op: Tau) -> None:
    """v = ∇f_level(x; ξ) − (∇f_parent(x; ξ) − v_parent), restricted to the parameters the
    level trains (exact: a fresh batch ξ; cheap: the parent's last step's batch and gradient)."""
    ext = of(t)
    level, parent = t.levels[op.level], t.levels[op.parent]
    names = list(t.level_params[op.level])
    if op.form == "exact":
        per_rank = t.micro * t.accum
        batch = ext.tau_sampler.next(t.global_batch)
        batch = batch[t.ctx.rank * per_rank : (t.ctx.rank + 1) * per_rank]
        g_parent = ext.gradient(t, parent, batch, names)
    else:
        last = ext.last.get(op.parent)
        if last is None:
            raise RuntimeError(f"tau=cheap: no step of {op.parent} before the phase on {op.level}")
        batch, g_parent = last["batch"], last["grads"]
    ext.v.pop(op.level, None)  # the level's own gradient, uncorrected
    g_level = ext.gradient(t, level, batch, names)
    ext.v[op.level] = {n: g_level[n] - g_parent[n] for n in names}


@handles(Transfer)
@torch.no_grad()
def _transfer(t: Trainer, op: Transfer) -> None:
    """Close the innermost phase: drop its v, update the outer momentum, choose δ (fixed or
    line-searched) and apply θ_before + δ·(Δ + βu) (or defer it when ``summed``)."""
    ext = of(t)
    name, before = t.phases.pop()
    assert name == op.level, f"V-cycle out of order: closing {op.level}, open {name}"
    ext.v.pop(name, None)
    params = t.level_params[name]
    after = {n: params[n].detach().clone() for n in before}
    beta = float(op.momentum)
    u: dict[str, torch.Tensor] = {}
    if beta > 0:
        old = ext.u.get(name)
        u = {
            n: after[n] - b if old is None else old[n] * beta + (after[n] - b)
            for n, b in before.items()
        }
        ext.u[name] = u

    def point(delta: float) -> dict[str, torch.Tensor]:
        out = {n: torch.lerp(b, after[n], delta) for n, b in before.items()}
        if beta > 0:
            for n in out:
                out[n].add_(u[n], alpha=delta * beta)
        return out

    delta = float(op.delta)
    if op.search != "none":
        delta = _line_search(t, ext, op, params, before, after, u, point)
    if op.summed:
        corr = {n: (after[n] - b) * delta for n, b in before.items()}
        if beta > 0:
            for n in corr:
                corr[n].add_(u[n], alpha=delta * beta)
        t.deferred.append(corr)
        for n, b in before.items():
            params[n].copy_(b)
    else:
        for n, x in point(delta).items():
            params[n].copy_(x)


def _line_search(t, ext, op: Transfer, params, before, after, u, point) -> float:
    """δ minimising the parent objective along the phase's correction on a held-aside batch
    (:func:`search_delta`); notes δ and the loss gained on the next record."""
    parent = t.levels[op.parent]
    rows = t.global_batch if op.positions is None else op.positions // t.seq_len
    batch = ext.search_sampler.next(rows)[t.ctx.rank :: t.ctx.world]
    v_parent = ext.v.get(op.parent) or {}
    slope = 0.0  # <v_parent, d>, d = Δ + βu: the linear term of the parent's corrected objective
    for n, b in before.items():
        if n in v_parent:
            d = after[n].double() - b.double()
            if u:
                d = d + float(op.momentum) * u[n].double()
            slope += float((v_parent[n].double() * d).sum())

    def objective(delta: float) -> float:
        for n, x in point(delta).items():
            params[n].copy_(x)
        return ext.held_loss(t, parent, batch) - delta * slope

    delta, values = search_delta(objective, op.grid, op.search)
    t.note(f"coarsening/delta/{op.level}", delta)
    t.note(f"coarsening/delta_gain/{op.level}", values[0.0] - values[delta])
    for n in before:  # the caller applies the chosen point
        params[n].copy_(after[n])
    return delta
