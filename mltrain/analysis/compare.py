"""``mltrain-compare``: loss against compute for single-level and multilevel runs, and the
tuned-frontier judge.

    mltrain-compare RUN_OR_SWEEP_DIR... [--frontier DIR...] [--out DIR] [--target LOSS]
                    [--baseline LABEL] [--dpi N]

Each argument is a run directory (``.hydra/config.yaml`` + ``metrics.jsonl``, and ``run.json``
for newer runs) or any directory above run directories (a multirun/sweep directory,
``outputs/runs``): run directories are found recursively. A run directory without
``metrics.jsonl`` (a failed job) is skipped with a message on stderr. Output goes to ``--out``
(default ``<first argument>/compare``)::

    summary.md         headline sentences, the table, the tuned-frontier judge, notes
    summary.csv        the same numbers, unformatted (one row per configuration)
    loss_vs_flops.png  2 x 4 grid: rows validation loss / training loss (fine level),
    loss_vs_flops.svg  columns FLOPs with head (log x), non-embedding FLOPs (log x),
                       wall-clock seconds, fine steps; the target line and where each
                       curve first reaches it, with its FLOP ratio
    flops_ratio.png    FLOPs to reach loss L relative to the baseline, against L (only when
                       there is a single-level run and another configuration)
    frontier.png       with frontier runs: the tuned frontier L*(C) and every method on it
                       (:mod:`mltrain.analysis.frontier`)
    frontier.csv       with frontier runs: r and the gap of every run judged, per seed

The terminal shows the headline (:mod:`mltrain.analysis.headline`) and a compact table; the wide one is
in ``summary.md``.

Conventions: FLOPs are counts of training FLOPs (``perf/flops``, with the head, and
``perf/flops_nonembed``; evaluation FLOPs are not included), losses are in nats/token.

- A *configuration* is a set of runs whose configs are equal except for ``train.seed`` and
  run-dir / logger / device-like keys (:data:`mltrain.analysis.runs.IGNORED`) and that have the same
  role; its seeds are aggregated (mean line, min-max band in the plots; the seed-mean curve in
  the table). Names: "single-level, same fine steps", "single-level, same FLOPs"
  (``train.target_flops`` set), "multilevel <coarsening> δ=.. m=.. w=..", plus ``key=value``
  for each other key that differs between the configurations compared.
- Diverged runs (``run.json`` status ``diverged``, or a non-finite loss in the
  records) are listed as "diverged at step N", never get a final loss, never count in a seed
  mean, and are never a baseline or a frontier point.
- Validation sets: runs whose ``run.json`` records different validation sets (fingerprints of
  the window tokens) are refused, one line naming the runs; runs without one (an earlier
  mltrain) are compared with a warning (:mod:`mltrain.analysis.valsets`).
- Baseline: the "same fine steps" single-level configuration (``--baseline`` picks another).
  The target loss defaults to the baseline's final validation loss (mean over seeds). Ratios
  are reported against every single-level configuration present.
- FLOPs-to-target: on the seed-mean validation curve, linear interpolation of FLOPs in loss
  between the last evaluation above the target and the first at or below it
  (:func:`mltrain.analysis.curves.flops_to_target`). A curve that never reaches the target gives a
  bound on the ratio, never "n/a" (:func:`mltrain.analysis.curves.ratio_to_target`).
- Same-FLOPs losses: each configuration's validation loss at the largest FLOPs (with head)
  every run reached, interpolated linearly in FLOPs (:func:`mltrain.analysis.curves.loss_at_flops`).
- Tuned frontier: runs under ``--frontier`` directories, and runs whose role is ``frontier``,
  define L*(C) (DESIGN.md section 8; Kaddour et al. 2023, arXiv 2307.06440); every other
  configuration gets r = C / C*(L) and the gap L - L*(C) (:mod:`mltrain.analysis.frontier`).
- Training loss is plotted for fine-level steps only (a coarse step's loss belongs to a
  different network), smoothed by a trailing running mean over ``max(1, n // 50)`` fine
  steps (n: the run's fine steps), see :func:`mltrain.analysis.plots.running_mean`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mltrain.analysis.curves import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    Curve,
    Estimate,
    curve_end,
    flops_ratio_curve,
    flops_to_target,
    fmt_flops,
    loss_at_flops,
    mean_curve,
    ratio_levels,
    ratio_to_target,
    seeds_to_target,
)
from mltrain.analysis.grouping import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    Configuration,
    fmt_value,
    group_configurations,
    setting_differences,
    tokens_per_step,
)
from mltrain.analysis.runs import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    PROG,
    TOTALS,
    CompareError,
    Run,
    find_runs,
    load_run,
    warn,
)
from mltrain.analysis.valsets import check_validation_sets
from mltrain.config import inert_keys
from mltrain.config.overrides import override, shell_command

TOTAL_NAMES = {"head": "with head", "nonembed": "non-embed"}
SAME_BUDGET = 0.01  # two FLOP totals within 1 % are "the same FLOPs"


def val_curves(config: Configuration, total: str = "head") -> list[Curve]:
    """Per-seed (FLOPs, validation loss) curves of a configuration's runs that did not diverge."""
    return [(r.val.x(total), r.val.loss) for r in config.healthy]


