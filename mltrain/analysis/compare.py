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
                       (:mod:`mltrain.analysis.judging.frontier`)
    frontier.csv       with frontier runs: r and the gap of every run judged, per seed

The terminal shows the headline (:mod:`mltrain.analysis.reports.headline`) and a compact table; the wide one is
in ``summary.md``. The numbers of the table and the suggested same-FLOPs runs are computed in
:mod:`mltrain.analysis.reports.summary`.

Conventions: FLOPs are counts of training FLOPs (``perf/flops``, with the head, and
``perf/flops_nonembed``; evaluation FLOPs are not included), losses are in nats/token.

- A *configuration* is a set of runs whose configs are equal except for ``train.seed`` and
  run-dir / logger / device-like keys (:data:`mltrain.analysis.judging.runs.IGNORED`) and that have the same
  role; its seeds are aggregated (mean line, min-max band in the plots; the seed-mean curve in
  the table). Names: "single-level, same fine steps", "single-level, same FLOPs"
  (``train.target_flops`` set), "multilevel <coarsening> δ=.. m=.. w=..", plus ``key=value``
  for each other key that differs between the configurations compared.
- Diverged runs (``run.json`` status ``diverged``, or a non-finite loss in the
  records) are listed as "diverged at step N", never get a final loss, never count in a seed
  mean, and are never a baseline or a frontier point.
- Validation sets: runs whose ``run.json`` records different validation sets (fingerprints of
  the window tokens) are refused, one line naming the runs; runs without one (an earlier
  mltrain) are compared with a warning (:mod:`mltrain.analysis.judging.valsets`).
- Baseline: the "same fine steps" single-level configuration (``--baseline`` picks another).
  The target loss defaults to the baseline's final validation loss (mean over seeds). Ratios
  are reported against every single-level configuration present.
- FLOPs-to-target: on the seed-mean validation curve, linear interpolation of FLOPs in loss
  between the last evaluation above the target and the first at or below it
  (:func:`mltrain.analysis.judging.curves.flops_to_target`). A curve that never reaches the target gives a
  bound on the ratio, never "n/a" (:func:`mltrain.analysis.judging.curves.ratio_to_target`).
- Same-FLOPs losses: each configuration's validation loss at the largest FLOPs (with head)
  every run reached, interpolated linearly in FLOPs (:func:`mltrain.analysis.judging.curves.loss_at_flops`).
- Tuned frontier: runs under ``--frontier`` directories, and runs whose role is ``frontier``,
  define L*(C) (DESIGN.md section 8; Kaddour et al. 2023, arXiv 2307.06440); every other
  configuration gets r = C / C*(L) and the gap L - L*(C) (:mod:`mltrain.analysis.judging.frontier`).
