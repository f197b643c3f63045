"""The third edition's headline table (docs/results.md) from the envelope judge's output.

Reads the ``envelope.csv`` files that ``mltrain-compare RUNS --frontier <depth family>`` writes
(one row per judged seed) and the runs' records (``--runs``: run.json of each run named in the
CSV) and prints a markdown table, one row per scheme and budget: the final validation loss
(mean, min–max over seeds, and the seed count), r_same (FLOPs over the tuned frontier of the
same 12-block model), r_env with head and non-embedding FLOPs (over the envelope of the best
model size at each budget), the gap to the envelope at equal FLOPs (nats; negative: below it),
the final model's tokens per parameter (``data.tokens_seen / params.total``), the passes over
the training split (``data.epochs``) and the time ratio (``--time``: a CSV with columns
``scheme,budget,time_ratio`` from the time-ratio benchmark; "–" where absent). A bound keeps its
sign (``> 1.00``). Below it, the envelope's best point per budget over its seeds as the
envelope judge has it (:func:`envelope_table`: the envelope runs under ``--runs`` judged as
``mltrain-compare --frontier`` judges them, the best size and its best lr per budget, every
budget of the envelope). ``--plot PATH`` also draws r_env (with head) against the budget, one
line per scheme: the mean over seeds with min–max bars, a hollow triangle where a seed's r_env
is only a bound (pointing up for "> r": the scheme never reached the envelope's loss), and a
line at 1 (below it, the scheme needs fewer FLOPs than the envelope). A scheme is the run name
without its budget tag ``_b8``/``_b4``/``_b2``/``_b1`` and seed ``_s<n>``
(scripts/results_third.sh names runs so).

    python scripts/third_headline.py docs/results/third_edition/adamw/envelope.csv \\
        --runs docs/results/third_edition/runs
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

from mltrain.runrecord import read_run_record

NAME = re.compile(r"^(?P<scheme>.+?)_(?P<budget>b[1248])_s(?P<seed>\d+)$")
BUDGETS = {"b8": "1/8", "b4": "1/4", "b2": "1/2", "b1": "1"}
ORDER = list(BUDGETS)


def over_seeds(rows: list[dict], key: str) -> tuple[str, float, float, float, int] | None:
    """(bound sign, mean, min, max, count) of column ``key`` over rows: the sign is ``">"`` or
    ``"<"`` where a row's ``key_kind`` says its value is a bound (the mean is then one too),
    else ``""``; None when no row has a value."""
    vals = [(r.get(f"{key}_kind") or "=", float(r[key])) for r in rows if r.get(key)]
    if not vals:
        return None
    xs = [v for _, v in vals]
    sign = next((k for k, _ in vals if k in ("<", ">")), "")
    return sign, sum(xs) / len(xs), min(xs), max(xs), len(xs)


def number(sign: str, x: float, spec: str = ".2f") -> str:
    """``x`` as the judge prints a value of kind ``sign`` (``">"``, ``"<"``, else exact): a
    bound keeps its sign and is rounded outwards (> 0.9998 is "> 0.99", not "> 1.00";
    :meth:`mltrain.analysis.judging.curves.Bounded.fmt`)."""
    from mltrain.analysis.judging.curves import Bounded

    return {">": Bounded.above, "<": Bounded.below}.get(sign, Bounded.exact)(x).fmt(spec)


def cell(rows: list[dict], key: str, spec: str = ".2f") -> str:
    """Mean (min–max) of column ``key`` over rows (:func:`over_seeds`); a bound keeps its sign;
    "–" when no row has a value. The mean and the seeds' range of a bound are rounded outwards
    alike (:func:`number`), so the range still holds the mean."""
    got = over_seeds(rows, key)
    if got is None:
        return "–"
    sign, mean, lo, hi, n = got
    head = number(sign, mean, spec)
    if n == 1:
        return head
    lo_s, hi_s = (number(sign, x, spec).lstrip("<> ") for x in (lo, hi))
    return f"{head} ({lo_s}–{hi_s})"


def grouped(csvs: list[Path], runs: Path) -> dict[tuple[str, str], list[dict]]:
    """The CSV rows by (scheme, budget tag), each with ``tpp`` and ``passes`` from its run.json.
    Rows whose run name has no budget tag are left out (probes); a run missing from ``runs``
    has no ``tpp``/``passes``."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in csvs:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                m = NAME.match(row["run"])
                if m:
                    rj = read_run_record(runs / row["run"])  # {} where it has no run.json
                    if rj:
                        data, params = rj.get("data", {}), rj.get("params", {})
                        if data.get("tokens_seen") and params.get("total"):
                            row["tpp"] = str(data["tokens_seen"] / params["total"])
                            row["passes"] = str(data.get("epochs", ""))
                    groups[(m["scheme"], m["budget"])].append(row)
    return groups


