"""Better coarse corrections for the V-cycle: first-order coherence (τ-correction),
line-searched δ and outer momentum, as operations of the plan and one trainer extension.

Settings of ``coarsening.corrections`` (all off by default; the paper's recipe is unchanged):

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
    when the phase closes (:class:`CorrectedProlong`).

    - ``exact``: both gradients at the current x on one fresh batch ξ (drawn from a sampler of
      the training tokens of its own, so the training batches are unchanged): extra FLOPs one
      training pass of the parent and one of H (:meth:`Tau.extra_flops`).
    - ``cheap``: ξ and g_h are the batch and the (all-reduced, unclipped, τ-corrected) gradient
      of the parent level's most recent step, so only the coarse pass is extra. With
      ``fine_step=before`` that is the fine step of the same iteration, taken at the
      parameters just before it (one step stale; for a second sibling phase the restriction
      point has also moved by the first phase's prolongation). With ``fine_step=after`` it is the
      previous iteration's fine step, so the first V-cycle needs one before it:
      ``coarsening.vcycle.start`` >= 1 (refused otherwise). Nested levels reuse their parent's last
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
    At the close of a phase (:class:`CorrectedProlong`) the parent objective is evaluated along the
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
    τ-corrected. Every forward is counted (:meth:`CorrectedProlong.extra_flops`); the chosen δ goes on
    the next record as ``coarsening/delta/<level>``, and the loss it gained on that batch
    (nats/token, >= 0) as ``coarsening/delta_gain/<level>``.

``momentum`` (β in [0, 1))
    Outer momentum on corrections (Nesterov-style; stacking as accelerated gradient descent,
    Agarwal et al. 2024, arXiv 2403.04978): with Δ = θ_after − θ_before of the phase,
    u ← βu + Δ and θ ← θ_before + δ·(Δ + βu), one u per level, kept across V-cycles and in
    checkpoints. β = 0 is Eq. 4 exactly (bit for bit).

The extra FLOPs of a phase's :class:`Tau` and :class:`CorrectedProlong` are booked to that phase's level
(``perf/flops_level/<level>``) and counted in ``perf/flops`` and the plan's total alike.
Everything is all-reduced or computed from identical parameters, so under torchrun every rank
takes the same corrections; the extension's state (v, the reused gradient, u, its samplers)
is part of every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mltrain.config import CoarseningConfig
from mltrain.data.sampler import BatchSampler
from mltrain.errors import ConfigError
from mltrain.levels import Level
from mltrain.model.flops import FlopCount
from mltrain.plan.ops import Op, Operation, handles
from mltrain.schemes import vcycle
from mltrain.schemes.linesearch import line_search, search_grid
from mltrain.schemes.vcycle import CYCLE_DECORATORS, Defer, Prolong, Restrict
from mltrain.train.state import EXTENSIONS, Extension, RunState

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
class CorrectedProlong(Operation):
    """Prolongation with the corrections: close the innermost phase on ``level`` (as Prolong,
    or Defer when ``summed``), with outer momentum ``momentum`` (β) and δ = ``delta`` or
    line-searched over ``grid`` (``search``: ``grid`` or ``parabola``) on ``parent``'s
    objective."""

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


def uses_corrections(c: CoarseningConfig) -> bool:
    """Whether any mechanism of this module is switched on."""
    k = c.corrections
    return k.tau != "none" or k.line_search != "none" or float(k.momentum) > 0


def check_ranks(c: CoarseningConfig, world: int) -> None:
    """Refuse a line search whose held-aside batch has fewer rows (``line_search_batch``
    sequences) than there are processes: a rank without rows would measure a NaN loss, every
    δ would compare as NaN and δ = 0 would be chosen silently.

    Raises:
        ConfigError: ``line_search_batch`` < ``world`` with a line search on.
    """
    rows = c.corrections.line_search_batch
    if c.corrections.line_search != "none" and rows is not None and int(rows) < world:
        raise ConfigError(
            f"coarsening.corrections.line_search_batch={rows} is smaller than the {world} processes: each "
            f"rank needs at least one sequence; use coarsening.corrections.line_search_batch>={world} or null"
        )


@CYCLE_DECORATORS.register("corrections")
def decorate_cycle(
    cycle: tuple[Op, ...], c: CoarseningConfig, levels: list[Level], seq_len: int
) -> tuple:
    """The V-cycle with the corrections ``c`` asks for: :class:`Tau` right after each
    ``Restrict``, and each ``Prolong``/``Defer`` replaced by a :class:`CorrectedProlong`
    (``seq_len``: T, for the held-aside batch's positions). Unchanged when every mechanism is
    off.

    Raises:
        ConfigError: ``tau=cheap`` with ``fine_step=after`` and ``start=0`` (no fine step
            before the first V-cycle), or a τ-correction on a patch level.
    """
    if not uses_corrections(c) or not cycle:
        return cycle
    k, v = c.corrections, c.vcycle
    if k.tau == "cheap" and v.fine_step == "after" and int(v.start) == 0:
        raise ConfigError(
            "coarsening.corrections.tau=cheap with coarsening.vcycle.fine_step=after reuses the previous "
            "iteration's fine step: set coarsening.vcycle.start >= 1, or use coarsening.corrections.tau=exact"
        )
    by_name = {lv.name: lv for lv in levels}
    if k.tau != "none":
        bad = [lv.name for lv in levels if lv.patch != 1]
        if bad:
            raise ConfigError(
                f"coarsening.corrections.tau={k.tau} needs token-level coarse levels, but {bad[0]} is a "
                "patch level: use coarsening.corrections.tau=none"
            )
    grid = search_grid(float(k.line_search_max)) if k.line_search != "none" else ()
    rows = k.line_search_batch
    positions = None if rows is None or k.line_search == "none" else int(rows) * int(seq_len)
    out: list[Op] = []
    for op in cycle:
        if isinstance(op, Prolong | Defer):
            out.append(
                CorrectedProlong(
                    op.level,
                    by_name[op.level].parent,
                    isinstance(op, Defer),
                    float(v.delta),
                    float(k.momentum),
                    k.line_search,
                    grid,
                    positions,
                )
            )
        else:
            out.append(op)
        if isinstance(op, Restrict) and k.tau != "none":
            out.append(Tau(op.level, by_name[op.level].parent, k.tau))
    return tuple(out)


def _dev(d: dict, device) -> dict:
    return {k: v.to(device) for k, v in d.items()}


def _cpu(d: dict) -> dict:
    return {k: v.detach().cpu() for k, v in d.items()}


class Corrections(Extension):
    """The per-run state of the corrections (a run extension, ``name = "corrections"``).

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
    # before the default hooks: its on_gradients changes the gradients that others read
    priority = 100

    def __init__(self, run: RunState) -> None:
        seed = int(run.cfg.train.seed)
        seq_len = int(run.cfg.model.seq_len)
        self.tau_sampler = BatchSampler(run.data.train, seq_len, seed=seed + _TAU_SEED)
        self.search_sampler = BatchSampler(run.data.train, seq_len, seed=seed + _SEARCH_SEED)
        self.generator = torch.Generator().manual_seed(seed + _RNG_SEED)
        self.device = run.device
        self.v: dict[str, dict[str, torch.Tensor]] = {}
        self.last: dict[str, dict] = {}
        self.u: dict[str, dict[str, torch.Tensor]] = {}
        self.capture: dict[str, list[str]] = {}  # parent -> parameters its children train
        if run.cfg.coarsening.corrections.tau == "cheap":
            for lv in run.plan.levels[1:]:
                names = self.capture.setdefault(lv.parent, [])
                names += [n for n in run.params(lv.name) if n not in names]

    # ---------------------------------------------------------------- gradients
    def on_gradients(self, run: RunState, level: Level) -> None:
        """Subtract the open phase's v from ``level``'s gradient (times the fp16 loss scale);
        with ``tau=cheap`` keep the corrected gradient and batch of a parent level's step."""
        scale = run.runner.loss_scale()
        params = run.params(level.name)
        v = self.v.get(level.name)
        if v:
            for n, p in params.items():
                if p.grad is not None:
                    p.grad.sub_(v[n] if scale == 1.0 else v[n] * scale)
        names = self.capture.get(level.name)
        if names:
            grads = {}
            for n in names:
                g = run.all_params[n].grad
                g = torch.zeros_like(run.all_params[n]) if g is None else g.detach().clone()
                grads[n] = g if scale == 1.0 else g / scale
            self.last[level.name] = {"batch": run.last_batch, "grads": grads}

    def gradient(
        self, run: RunState, level: Level, batch: torch.Tensor, names: list[str]
    ) -> dict[str, torch.Tensor]:
        """∇f_level − v_level (v_level when ``level`` has an open τ-corrected phase) with
        respect to the parameters ``names``, at the current parameters on this rank's windows
        ``batch`` ``(B_rank, T+1)``, averaged over micro-batches and ranks (as a training
        step's gradient: the mean loss in nats/token). ``.grad`` is not touched."""
        path = level.sample_path(self.generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        params = [run.all_params[n] for n in names]
        out = dict(zip(names, run.runner.gradient(level, path, batch, params, seed)))
        v = self.v.get(level.name)
        if v:
            for n in names:
                out[n].sub_(v[n])
        return out

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


@EXTENSIONS.register("corrections")
def _factory(run: RunState) -> Corrections | None:
    c = run.cfg.coarsening
    on = c.scheme == "vcycle" and uses_corrections(c) and len(run.plan.levels) > 1
    return Corrections(run) if on else None


def of(run: RunState) -> Corrections:
    """The run's :class:`Corrections` extension."""
    return run.extension("corrections")


# --------------------------------------------------------------------------- handlers
@handles(Tau)
def _tau(run: RunState, op: Tau) -> None:
    """v = ∇f_level(x; ξ) − (∇f_parent(x; ξ) − v_parent), restricted to the parameters the
    level trains (exact: a fresh batch ξ; cheap: the parent's last step's batch and gradient)."""
    ext = of(run)
    level, parent = run.levels[op.level], run.levels[op.parent]
    names = list(run.params(op.level))
    if op.form == "exact":
        batch = run.runner.shard(ext.tau_sampler.next(run.runner.global_batch))
        g_parent = ext.gradient(run, parent, batch, names)
    else:
        last = ext.last.get(op.parent)
        if last is None:
            raise RuntimeError(f"tau=cheap: no step of {op.parent} before the phase on {op.level}")
        batch, g_parent = last["batch"], last["grads"]
    ext.v.pop(op.level, None)  # the level's own gradient, uncorrected
    g_level = ext.gradient(run, level, batch, names)
    ext.v[op.level] = {n: g_level[n] - g_parent[n] for n in names}


@handles(CorrectedProlong)
@torch.no_grad()
def _corrected_prolong(run: RunState, op: CorrectedProlong) -> None:
    """Close the innermost phase: drop its v, update the outer momentum, choose δ (fixed or
    line-searched) and apply θ_before + δ·(Δ + βu) (or defer it when ``summed``)."""
    ext = of(run)
    state = vcycle.state_of(run)
    before = state.close(op.level)
    name = op.level
    ext.v.pop(name, None)
    params = run.params(name)
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
        delta = line_search(run, ext, op, params, before, after, u, point)
    if op.summed:
        corr = {n: (after[n] - b) * delta for n, b in before.items()}
        if beta > 0:
            for n in corr:
                corr[n].add_(u[n], alpha=delta * beta)
        state.deferred.append(corr)
        for n, b in before.items():
            params[n].copy_(b)
    else:
        for n, x in point(delta).items():
            params[n].copy_(x)
