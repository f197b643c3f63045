"""The line search of a coarse correction's δ (:mod:`mltrain.schemes.corrections`): the
parent level's objective along the phase's correction d at δ on a grid (and a parabola's
vertex), on a held-aside batch of training windows; every forward is counted by the plan
(:meth:`mltrain.schemes.corrections.CorrectedProlong.extra_flops`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


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


def line_search(run, ext, op, params, before, after, u, point) -> float:
    """δ minimising the parent objective along the phase's correction on a held-aside batch
    (:func:`search_delta`); notes δ and the loss gained on the next record.
    A held-aside batch with fewer rows than ranks is refused at start-up
    (:func:`mltrain.schemes.corrections.check_ranks`).
    """
    parent = run.levels[op.parent]
    seq_len = int(run.cfg.model.seq_len)
    rows = run.runner.global_batch if op.positions is None else op.positions // seq_len
    batch = run.runner.shard(ext.search_sampler.next(rows))
    v_parent = ext.v.get(op.parent) or {}
    slope = 0.0  # <v_parent, d>, d = Δ + βu: the linear term of the parent's corrected objective
    for n, b in before.items():
        if n in v_parent:
            d = after[n].double() - b.double()
            if u:
                d = d + float(op.momentum) * u[n].double()
            slope += float((v_parent[n].double() * d).sum())
    chunks = list(batch.split(run.runner.micro))

    def objective(delta: float) -> float:
        for n, x in point(delta).items():
            params[n].copy_(x)
        return run.runner.mean_loss(parent.path, chunks) - delta * slope

    delta, values = search_delta(objective, op.grid, op.search)
    run.note(f"coarsening/delta/{op.level}", delta)
    run.note(f"coarsening/delta_gain/{op.level}", values[0.0] - values[delta])
    for n in before:  # the caller applies the chosen point
        params[n].copy_(after[n])
    return delta
