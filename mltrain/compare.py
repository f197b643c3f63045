"""``mltrain-compare``: loss against compute for single-level and multilevel runs.

    mltrain-compare RUN_OR_SWEEP_DIR... [--out DIR] [--target LOSS] [--baseline LABEL]

Each argument is a run directory (``.hydra/config.yaml`` + ``metrics.jsonl``) or any
directory above run directories (a multirun/sweep directory, ``outputs/runs``): run
directories are found recursively. A run directory without ``metrics.jsonl`` (a failed job)
is skipped with a message on stderr. Output goes to ``--out`` (default
``<first argument>/compare``)::

    summary.md         the table below, the target, the baseline and iso-FLOP command hints
    summary.csv        the same numbers, unformatted (one row per configuration)
    loss_vs_flops.png  2 x 4 grid: rows validation loss / training loss (fine level),
    loss_vs_flops.svg  columns FLOPs with head (log x), non-embedding FLOPs (log x),
                       wall-clock seconds, fine steps
    flops_ratio.png    FLOPs to reach loss L relative to the baseline, against L
                       (solid: with head, dashed: non-embedding; a line at 1)

Conventions: FLOPs are counts of training FLOPs (``perf/flops``, with the head, and
``perf/flops_nonembed``; evaluation FLOPs are not included), losses are in nats/token.

- A *configuration* is a set of runs whose configs are equal except for ``train.seed`` and
  run-dir / logger / device-like keys (:data:`IGNORED`); its seeds are aggregated (mean
  line, min-max band in the plots; the seed-mean curve in the table).
- Seeds: FLOPs-to-target is taken on the seed-mean validation curve (seeds of a configuration
  evaluate at the same FLOPs), with the number of seeds whose own curve reaches the target.
- Labels: ``single_level``, ``single_level (iso-FLOP)`` (``train.target_flops`` set) or
  ``<coarsening> δ=<delta> m=<coarse_steps> w=<window>``, plus ``key=value`` for each other
  key that differs between the configurations compared (e.g. ``optimizer=adamw``).
- Baseline: the single-level configuration without ``train.target_flops`` (``--baseline``
  picks another). The target loss defaults to the baseline's final validation loss (mean
  over seeds). Ratios are reported against every single-level configuration present.
- FLOPs-to-target: linear interpolation of FLOPs in loss between the last evaluation above
  the target and the first at or below it (:func:`flops_to_target`).
- Iso-FLOP: each configuration's validation loss at the largest FLOPs budget (with head)
  every run reached, interpolated linearly in FLOPs (:func:`loss_at_flops`).
- Training loss is plotted for fine-level steps only (a coarse step's loss belongs to a
  different network), smoothed by a trailing running mean over ``max(1, n // 50)`` fine
  steps (n: the run's fine steps), see :func:`mltrain.plots.running_mean`.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltrain.config import inert_keys
from mltrain.runs import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    PROG,
    TOTALS,
    CompareError,
    Configuration,
    Run,
    find_runs,
    fmt_value,
    group_configurations,
    load_run,
    warn,
)

TOTAL_NAMES = {"head": "with head", "nonembed": "non-embed"}


# --------------------------------------------------------------------------- computations
def flops_to_target(flops: Sequence[float], losses: Sequence[float], target: float) -> float | None:
    """FLOPs at which a validation curve first reaches ``target`` (loss <= target).

    Args:
        flops: cumulative training FLOPs (counts) at each evaluation, non-decreasing.
        losses: validation loss (nats/token) at those evaluations.
        target: loss level.

    Returns:
        The FLOPs linearly interpolated (in loss) between the last evaluation above the
        target and the first at or below it; the FLOPs of the first evaluation if it is
        already at or below; None if the curve never reaches the target.
    """
    f, lo = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    ok = np.isfinite(f) & np.isfinite(lo)
    f, lo = f[ok], lo[ok]
    hit = np.flatnonzero(lo <= target)
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0:
        return float(f[0])
    f0, f1, l0, l1 = f[i - 1], f[i], lo[i - 1], lo[i]
    return float(f0 + (l0 - target) / (l0 - l1) * (f1 - f0))


def loss_at_flops(flops: Sequence[float], losses: Sequence[float], budget: float) -> float | None:
    """Validation loss (nats/token) at ``budget`` training FLOPs, linearly interpolated in
    FLOPs between the two evaluations around it; None outside the evaluated range."""
    f, lo = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    ok = np.isfinite(f) & np.isfinite(lo)
    f, lo = f[ok], lo[ok]
    if not len(f) or budget < f[0] or budget > f[-1]:
        return None
    i = int(np.searchsorted(f, budget, side="left"))
    if f[i] == budget:
        return float(lo[i])
    f0, f1, l0, l1 = f[i - 1], f[i], lo[i - 1], lo[i]
    return float(l0 + (budget - f0) / (f1 - f0) * (l1 - l0))


Curve = tuple[Sequence[float], Sequence[float]]  # (FLOPs, validation losses) of one seed


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The seed-mean validation curve: each seed's losses interpolated onto the first seed's
    FLOPs (seeds of one configuration evaluate at the same FLOPs, so this is exact for them),
    averaged; points where some seed has no value are dropped."""
    f0 = np.asarray(curves[0][0], dtype=float)
    rows = []
    for f, lo in curves:
        f, lo = np.asarray(f, dtype=float), np.asarray(lo, dtype=float)
        ok = np.isfinite(f) & np.isfinite(lo)
        rows.append(
            np.interp(f0, f[ok], lo[ok], left=np.nan, right=np.nan)
            if ok.any()
            else np.full_like(f0, np.nan)
        )
    mean = np.mean(rows, axis=0)
    keep = np.isfinite(mean)
    return f0[keep], mean[keep]


