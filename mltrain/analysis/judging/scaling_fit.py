"""An optional parametric fit beside the measured envelope, clearly labelled as such: never used
to compute r (the envelope, :mod:`mltrain.analysis.judging.envelope`, is measured; this is a model).

    L(N, D) = E + A / N^α + B / D^β        (Hoffmann et al. 2022, approach 3)

N: parameters (count; total or non-embedding, as chosen), D: training tokens, L: final
validation loss (nats/token). As in the paper, the fit minimises the Huber loss (δ = 1e-3) of
``log L̂ − log L`` with L̂ = exp(LSE(a − α log N, b − β log D, e)) (A = e^a, B = e^b, E = e^e),
by L-BFGS (scipy.optimize.minimize) from the best points of a grid of initial values; intervals
come from a bootstrap over the points (resampled with replacement).

Compute-optimal allocation for C = 6·N·D FLOPs (the paper's approximation, not this project's
FLOP convention): N*(C) = G (C/6)^(β/(α+β)), D*(C) = G⁻¹ (C/6)^(α/(α+β)),
G = (αA / (βB))^(1/(α+β)).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mltrain.analysis.judging.sizes import tokens_of

HUBER_DELTA = 1e-3
# the paper's grid of initial values (coarser in a, b)
GRID = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
STARTS = 8  # L-BFGS runs from the best grid points
# box for (a, b, e, α, β): keeps A, B, E finite when a few points leave a direction free
BOUNDS = ((-20.0, 60.0), (-20.0, 60.0), (-10.0, 5.0), (0.0, 4.0), (0.0, 4.0))


@dataclass(frozen=True)
class Fit:
    """Fitted L(N, D) = E + A/N^α + B/D^β (nats/token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        """L(N, D) (nats/token) for parameters ``n`` and tokens ``d`` (arrays broadcast)."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def optimal(self, c: float) -> tuple[float, float]:
        """(N*(C), D*(C)) for C = 6·N·D FLOPs (module docstring)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * (c / 6) ** (b / (a + b)), (c / 6) ** (a / (a + b)) / g


def _huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _objective(theta: np.ndarray, logn, logd, logl) -> float:
    a, b, e, alpha, beta = theta
    pred = np.logaddexp(np.logaddexp(a - alpha * logn, b - beta * logd), e)
    return float(np.sum(_huber(pred - logl)))


def fit(n: Sequence[float], d: Sequence[float], loss: Sequence[float]) -> Fit:
    """The fit of L(N, D) to points (``n`` parameters, ``d`` tokens, ``loss`` nats/token).

    Raises:
        ValueError: fewer than 5 points (five parameters), or a non-positive value.
    """
    from scipy.optimize import minimize

    n, d, l_ = (np.asarray(x, dtype=float) for x in (n, d, loss))
    if len(n) < 5:
        raise ValueError(f"the fit has 5 parameters and needs at least 5 points, got {len(n)}")
    if (n <= 0).any() or (d <= 0).any() or (l_ <= 0).any():
        raise ValueError("parameters, tokens and losses must all be > 0")
    logn, logd, logl = np.log(n), np.log(d), np.log(l_)
    grid = np.asarray(list(itertools.product(*GRID.values())), dtype=float)
    a, b, e, al, be = (grid[:, i, None] for i in range(5))
    pred = np.logaddexp(np.logaddexp(a - al * logn, b - be * logd), e)
    scores = _huber(pred - logl).sum(axis=1)
    best = None
    for i in np.argsort(scores)[:STARTS]:
        res = minimize(
            _objective,
            grid[i],
            args=(logn, logd, logl),
            method="L-BFGS-B",
            bounds=BOUNDS,
            tol=1e-12,
        )
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    return Fit(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta))


def bootstrap(
    n: Sequence[float],
    d: Sequence[float],
    loss: Sequence[float],
    rounds: int = 50,
    seed: int = 0,
    level: float = 0.9,
) -> list[Fit]:
    """Fits to ``rounds`` resamples (with replacement, NumPy generator ``seed``) of the points;
    take :func:`interval` of any quantity over them (``level``: kept for the caller's label)."""
    rng = np.random.default_rng(seed)
    n, d, l_ = (np.asarray(x, dtype=float) for x in (n, d, loss))
    out = []
    for _ in range(rounds):
        idx = rng.integers(0, len(n), len(n))
        if len(set(zip(n[idx], d[idx]))) < 5:  # too few distinct points to fit 5 parameters
            continue
        out.append(fit(n[idx], d[idx], l_[idx]))
    return out


def interval(values: Sequence[float], level: float = 0.9) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values`` (5th–95th for 0.9)."""
    q = (1 - level) / 2 * 100
    return float(np.percentile(values, q)), float(np.percentile(values, 100 - q))


def fit_lines(points: Sequence[tuple[float, float, float]], budgets: Sequence[float], which: str):
    """The lines ``mltrain-compare`` prints: the fit over ``points`` (N, D, L) with 90 %
    bootstrap intervals and N*(C), D*(C) at ``budgets`` (FLOPs), labelled as a model."""
    n, d, l_ = zip(*points)
    f = fit(n, d, l_)
    boots = bootstrap(n, d, l_)
    lines = [
        f"parametric fit (a model, not used for r; Hoffmann et al. 2022 approach 3, N = {which} "
        f"parameters, {len(points)} points, 90 % bootstrap intervals over {len(boots)} resamples):",
        f"  L(N, D) = {f.E:.3f} + {f.A:.3g}/N^{f.alpha:.3f} + {f.B:.3g}/D^{f.beta:.3f}",
    ]
    if boots:
        for name in ("E", "alpha", "beta"):
            lo, hi = interval([getattr(b, name) for b in boots])
            lines.append(f"  {name}: {getattr(f, name):.3f} ({lo:.3f} to {hi:.3f})")
    for c in budgets:
        nn, dd = f.optimal(c)
        text = f"  C = {c:.3g} (= 6ND): N* = {nn:.3g}, D* = {dd:.3g}"
        if boots:
            ns = interval([b.optimal(c)[0] for b in boots])
            text += f" (N* {ns[0]:.3g} to {ns[1]:.3g})"
        lines.append(text)
    return lines


# --------------------------------------------------------------------------- the envelope's fit
def fit_points(env, which: str = "total") -> list[tuple[float, float, float]]:
    """(N, D, L) of every size's best point per budget for :func:`fit`:
    parameters (``total`` or ``nonembed``), mean tokens and mean final loss of its best runs."""
    out = []
    for s in env.sizes:
        if s.params is None:
            continue
        for b in s.frontier.budgets:
            tokens = float(np.mean([tokens_of(r) for r in b.best]))
            if math.isfinite(tokens) and tokens > 0:
                out.append((s.params.get(which), tokens, b.loss))
    return out


def envelope_fit_lines(ej, which: str = "total") -> list[str]:
    """The parametric fit's lines per envelope (:func:`fit_lines`), or why
    there is none."""
    lines = []
    for env in ej.envelopes:
        pts = fit_points(env, which)
        try:
            got = fit.fit_lines(pts, [c.budget for c in env.choices], which)
            lines += [f"{env.label}, {got[0]}", *got[1:]]
        except ValueError as e:
            lines.append(f"{env.label}: no parametric fit: {e}")
    return lines
