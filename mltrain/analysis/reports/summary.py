"""The numbers of ``mltrain-compare``'s summary and its suggested runs: per configuration the
final validation loss, FLOPs-to-target and its ratios to every single-level configuration, the loss
at the largest FLOPs every run reached, the ratio curves against the baseline, the notes and
hardware flags (:func:`summarize`), and the command of a same-FLOPs single-level baseline for each
multilevel configuration (:func:`same_flops_hints`). FLOPs are counts of training FLOPs (with head,
or non-embedding), losses nats/token; the conventions are in :mod:`mltrain.analysis.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mltrain.analysis.judging.curves import (
    Bounded,
    Curve,
    curve_end,
    flops_ratio_curve,
    fmt_flops,
    loss_at_flops,
    ratio_levels,
    ratio_to_target,
    seeds_to_target,
)
from mltrain.analysis.judging.grouping import Configuration, setting_differences
from mltrain.analysis.judging.runs import (
    CAPPED,
    TOTALS,
    CompareError,
    Run,
    beside,
    configured_budget,
    read_run_json,
    short_of_budget,
)
from mltrain.analysis.judging.seeds import repeated_seeds
from mltrain.config import inert_keys
from mltrain.config.overrides import hydra_value, override, shell_command

SAME_BUDGET = 0.01  # FLOP totals within 1 % count as the same FLOPs


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
    ratios: dict[tuple[str, str], Bounded | None] = field(default_factory=dict)
    at_budget: tuple[float, float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def seeds(self) -> int:
        """Distinct seeds (runs repeating a seed count once)."""
        return self.config.seeds


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
    configs: list[Configuration],
    target: float | None = None,
    baseline: str | None = None,
    frontier: bool = False,
) -> Summary:
    """All numbers of the table: final losses, totals, FLOPs-to-target and its ratios to
    every single-level configuration (both totals, bounds where a curve never reaches the
    target), the losses at the largest FLOPs every run reached, the ratio curves against the
    baseline, and the notes/flags. ``frontier``: a tuned frontier judges ``configs`` (its
    single-level runs are not among them), said where there is no baseline."""
    base = choose_baseline(configs, baseline)
    if target is not None:
        source = "given with --target"
    elif base is not None:
        target = float(np.mean([r.final_val_loss for r in base.healthy]))
        n = len(base.healthy)
        source = f"final validation loss of `{base.label}`" + (
            "" if n == 1 else f", mean over {n} seeds"
        )
    elif frontier:  # the single-level runs given are budget-sized: the tuned frontier's
        source = (
            "none: the single-level runs are the tuned frontier's, which judges the methods "
            "(r below); give --target for a FLOPs-to-target table"
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
        if repeats := repeated_seeds(c.runs):
            row.notes.append("one seed repeated, counted once: " + "; ".join(repeats))
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
def same_flops(a: Configuration, b: Configuration) -> bool:
    """Whether two configurations spent the same FLOPs: their mean totals (with head) within
    :data:`SAME_BUDGET`, or both sized by the same budget (``train.target_flops`` ×
    ``train.flops_scale``, also within it; a budget-sized run spends up to half a step more or
    less), or one sized by a budget within it of what the other spent. A budget counts only
    when the plans reach it: a run capped short of it (``train.max_steps``,
    :func:`mltrain.analysis.judging.runs.short_of_budget`) spent fewer FLOPs than it names."""
    ma, mb = a.mean_total(), b.mean_total()
    if mb > 0 and abs(ma / mb - 1) <= SAME_BUDGET:
        return True

    def budget(c: Configuration) -> float | None:
        if any(short_of_budget(r) is not None for r in c.runs):
            return None
        return configured_budget(c.flat)

    ba, bb = budget(a), budget(b)
    if ba is not None and bb is not None:
        return abs(ba / bb - 1) <= SAME_BUDGET
    if bb is not None:
        return abs(ma / bb - 1) <= SAME_BUDGET
    if ba is not None and mb > 0:
        return abs(mb / ba - 1) <= SAME_BUDGET
    return False


def same_flops_hints(configs: list[Configuration]) -> list[str]:
    """For each multilevel configuration without a single-level one beside it that spent the
    same FLOPs (:func:`same_flops`), its FLOPs budget (with head, mean over seeds) and the
    command that runs a single-level baseline with the same FLOPs. A cap the run had
    (``train.max_steps``, which ``mode=smoke`` sets) is lifted with ``train.max_steps=null``:
    a single-level run needs more fine steps than a multilevel one for the same FLOPs, and a
    capped one would stop short of them."""
    singles = [s for s in configs if s.single_level and s.healthy and s.role != CAPPED]
    lines = []
    for c in configs:
        if c.single_level or not c.healthy or any(same_flops(c, s) for s in singles):
            continue
        budget = int(round(c.mean_total()))
        run = c.runs[0]
        target = beside(run.path, "single_level")
        if read_run_json(target).get("status") == "running":  # started, no evaluation yet
            lines.append(
                f"- `{c.label}`: {fmt_flops(budget, 5)} FLOPs → its single-level run is still "
                f"running in `{target}`: let it finish (or resume it with train.resume=auto)"
            )
            continue
        extra = [o for o in _other_overrides(run) if not o.startswith("train.max_steps=")]
        if run.flat.get("train.max_steps") is not None:
            extra.append(override("train.max_steps", None))
        # beside the method's run, so the same mltrain-compare over the folder above finds it
        extra.append(f"hydra.run.dir={hydra_value(str(target))}")
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
    # settings the baseline replaces (the budget it prints is the FLOPs spent, already scaled:
    # train.flops_scale would scale it again; a branch starts from another run's state), and
    # those that do not change training (inert_keys)
    drop = ("coarsening", "train.seed", "train.steps", "train.target_flops", "train.flops_scale")
    drop += ("train.branch_from", "hydra.", "logger")
    # inert settings but those that make it run as the method did (threads and device: its
    # time; evaluations: its curve; compiling; its branch points, [] included: left out, a
    # preset's would come back)
    same_way = ("train.threads", "train.device", "train.eval_every", "train.compile")
    same_way += ("train.compile_backend", "train.branch_points")
    drop += tuple(k for k in inert_keys() if k not in same_way)
    out = []
    for o in map(str, overrides):
        left = o.split("=", 1)[0]
        key = left.lstrip("+~")
        if key.startswith(drop):
            continue
        out.append(override(left, run.flat[key]) if "=" in o and key in run.flat else o)
    return out