# --------------------------------------------------------------------------- summary
@dataclass
class Row:
    """One configuration's line of the summary (FLOPs are counts, losses nats/token)."""

    config: Configuration
    final_loss: tuple[float, float, float] | None  # mean, min, max over healthy seeds
    to_target: dict[str, tuple[float | None, int]] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)  # total -> where the mean curve ends
    ratios: dict[tuple[str, str], Estimate | None] = field(default_factory=dict)
    at_budget: tuple[float, float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def seeds(self) -> int:
        return len(self.config.runs)


@dataclass
class Summary:
    """Every number of the table (FLOPs are counts, losses nats/token) and the notes."""

    rows: list[Row]
    target: float | None
    target_source: str
    baseline: Configuration | None
    singles: list[Configuration]  # the references: single-level configurations that trained
    budget: float | None  # largest FLOPs (with head) every healthy run reached
    ratio_curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # label -> total -> curve
    remarks: list[str] = field(default_factory=list)

    def row(self, config: Configuration) -> Row:
        """The row of ``config``."""
        return next(r for r in self.rows if r.config is config)


def _mmm(values: Sequence[float]) -> tuple[float, float, float]:
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def choose_baseline(configs: list[Configuration], label: str | None = None) -> Configuration | None:
    """The configuration named ``label``; by default the first single-level configuration
    with the role "same fine steps" (else the first single-level one), among those with at
    least one run that did not diverge; None if there is none.

    Raises:
        CompareError: no configuration has that label, or all its runs diverged.
    """
    if label is not None:
        for c in configs:
            if c.label == label:
                if not c.healthy:
                    raise CompareError(
                        f"--baseline {label!r}: {c.diverged_text()}; it cannot be a baseline"
                    )
                return c
        raise CompareError(
            f"--baseline {label!r} is not one of: " + ", ".join(repr(c.label) for c in configs)
        )
    singles = [c for c in configs if c.single_level and c.healthy]
    plain = [c for c in singles if c.role == "single_level/same_steps"]
    return (plain or singles or [None])[0]


def hardware_remarks(runs: Sequence[Run]) -> list[str]:
    """Flags for runs compared across different thread counts, devices or process counts
    (``run.json``): CPU runs repeat bit for bit only at the same thread count."""
    out = []

    def names(rs):
        return ", ".join(r.path.name for r in rs)

    for what, get, why in (
        (
            "thread counts",
            lambda r: r.threads,
            "CPU runs repeat bit for bit only at the same thread count",
        ),
        ("devices", lambda r: r.device and r.device.split(":")[0], "results differ across devices"),
        ("process counts", lambda r: r.meta.get("world"), "the global batch differs"),
    ):
        groups: dict = {}
        for r in runs:
            groups.setdefault(get(r), []).append(r)
        known = {k: v for k, v in groups.items() if k is not None}
        if len(known) > 1 or (known and None in groups):
            parts = [
                f"{k}: {names(v)}" for k, v in sorted(known.items(), key=lambda kv: str(kv[0]))
            ]
            if None in groups:
                parts.append(f"not recorded: {names(groups[None])}")
            out.append(f"runs compared across different {what} ({'; '.join(parts)}): {why}")
    return out


def summarize(
    configs: list[Configuration], target: float | None = None, baseline: str | None = None
) -> Summary:
    """All numbers of the table: final losses, totals, FLOPs-to-target and its ratios to
    every single-level configuration (both totals, bounds where a curve never reaches the
    target), the losses at the largest FLOPs every run reached, the ratio curves against the
    baseline, and the notes/flags."""
    base = choose_baseline(configs, baseline)
    if target is not None:
        source = "given with --target"
    elif base is not None:
        target = float(np.mean([r.final_val_loss for r in base.healthy]))
        n = len(base.healthy)
        source = f"final validation loss of `{base.label}`" + (
            "" if n == 1 else f", mean over {n} seeds"
        )
    else:
        source = "no single-level configuration that trained; give --target"
    singles = [c for c in configs if c.single_level and c.healthy]
    refs = singles + ([base] if base is not None and base not in singles else [])
    finals = [
        float(r.val.flops[-1])
        for c in configs
        for r in c.healthy
        if len(r.val.flops) and r.val.flops[-1] > 0
    ]
    budget = min(finals) if finals else None  # runs never evaluated after the start: left out
    ref_for_diff = base or configs[0]
    rows = []
    for c in configs:
        healthy = c.healthy
        row = Row(c, _mmm([r.final_val_loss for r in healthy]) if healthy else None)
        for total in TOTALS:
            curves = val_curves(c, total)
            row.to_target[total] = (
                seeds_to_target(curves, target) if target is not None else (None, 0)
            )
            row.end[total] = curve_end(curves)
        if budget is not None and healthy:
            at = [loss_at_flops(r.val.flops, r.val.loss, budget) for r in healthy]
            row.at_budget = _mmm(at) if None not in at else None
        if c.diverged:
            row.notes.append(c.diverged_text())
        for r in c.untrained:
            row.notes.append(f"no training step: {r.path.name} stopped after its step-0 evaluation")
        for r in healthy:
            why = r.incomplete()
            if why:
                row.notes.append(f"incomplete: {r.path.name} {why}")
        for s in singles if not c.single_level else []:
            if s.mean_total() < c.mean_total() * (1 - 1e-9):
                row.notes.append(
                    f"`{s.label}` spent fewer FLOPs (×{s.mean_total() / c.mean_total():.2f})"
                )
        if c is not ref_for_diff:
            for part, diff in setting_differences(c.runs[0], ref_for_diff.runs[0]).items():
                verb = "differ" if part == "tokens per step" else "differs"
                row.notes.append(f"{part} {verb} from `{ref_for_diff.label}`: " + ", ".join(diff))
        rows.append(row)
    by_label = {r.label: r for r in rows}
    for row in rows:
        for s in refs:
            ref = by_label[s.label]
            for total in TOTALS:
                row.ratios[(s.label, total)] = (
                    ratio_to_target(
                        row.to_target[total][0],
                        row.end[total],
                        ref.to_target[total][0],
                        ref.end[total],
                    )
                    if target is not None and row.config.healthy
                    else None
                )
    curves = {}
    if base is not None:
        for c in configs:
            if c is base or not c.healthy:
                continue
            curves[c.label] = {}
            for total in TOTALS:
                a, b = val_curves(c, total), val_curves(base, total)
                levels = ratio_levels(a, b)
                curves[c.label][total] = (levels, flops_ratio_curve(a, b, levels))
    remarks = hardware_remarks([r for c in configs for r in c.runs])
    return Summary(rows, target, source, base, refs, budget, curves, remarks)


# --------------------------------------------------------------------------- hints
def same_flops_hints(configs: list[Configuration]) -> list[str]:
    """For each multilevel configuration, its FLOPs budget (with head, mean over seeds) and
    the command that runs a single-level baseline with the same FLOPs."""
    lines = []
    for c in configs:
        if c.single_level or not c.healthy:
            continue
        budget = int(round(c.mean_total()))
        extra = _other_overrides(c.runs[0])
        cmd = shell_command(["mltrain", "coarsening=none", f"train.target_flops={budget}", *extra])
        lines.append(f"- `{c.label}`: {fmt_flops(budget, 5)} FLOPs → `{cmd}`")
    return lines


def _other_overrides(run: Run) -> list[str]:
    """The run's command-line overrides that a same-FLOPs single-level run keeps, a setting's
    value written from the run's resolved config (paths absolute, so the command runs from
    any directory) in Hydra's grammar (:func:`mltrain.config.overrides.override`)."""
    from omegaconf import OmegaConf

    path = run.path / ".hydra" / "overrides.yaml"
    try:
        overrides = list(OmegaConf.load(path)) if path.is_file() else []
    except Exception:
        return []
    # settings the baseline replaces, and those that do not change training (inert_keys)
    drop = ("coarsening", "train.seed", "train.steps", "train.target_flops", "hydra.", "logger")
    drop += inert_keys()
    out = []
    for o in map(str, overrides):
        left = o.split("=", 1)[0]
        key = left.lstrip("+~")
        if key.startswith(drop):
            continue
        out.append(override(left, run.flat[key]) if "=" in o and key in run.flat else o)
    return out


# --------------------------------------------------------------------------- the command
@dataclass
class Result:
    """What :func:`compare` computed and wrote."""

    summary: Summary | None  # None when only frontier runs were given
    judgement: object | None  # a mltrain.analysis.frontier.Judgement, or None without frontier runs
    out: Path
    markdown: str
    terminal: str
    files: list[Path]
    sizes: object | None = None  # a mltrain.analysis.envelope.EnvelopeJudgement (several sizes)


def compare(
    paths: Sequence[str | Path],
    out: Path | None = None,
    target: float | None = None,
    baseline: str | None = None,
    dpi: int = 110,
    frontier: Sequence[str | Path] = (),
    fit: str | None = None,
) -> Result:
    """Everything ``mltrain-compare`` does: read the runs, summarize, judge against the tuned
    frontier (runs under ``frontier`` and runs whose role is ``frontier``), write the plots,
    ``summary.md`` and ``summary.csv``. ``dpi``: resolution of the PNGs.

    Raises:
        CompareError: bad input (see :func:`find_runs`, :func:`choose_baseline`).
    """
    from mltrain.analysis import envelope, envelope_report, headline, plots, ratio_plot, report
    from mltrain.analysis import frontier as F

    if target is not None and not math.isfinite(target):
        raise CompareError(f"--target {target} is not a finite loss")
    if not paths and not frontier:
        raise CompareError("give run or sweep directories, or --frontier DIR")
    front_runs = find_runs(frontier) if frontier else []
    seen = {r.path.resolve() for r in front_runs}
    runs = [r for r in (find_runs(paths) if paths else []) if r.path.resolve() not in seen]
    front_runs += [r for r in runs if r.role == "frontier"]
    runs = [r for r in runs if r.role != "frontier"]
    if not runs and not front_runs:
        raise CompareError("no runs left to compare")
    for w in check_validation_sets(runs + front_runs):  # refuses different validation sets
        warn(w)
    for r in runs:  # the tables show its last evaluation: say it is not a final loss
        if (why := r.incomplete()) is not None:
            warn(
                f"warning: run {r.name} is unfinished ({why}): its numbers are its last evaluation"
            )
    configs = group_configurations(runs) if runs else []
    summary = summarize(configs, target, baseline) if configs else None
    judgement = F.judge(front_runs, configs) if front_runs else None
    if judgement is not None:  # thread counts and devices of the frontier runs matter too
        remarks = hardware_remarks(runs + front_runs)
        if summary is not None:
            summary.remarks = remarks
        else:
            judgement.warnings += remarks
    if judgement is not None and not judgement.frontiers:
        raise CompareError(
            "no frontier: " + ("; ".join(judgement.warnings) or "no usable frontier runs")
        )
    out = Path(out) if out is not None else Path((list(paths) or list(frontier))[0]) / "compare"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"cannot create the output directory {out}: {e.strerror}") from None
    files, notes = [], []
    if summary is not None:
        fig = plots.plot_losses(configs, summary)
        for ext in ("png", "svg"):
            fig.savefig(out / f"loss_vs_flops.{ext}", dpi=dpi)
            files.append(out / f"loss_vs_flops.{ext}")
        ratio = ratio_plot.plot_flops_ratio(summary)
        if ratio is None:
            (out / "flops_ratio.png").unlink(missing_ok=True)  # not a stale one from before
            notes.append(ratio_plot.no_ratio_reason(summary))
        else:
            ratio.savefig(out / "flops_ratio.png", dpi=dpi)
            files.append(out / "flops_ratio.png")
    if judgement is not None:
        from mltrain.analysis import frontier_plot

        frontier_plot.plot_frontier(judgement).savefig(out / "frontier.png", dpi=dpi)
        files.append(out / "frontier.png")
    sizes = envelope.judge_sizes(judgement.frontiers, configs) if judgement else None
    if sizes is not None:  # frontiers of several model sizes: the envelope over them
        files += envelope.write_outputs(sizes, out, dpi)
    lines = headline.headline(summary, judgement)
    hints = same_flops_hints(configs)
    md = report.markdown(summary, judgement, lines, notes, hints)
    fitted = envelope.fit_lines(sizes, fit) if sizes is not None and fit else []
    if sizes is not None:
        md += "\n" + "\n".join(envelope_report.markdown(sizes)) + "\n"
        md += "".join(f"\n    {x}" for x in fitted) + ("\n" if fitted else "")
    (out / "summary.md").write_text(md)
    files.append(out / "summary.md")
    if summary is not None:
        report.write_csv(summary, out / "summary.csv")
        files.append(out / "summary.csv")
    if judgement is not None:
        report.write_judge_csv(judgement, out / "frontier.csv")
        files.append(out / "frontier.csv")
    term = report.terminal(summary, judgement, lines, notes, hints)
    if sizes is not None:
        term += "\n\n" + "\n".join(envelope_report.terminal(sizes) + fitted)
    return Result(summary, judgement, out, md, term, files, sizes)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``mltrain-compare`` command: bad input is one line ``mltrain-compare: error: ...`` and exit status 2."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare single-level and multilevel runs: a headline, loss against FLOPs, "
        "wall-clock and fine steps, FLOPs-to-target ratios (same fine steps, same FLOPs), and "
        "each method's FLOP ratio r against the tuned single-level frontier.",
        epilog="Put --frontier after the run directories, or end its list with --: "
        "mltrain-compare RUNS --frontier F1 F2, or mltrain-compare --frontier F1 F2 -- RUNS.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="RUN_OR_SWEEP_DIR",
        help="run directories, or directories above them (multirun/sweep dirs); runs whose "
        "role is 'frontier' (run.json or logger.job_type) join the frontier",
    )
    parser.add_argument(
        "--frontier",
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="directories of tuned single-level runs (budgets train.target_flops x learning "
        "rates x seeds) that define the frontier L*(C); every other run is judged against it",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default: <first directory>/compare)",
    )
    parser.add_argument(
        "--target",
        type=float,
        metavar="LOSS",
        help="target validation loss in nats/token "
        "(default: the baseline's final validation loss, mean over seeds)",
    )
    parser.add_argument(
        "--baseline",
        metavar="LABEL",
        help="configuration label of the baseline (default: the single-level run with the "
        "same fine steps, 'single-level, same fine steps')",
    )
    parser.add_argument(
        "--dpi", type=int, default=110, metavar="N", help="resolution of the PNGs (default 110)"
    )
    parser.add_argument(
        "--fit",
        choices=("total", "nonembed"),
        help="with frontiers of several model sizes: also print the parametric fit L(N, D) = "
        "E + A/N^α + B/D^β (Hoffmann et al. 2022; N = total or non-embedding parameters) and "
        "its N*(C), D*(C), a model beside the measured envelope, never used for r",
    )
    args = parser.parse_args(argv)
    try:
        res = compare(
            args.paths, args.out, args.target, args.baseline, args.dpi, args.frontier, args.fit
        )
    except CompareError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(res.terminal)
    print(f"table and notes: {res.out / 'summary.md'}")
    print("files: " + " ".join(str(f) for f in res.files))