def seeds_to_target(curves: Sequence[Curve], target: float) -> tuple[float | None, int]:
    """:func:`flops_to_target` of the seed-mean curve (:func:`mean_curve`), and the number of
    seeds whose own curve reaches the target."""
    if not curves:
        return None, 0
    reached = sum(flops_to_target(f, lo, target) is not None for f, lo in curves)
    return flops_to_target(*mean_curve(curves), target), reached


def flops_ratio_curve(
    curves_a: Sequence[Curve], curves_b: Sequence[Curve], levels: Sequence[float]
) -> np.ndarray:
    """FLOPs_a(L) / FLOPs_b(L) at each loss level L: the (seed-mean) FLOPs for ``a`` to reach L
    over those for ``b``; NaN where either does not reach L (or b needs 0 FLOPs)."""
    out = []
    for level in levels:
        a, _ = seeds_to_target(curves_a, level)
        b, _ = seeds_to_target(curves_b, level)
        out.append(a / b if a is not None and b else math.nan)
    return np.asarray(out, dtype=float)


def ratio_levels(curves_a: Sequence[Curve], curves_b: Sequence[Curve], n: int = 50) -> np.ndarray:
    """``n`` loss levels that every seed of both reaches: from the highest per-seed minimum
    up to the lowest loss at a first evaluation after training started (FLOPs > 0)."""
    curves = list(curves_a) + list(curves_b)
    lo = max(float(np.nanmin(np.asarray(lv, dtype=float))) for _, lv in curves)
    firsts = [np.asarray(lv, dtype=float)[np.asarray(f, dtype=float) > 0] for f, lv in curves]
    if any(len(x) == 0 for x in firsts):
        return np.empty(0)
    hi = min(float(x[0]) for x in firsts)
    return np.linspace(lo, hi, n) if hi > lo else np.asarray([lo]) if hi == lo else np.empty(0)


def val_curves(config: Configuration, total: str = "head") -> list[Curve]:
    """Per-seed (FLOPs, validation loss) curves of a configuration."""
    return [(r.val.x(total), r.val.loss) for r in config.runs]