def table(
    groups: dict[tuple[str, str], list[dict]], times: dict[tuple[str, str], tuple[str, float]]
) -> list[str]:
    """The table's markdown lines (see the module docstring), from :func:`grouped`."""
    lines = [
        "| scheme | budget | final loss (seeds) | r_same | r_env (head) | r_env (non-emb.) "
        "| gap to envelope | tokens/param | passes | time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (scheme, b), rows in sorted(groups.items(), key=lambda x: (x[0][0], ORDER.index(x[0][1]))):
        seeds = len({r["seed"] for r in rows})
        t = times.get((scheme, b))
        lines.append(
            f"| {scheme} | {BUDGETS[b]} | {cell(rows, 'final_val_loss', '.3f')} ({seeds}) "
            f"| {cell(rows, 'r_same_head')} | {cell(rows, 'r_env_head')} "
            f"| {cell(rows, 'r_env_nonembed')} | {cell(rows, 'gap_env_head', '+.3f')} "
            f"| {cell(rows, 'tpp', '.1f')} | {cell(rows, 'passes', '.1f')} "
            f"| {'–' if t is None else number(*t)} |"
        )
    return lines


# the envelope's runs, as results_third.sh names them: whole runs at 1/8 (env_probe), trunks and
# decays above (env_trunks, env_branches, env_bracket, env_below: _s0_b4/_b2/_b1; env_extend:
# _s0_x4 and its decay _s0_x2) and their seeds 1, 2 (env_seeds): the runs of the compare
# part's frontier (env_*), no scheme's run
ENV_RUN = re.compile(r"^env_L(?P<size>\d+)_lr(?P<lr>[^_]+)_(?:b8_s0|s0_(?P<budget>b[124]|x[24]))$")
ENV_SEED = re.compile(
    r"^env_seed_L(?P<size>\d+)_lr(?P<lr>[^_]+)_(?P<budget>b[1248])_s(?P<seed>\d+)$"
)
FULL = 3.2e13  # the study's budget "1" (train.target_flops; the budget tags scale it)


def budget_label(flops: float) -> str:
    """A budget (FLOPs with head) as a fraction of :data:`FULL`: ``1/8``, ``1/4``, ``1``, ``2``,
    ``4``; another fraction with three digits (``0.3``)."""
    f = flops / FULL
    if round(f) >= 1 and abs(f - round(f)) <= 0.01 * f:
        return str(round(f))
    if abs(1 / f - round(1 / f)) <= 0.01 / f:
        return f"1/{round(1 / f)}"
    return f"{f:.3g}"


def lr_label(lr: float) -> str:
    """A learning rate as the study's run names write it: ``4e-3``, ``1.6e-2``."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def envelope_table(runs: Path) -> list[str]:
    """The envelope's best point per budget with its seeds, the noise a scheme's gap is read
    against, as the envelope judge has it (the numbers r_env and the gap are measured by):
    the envelope runs under ``runs`` (:data:`ENV_RUN`, :data:`ENV_SEED`) judged as
    ``mltrain-compare --frontier`` does (each size's tuned frontier: per budget the best
    schedule and lr by the mean final validation loss over its seeds, an lr with a diverged or
    unfinished seed no candidate; the envelope: per budget the best size,
    :func:`mltrain.analysis.judging.envelope.judge_sizes`). Markdown lines, one row per budget
    of the envelope in increasing FLOPs (:func:`budget_label`): budget | best size, its best lr
    there | its mean final loss (min–max over seeds) (seeds); where the envelope's own loss
    there is lower (made monotone) it is named after the mean. No lines without envelope runs
    or with fewer than two sizes; one table per envelope, each under its label, when the runs make
    several (families that differ in more than the size)."""
    from mltrain.analysis.judging import envelope, frontier
    from mltrain.analysis.judging.budgets import BUDGET_TOLERANCE
    from mltrain.analysis.judging.runs import CompareError, find_runs

    dirs = [
        d
        for d in (sorted(runs.iterdir()) if runs.is_dir() else [])
        if d.is_dir() and (ENV_RUN.match(d.name) or ENV_SEED.match(d.name))
    ]
    try:
        judged = frontier.judge(find_runs(dirs), []) if dirs else None
    except CompareError:  # none of them readable yet
        return []
    sizes = envelope.judge_sizes(judged.frontiers, []) if judged else None
    if sizes is None:
        return []
    lines = []
    for env in sizes.envelopes:
        if len(sizes.envelopes) > 1:
            lines += [*([""] if lines else []), f"{env.label}:", ""]
        lines += ["| budget | best size, lr | final loss (seeds) |", "|---|---|---|"]
        wide = len({s.key[1] for s in env.sizes}) > 1  # sizes of several widths: name d too
        for choice, point in zip(env.choices, env.points["head"]):
            size = choice.size.label if wide else choice.size.label.split(",")[0]  # "2 blocks"
            b = next(
                (
                    b
                    for b in choice.size.frontier.budgets
                    if abs(b.budget / choice.budget - 1) <= BUDGET_TOLERANCE
                ),
                None,
            )
            if b is None:  # the best size's frontier interpolated between its budgets
                lines.append(
                    f"| {budget_label(choice.budget)} | {size}, between its budgets "
                    f"| {point.loss:.3f} (interpolated) |"
                )
                continue
            lo, hi = b.spread()
            rng = f" ({lo:.3f}–{hi:.3f})" if b.seeds > 1 else ""
            sched = f", {b.schedule}" if b.others else ""  # other schedules were tried there
            # the envelope's own loss there where it is lower (a smaller budget's, monotone)
            low = f"{point.loss:.3f}" != f"{b.loss:.3f}"
            env_loss = f"; envelope {point.loss:.3f}" if low else ""
            lines.append(
                f"| {budget_label(b.budget)} | {size}, lr {lr_label(b.best_lr)}{sched} "
                f"| {b.loss:.3f}{rng} ({b.seeds}){env_loss} |"
            )
    return lines


FRACTION = {"b8": 1 / 8, "b4": 1 / 4, "b2": 1 / 2, "b1": 1.0}


def plot_r_env(groups: dict[tuple[str, str], list[dict]], path: Path) -> list[tuple]:
    """Draw r_env (with head) against the budget (fraction of 3.2e13 FLOPs, log axis) into
    ``path``: per scheme the mean over seeds, min–max bars, a hollow triangle where a seed is a
    bound. Returns the points drawn, ``(scheme, fraction, mean, min, max, bound)`` each, bound
    ``">"``, ``"<"`` or ``""``; none drawn: nothing written."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    drawn = []
    for scheme in sorted({s for s, _ in groups}):
        pts = []
        for b in ORDER:
            got = over_seeds(groups.get((scheme, b), []), "r_env_head")
            if got is not None:
                sign, mean, lo, hi, _ = got
                pts.append((FRACTION[b], mean, lo, hi, sign))
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [p[1] for p in pts]
        (line,) = ax.plot(x, y, "-", label=scheme)
        for xi, yi, lo, hi, bound in pts:
            ax.errorbar(
                [xi],
                [yi],
                yerr=[
                    [max(yi - lo, 0.0)],
                    [max(hi - yi, 0.0)],
                ],  # the mean of equal values may round past them
                fmt={">": "^", "<": "v"}.get(bound, "o"),
                color=line.get_color(),
                mfc="none" if bound else line.get_color(),
                capsize=3,
            )
        drawn += [(scheme, *p) for p in pts]
    if not drawn:
        return []
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks([FRACTION[b] for b in ORDER], [BUDGETS[b] for b in ORDER])
    ax.set_xlabel("budget (fraction of 3.2e13 FLOPs with head)")
    ax.set_ylabel("r_env: FLOPs over the envelope's at equal loss")
    ax.set_title("below 1: fewer FLOPs than the envelope; hollow: a bound", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return drawn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, nargs="+", help="envelope.csv files of mltrain-compare")
    ap.add_argument("--runs", type=Path, required=True, help="directory of the run records")
    ap.add_argument("--time", type=Path, help="CSV scheme,budget,time_ratio (the benchmark's)")
    ap.add_argument("--plot", type=Path, help="also draw r_env against the budget into this PNG")
    a = ap.parse_args(argv)
    for p in [*a.csv, a.runs]:
        if not p.exists():
            ap.error(f"{p} does not exist")
    times = {}
    if a.time:
        with open(a.time, newline="") as fh:
            times = {
                (r["scheme"], r["budget"]): (
                    r.get("time_ratio_kind") or "=",
                    float(r["time_ratio"]),
                )
                for r in csv.DictReader(fh)
            }
    groups = grouped(a.csv, a.runs)
    print("\n".join(table(groups, times)))
    env = envelope_table(a.runs)
    if env:
        print(
            "\nThe envelope's best point per budget, over its seeds (the noise to read a gap by):\n"
        )
        print("\n".join(env))
    if a.plot:
        plot_r_env(groups, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