- Training loss is plotted for fine-level steps only (a coarse step's loss belongs to a
  different network), smoothed by a trailing running mean over ``max(1, n // 50)`` fine
  steps (n: the run's fine steps), see :func:`mltrain.analysis.figures.plots.running_mean`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mltrain.analysis.judging.budgets import short_of_budget
from mltrain.analysis.judging.curves import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    Bounded,
    Curve,
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
from mltrain.analysis.judging.grouping import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    Configuration,
    fmt_value,
    group_configurations,
    setting_differences,
    tokens_per_step,
)
from mltrain.analysis.judging.runs import (  # noqa: F401  (re-exported: the public API of mltrain-compare)
    PROG,
    TOTALS,
    CompareError,
    Run,
    find_runs,
    load_run,
    warn,
)
from mltrain.analysis.judging.valsets import check_validation_sets
from mltrain.analysis.reports.summary import (  # noqa: F401  (SAME_BUDGET re-exported)
    SAME_BUDGET,
    Summary,
    hardware_remarks,
    same_flops_hints,
    summarize,
)


# --------------------------------------------------------------------------- the command
@dataclass
class Result:
    """What :func:`compare` computed and wrote."""

    summary: Summary | None  # None when only frontier runs were given
    judgement: (
        object | None
    )  # a mltrain.analysis.judging.frontier.Judgement, or None without frontier runs
    out: Path
    markdown: str
    terminal: str
    files: list[Path]
    sizes: object | None = (
        None  # a mltrain.analysis.judging.envelope.EnvelopeJudgement (several sizes)
    )


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
        CompareError: bad input (see :func:`find_runs`,
        :func:`mltrain.analysis.reports.summary.choose_baseline`).
    """
    from mltrain.analysis.figures import plots, ratio_plot
    from mltrain.analysis.judging import envelope, scaling_fit
    from mltrain.analysis.judging import frontier as F
    from mltrain.analysis.reports import envelope_report, headline, report

    if target is not None and not math.isfinite(target):
        raise CompareError(f"--target {target} is not a finite loss")
    if not paths and not frontier:
        raise CompareError("give run or sweep directories, or --frontier DIR")
    front_runs = find_runs(frontier) if frontier else []
    seen = {r.path.resolve() for r in front_runs}
    runs = [r for r in (find_runs(paths) if paths else []) if r.path.resolve() not in seen]
    front_runs += [r for r in runs if r.role == "frontier"]
    runs = [r for r in runs if r.role != "frontier"]
    for r in runs:  # a frontier run that has not evaluated stays: its seed is not asked for
        if not len(r.val.loss) and not r.diverged:
            warn(f"skipping {r.path}: still running, no evaluation yet")
    runs = [r for r in runs if len(r.val.loss) or r.diverged]
    if not runs and not front_runs:
        raise CompareError("no runs left to compare")
    for w in check_validation_sets(runs + front_runs):  # refuses different validation sets
        warn(w)
    for r in runs:  # the tables show its last evaluation: say it is not a final loss
        if (why := r.incomplete()) is not None:
            warn(
                f"warning: run {r.name} is unfinished ({why}): its numbers are its last evaluation"
            )
        elif (why := short_of_budget(r)) is not None:  # mode=smoke: judged by what it spent
            warn(f"warning: run {r.name}: {why}; its numbers are those of its shorter plan")
    configs = group_configurations(runs) if runs else []
    summary = summarize(configs, target, baseline, bool(front_runs)) if configs else None
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
            notes.append(ratio_plot.no_ratio_reason(summary, judgement is not None))
        else:
            ratio.savefig(out / "flops_ratio.png", dpi=dpi)
            files.append(out / "flops_ratio.png")
    if judgement is not None:
        from mltrain.analysis.figures import frontier_plot

        frontier_plot.plot_frontier(judgement).savefig(out / "frontier.png", dpi=dpi)
        files.append(out / "frontier.png")
    sizes = envelope.judge_sizes(judgement.frontiers, configs) if judgement else None
    if sizes is not None:  # frontiers of several model sizes: the envelope over them
        files += write_envelope_outputs(sizes, out, dpi)
    lines = headline.headline(summary, judgement)
    hints = same_flops_hints(configs)
    md = report.markdown(summary, judgement, lines, notes, hints, sizes)
    fitted = scaling_fit.envelope_fit_lines(sizes, fit) if sizes is not None and fit else []
    if sizes is not None:
        md += "\n" + "\n".join(envelope_report.envelope_markdown(sizes)) + "\n"
        md += "".join(f"\n    {x}" for x in fitted) + ("\n" if fitted else "")
    (out / "summary.md").write_text(md)
    files.append(out / "summary.md")
    if summary is not None:
        report.write_csv(summary, out / "summary.csv")
        files.append(out / "summary.csv")
    if judgement is not None:
        report.write_judge_csv(judgement, out / "frontier.csv")
        files.append(out / "frontier.csv")
    term = report.terminal(summary, judgement, lines, notes, hints, sizes)
    if sizes is not None:
        term += "\n\n" + "\n".join(envelope_report.envelope_terminal(sizes) + fitted)
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


def write_envelope_outputs(ej, out, dpi: int = 110) -> list:
    """Write ``isoflop.png``, ``envelope.png`` and ``envelope.csv`` into ``out``; their paths."""
    from mltrain.analysis.figures import isoflop_plot
    from mltrain.analysis.reports import envelope_report

    out = Path(out)
    files = [out / "isoflop.png", out / "envelope.png", out / "envelope.csv"]
    isoflop_plot.plot_isoflop(ej).savefig(files[0], dpi=dpi)
    isoflop_plot.plot_envelope(ej).savefig(files[1], dpi=dpi)
    envelope_report.write_envelope_csv(ej, files[2])
    return files