# --------------------------------------------------------------------------- summary
@dataclass
class Row:
    """One configuration's line of the summary (FLOPs are counts, losses nats/token)."""

    config: Configuration
    final_loss: tuple[float, float, float]  # mean, min, max over seeds
    to_target: dict[str, tuple[float | None, int]] = field(
        default_factory=dict
    )  # total -> (mean, seeds reached)
    ratios: dict[tuple[str, str], float | None] = field(
        default_factory=dict
    )  # (single label, total) -> ratio
    at_budget: tuple[float, float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.label


@dataclass
class Summary:
    rows: list[Row]
    target: float | None
    target_source: str
    baseline: Configuration | None
    singles: list[Configuration]
    budget: float | None  # largest FLOPs (with head) every run reached
    ratio_curves: dict[
        str, dict[str, tuple[np.ndarray, np.ndarray]]
    ]  # label -> total -> (levels, ratios)
    remarks: list[str] = field(default_factory=list)


def _mmm(values: Sequence[float]) -> tuple[float, float, float]:
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def choose_baseline(configs: list[Configuration], label: str | None = None) -> Configuration | None:
    """The configuration named ``label``; by default the first single-level configuration
    without ``train.target_flops`` (else the first single-level one; None if there is none).

    Raises:
        CompareError: no configuration has that label.
    """
    if label is not None:
        for c in configs:
            if c.label == label:
                return c
        raise CompareError(
            f"--baseline {label!r} is not one of: " + ", ".join(repr(c.label) for c in configs)
        )
    singles = [c for c in configs if c.single_level]
    plain = [c for c in singles if not c.iso_flop]
    return (plain or singles or [None])[0]


def summarize(
    configs: list[Configuration], target: float | None = None, baseline: str | None = None
) -> Summary:
    """All numbers of the table: final losses, totals, FLOPs-to-target and its ratios to
    every single-level configuration (both totals), the iso-FLOP losses at the common
    budget, the ratio curves against the baseline, and the notes/flags."""
    base = choose_baseline(configs, baseline)
    if target is not None:
        source = "given with --target"
    elif base is not None:
        target = float(np.mean([r.final_val_loss for r in base.runs]))
        source = f"final validation loss of `{base.label}`, mean over {len(base.runs)} seed(s)"
    else:
        source = "none: no single-level configuration; give --target"
    singles = [c for c in configs if c.single_level]
    refs = singles + ([base] if base is not None and base not in singles else [])
    finals = [
        float(r.val.flops[-1])
        for c in configs
        for r in c.runs
        if len(r.val.flops) and r.val.flops[-1] > 0
    ]
    budget = (
        min(finals) if finals else None
    )  # runs never evaluated after training started: left out
    ref_for_diff = base or configs[0]
    rows = []
    for c in configs:
        row = Row(c, _mmm([r.final_val_loss for r in c.runs]))
        for total in TOTALS:
            row.to_target[total] = (
                seeds_to_target(val_curves(c, total), target) if target is not None else (None, 0)
            )
        if budget is not None:
            at = [loss_at_flops(r.val.flops, r.val.loss, budget) for r in c.runs]
            row.at_budget = _mmm(at) if None not in at else None
        for r in c.runs:
            steps, done = r.flat.get("train.steps"), r.last.get("fine_step", 0)
            if r.flat.get("train.target_flops") is None and steps is not None and done < steps:
                row.notes.append(
                    f"incomplete: {r.path.name} stopped at fine step {done} of {steps}"
                )
        for s in singles if not c.single_level else []:
            if s.mean_total() < c.mean_total() * (1 - 1e-9):
                row.notes.append(
                    f"`{s.label}` spent fewer FLOPs (×{s.mean_total() / c.mean_total():.2f})"
                )
        if c is not ref_for_diff:
            for part in ("data", "model"):
                diff = [
                    k
                    for k in sorted(set(c.flat) | set(ref_for_diff.flat))
                    if k.startswith(part + ".")
                    and k != "data.cache_dir"
                    and c.flat.get(k) != ref_for_diff.flat.get(k)
                ]
                if diff:
                    row.notes.append(
                        f"{part} differs from `{ref_for_diff.label}`: "
                        + ", ".join(f"{k}={fmt_value(c.flat.get(k))}" for k in diff)
                    )
        rows.append(row)
    by_label = {r.label: r for r in rows}
    for row in rows:
        for s in refs:
            for total in TOTALS:
                mine, ref = row.to_target[total][0], by_label[s.label].to_target[total][0]
                row.ratios[(s.label, total)] = mine / ref if mine is not None and ref else None
    curves = {}
    if base is not None:
        for c in configs:
            if c is base:
                continue
            curves[c.label] = {}
            for total in TOTALS:
                a, b = val_curves(c, total), val_curves(base, total)
                levels = ratio_levels(a, b)
                curves[c.label][total] = (levels, flops_ratio_curve(a, b, levels))
    summary = Summary(rows, target, source, base, refs, budget, curves)
    return summary


# --------------------------------------------------------------------------- output
def _sci(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3e}"


def _loss(m: tuple[float, float, float] | None, n: int) -> str:
    if m is None:
        return "n/a"
    return f"{m[0]:.4f}" if n == 1 or m[1] == m[2] else f"{m[0]:.4f} ({m[1]:.4f}–{m[2]:.4f})"


def _to_target(v: tuple[float | None, int], n: int, target: float | None) -> str:
    if target is None:
        return "n/a"
    if v[0] is not None:
        return _sci(v[0]) + ("" if v[1] == n else f" ({v[1]}/{n} seeds reach it)")
    return "not reached" if n == 1 else f"not reached (by {v[1]}/{n} seeds)"


def iso_flop_hints(configs: list[Configuration]) -> list[str]:
    """For each multilevel configuration, its FLOPs budget (with head, mean over seeds) and
    the command that runs a single-level baseline with the same budget."""
    lines = []
    for c in configs:
        if c.single_level:
            continue
        budget = int(round(c.mean_total()))
        extra = _other_overrides(c.runs[0].path)
        lines.append(
            f"- `{c.label}`: {budget:.4e} FLOPs → `mltrain coarsening=none train.target_flops={budget}"
            + "".join(f" {o}" for o in extra)
            + "`"
        )
    return lines


def _other_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides that an iso-FLOP single-level run keeps as they are."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = list(OmegaConf.load(path)) if path.is_file() else []
    except Exception:
        return []
    # settings the baseline replaces, and those that do not change training (inert_keys)
    drop = ("coarsening", "train.seed", "train.steps", "train.target_flops", "hydra.", "logger")
    drop += inert_keys()
    return [str(o) for o in overrides if not str(o).lstrip("+~").startswith(drop)]


def markdown(summary: Summary, hints: list[str]) -> str:
    """The summary table (and its header lines) as markdown."""
    head = [
        "configuration",
        "seeds",
        "final val loss",
        "FLOPs (with head)",
        "FLOPs (non-embed)",
        "wall (s)",
    ]
    head += [f"FLOPs-to-target ({TOTAL_NAMES[t]})" for t in TOTALS]
    head += [
        f"FLOPs-to-target ratio to `{s.label}` ({TOTAL_NAMES[t]})"
        for s in summary.singles
        for t in TOTALS
    ]
    head += [f"val loss @ {_sci(summary.budget)} FLOPs", "notes"]
    lines = ["# mltrain-compare", ""]
    n_runs = sum(len(r.config.runs) for r in summary.rows)
    lines.append(f"- runs: {n_runs} in {len(summary.rows)} configurations")
    tgt = "n/a" if summary.target is None else f"{summary.target:.4f} nats/token"
    lines.append(f"- target validation loss: {tgt} ({summary.target_source})")
    lines.append(
        f"- baseline: `{summary.baseline.label}`" if summary.baseline else "- baseline: none"
    )
    lines += [f"- note: {r}" for r in summary.remarks]
    lines.append(
        "- FLOPs-to-target: linear interpolation between evaluations; on the seed-mean curve; "
        "ratio < 1: fewer FLOPs than that single-level configuration"
    )
    lines.append(
        f"- iso-FLOP: validation loss at {_sci(summary.budget)} FLOPs (with head), the largest "
        "budget every run reached"
    )
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary.rows:
        c, n = row.config, len(row.config.runs)
        cells = [
            row.label,
            str(n),
            _loss(row.final_loss, n),
            _sci(c.mean_total("head")),
            _sci(c.mean_total("nonembed")),
            f"{np.mean([r.wall_s for r in c.runs]):.1f}",
        ]
        cells += [_to_target(row.to_target[t], n, summary.target) for t in TOTALS]
        for s in summary.singles:
            for t in TOTALS:
                v = row.ratios.get((s.label, t))
                cells.append("n/a" if v is None else f"{v:.3f}")
        cells += [_loss(row.at_budget, n), "; ".join(row.notes)]
        lines.append("| " + " | ".join(cells) + " |")
    if hints:
        lines += [
            "",
            "## Iso-FLOP single-level baselines",
            "",
            "FLOPs budget (with head) of each multilevel configuration, and the command for a "
            "single-level run with the same budget:",
            "",
            *hints,
        ]
    return "\n".join(lines) + "\n"


def write_csv(summary: Summary, path: Path) -> None:
    """One row per configuration; empty cells for values that do not exist (not reached)."""

    def num(v):
        return (
            "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))
        )

    head = [
        "configuration",
        "seeds",
        "single_level",
        "final_val_loss_mean",
        "final_val_loss_min",
        "final_val_loss_max",
        "flops",
        "flops_nonembed",
        "wall_s",
        "target",
    ]
    for t in TOTALS:
        head += [f"flops_to_target_{t}", f"seeds_reached_{t}"]
    head += [f"ratio_vs[{s.label}]_{t}" for s in summary.singles for t in TOTALS]
    head += [
        "budget_flops",
        "val_loss_at_budget_mean",
        "val_loss_at_budget_min",
        "val_loss_at_budget_max",
        "notes",
    ]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for row in summary.rows:
            c = row.config
            cells = [
                row.label,
                len(c.runs),
                c.single_level,
                *map(num, row.final_loss),
                num(c.mean_total("head")),
                num(c.mean_total("nonembed")),
                num(np.mean([r.wall_s for r in c.runs])),
                num(summary.target),
            ]
            for t in TOTALS:
                cells += [num(row.to_target[t][0]), row.to_target[t][1]]
            cells += [num(row.ratios.get((s.label, t))) for s in summary.singles for t in TOTALS]
            cells += [
                num(summary.budget),
                *(map(num, row.at_budget) if row.at_budget else ["", "", ""]),
                "; ".join(row.notes),
            ]
            w.writerow(cells)


def compare(
    paths: Sequence[str | Path],
    out: Path | None = None,
    target: float | None = None,
    baseline: str | None = None,
    dpi: int = 110,
) -> tuple[Summary, Path, str]:
    """Everything ``mltrain-compare`` does; returns the summary, the output directory and
    the markdown text. ``dpi``: resolution of the PNGs.

    Raises:
        CompareError: bad input (see :func:`find_runs`, :func:`choose_baseline`).
    """
    from mltrain import plots

    if target is not None and not math.isfinite(target):
        raise CompareError(f"--target {target} is not a finite loss")
    configs = group_configurations(find_runs(paths))
    summary = summarize(configs, target, baseline)
    out = Path(out) if out is not None else Path(paths[0]) / "compare"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"cannot create the output directory {out}: {e.strerror}") from None
    fig = plots.plot_losses(configs)
    for ext in ("png", "svg"):
        fig.savefig(out / f"loss_vs_flops.{ext}", dpi=dpi)
    plots.plot_flops_ratio(summary).savefig(out / "flops_ratio.png", dpi=dpi)
    text = markdown(summary, iso_flop_hints(configs))
    (out / "summary.md").write_text(text)
    write_csv(summary, out / "summary.csv")
    return summary, out, text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare single-level and multilevel runs: loss against FLOPs, "
        "wall-clock and fine steps; FLOPs-to-target and iso-FLOP tables.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_SWEEP_DIR",
        help="run directories, or directories above them (multirun/sweep dirs)",
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: <first argument>/compare)"
    )
    parser.add_argument(
        "--target",
        type=float,
        help="target validation loss in nats/token "
        "(default: the baseline's final validation loss, mean over seeds)",
    )
    parser.add_argument(
        "--baseline",
        metavar="LABEL",
        help="configuration label of the baseline "
        "(default: the single-level configuration without train.target_flops)",
    )
    parser.add_argument("--dpi", type=int, default=110, help="resolution of the PNGs (default 110)")
    args = parser.parse_args(argv)
    try:
        _, out, text = compare(args.paths, args.out, args.target, args.baseline, args.dpi)
    except CompareError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
    print(f"summary: {out / 'summary.md'} {out / 'summary.csv'}")
    print(
        f"plots: {out / 'loss_vs_flops.png'} {out / 'loss_vs_flops.svg'} {out / 'flops_ratio.png'}"
    )
