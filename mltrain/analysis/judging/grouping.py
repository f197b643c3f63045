"""Configurations of ``mltrain-compare``: runs grouped by what they train (:func:`identity`:
the config without seed and run-dir-like keys, :data:`mltrain.analysis.judging.runs.IGNORED`, and the role),
named for readers by role (``single-level, same fine steps``, ``single-level, same FLOPs``,
``multilevel even_odd δ=0.25 m=20 w=5``) plus the keys that differ (``optimizer=adamw``), and
the settings that make two runs train different data or models (:func:`setting_differences`).

What is scheme-specific (its label, the sections whose keys group its runs) is asked of the
run's :class:`mltrain.config.scheme.Scheme` (registered by :mod:`mltrain.schemes`, which
:mod:`mltrain.readback` imports; analysis/ never imports the schemes directly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mltrain.analysis.judging.curves import fmt_flops
from mltrain.analysis.judging.runs import (
    LABEL_KEYS,
    Run,
    _ignored,
    configured_budget,
    derive_role,
    is_single_level,
)
from mltrain.analysis.judging.seeds import by_seed
from mltrain.config import unread
from mltrain.config.scheme import fmt_value
from mltrain.readback import scheme_of

# Comparison roles (``run.json`` "role", W&B job type) and their names for readers.
ROLE_NAMES = {
    "multilevel": "multilevel",
    "single_level/same_steps": "single-level, same fine steps",
    "single_level/same_flops": "single-level, same FLOPs",
    "single_level/capped": "single-level, capped short of",  # + " <budget> FLOPs"
    "frontier": "tuned frontier",
}
# data.* and model.* keys that setting_differences leaves out beyond the schema's inert ones
# (IGNORED, e.g. data.cache_dir): the attention kernel (each computes the same function) and
# data.batch_size (compared as tokens per step).
SAME_TRAINING = ("model.attention", "data.batch_size")


def _unread(key: str, flat: dict) -> bool:
    """A coarsening setting that the run's scheme does not read (a staged run's V-cycle
    settings, a V-cycle run's stages: :func:`mltrain.config.unread`)."""
    return unread(key, flat.get("coarsening.scheme"), flat.get("coarsening.hierarchy.name"))


def identity(flat: dict, role: str | None = None) -> tuple:
    """What makes two runs the same configuration: the config without :data:`IGNORED` keys;
    for single-level runs without the (unused) coarsening settings, and without
    ``train.steps`` when ``train.target_flops`` sets the length; and the run's role when
    given (two roles are two configurations even with equal configs)."""
    single = is_single_level(flat)
    out = {}
    for k, v in flat.items():
        if _ignored(k) or (single and k.startswith("coarsening.")) or _unread(k, flat):
            continue
        if k == "train.steps" and flat.get("train.target_flops") is not None:
            continue
        out[k] = v
    out["single_level"] = single
    if role is not None:
        out["role"] = role
    return tuple(sorted(out.items(), key=lambda kv: kv[0]))


@dataclass
class Configuration:
    """Runs that differ only by seed (:func:`identity`), with a readable label.

    Diverged runs and runs without a training step stay in ``runs`` (they are listed as
    such) but never count in a mean: :attr:`healthy` holds the others."""

    runs: list[Run]
    label: str = ""

    @property
    def flat(self) -> dict:
        return self.runs[0].flat

    @property
    def role(self) -> str:
        """The role of its runs (:attr:`mltrain.analysis.judging.runs.Run.role`)."""
        return self.runs[0].role

    @property
    def single_level(self) -> bool:
        """No coarsening that runs (:func:`mltrain.analysis.judging.runs.is_single_level`)."""
        return is_single_level(self.flat)

    @property
    def same_flops(self) -> bool:
        """A single-level run sized by ``train.target_flops`` (role ``single_level/same_flops``)."""
        return self.role == "single_level/same_flops"

    @property
    def healthy(self) -> list[Run]:
        """The runs that trained (at least one optimizer step) and did not diverge."""
        return [r for r in self.runs if not r.diverged and r.trained]

    @property
    def untrained(self) -> list[Run]:
        """The runs with no training step (stopped after the step-0 evaluation): listed as
        such, never a final loss, a ratio, a baseline or a suggested command."""
        return [r for r in self.runs if not r.diverged and not r.trained]

    @property
    def diverged(self) -> list[Run]:
        """The runs that diverged."""
        return [r for r in self.runs if r.diverged]

    @property
    def seeds(self) -> int:
        """Distinct seeds of its runs (runs that repeat a seed count once)."""
        return len(by_seed(self.runs))

    def mean_total(self, total: str = "head") -> float:
        """Training FLOPs (counts) of the whole run, mean over the runs that did not diverge
        (NaN if all did)."""
        runs = self.healthy
        return float(np.mean([r.total(total) for r in runs])) if runs else math.nan

    def diverged_text(self) -> str:
        """``diverged at step N`` (one seed), or ``seed 2 diverged at step N; ...``."""
        bad = self.diverged
        if len(self.runs) == 1 and bad:
            return bad[0].diverged_text
        return "; ".join(f"seed {r.seed} {r.diverged_text}" for r in bad)


def _relevant(key: str, flat: dict) -> bool:
    """Whether ``key`` means anything for this configuration (coarsening settings do not for
    a single-level run, ``train.steps`` does not when ``train.target_flops`` is set)."""
    if key.startswith("coarsening.") and (is_single_level(flat) or _unread(key, flat)):
        return False
    return not (key == "train.steps" and flat.get("train.target_flops") is not None)


def _differing_keys(flats: list[dict], skip: Sequence[str] = LABEL_KEYS) -> list[str]:
    keys = sorted({k for f in flats for k in f})
    out = []
    for k in keys:
        if _ignored(k) or k in skip:
            continue
        groups: dict = {}
        for f in flats:  # optimizer.* compared among runs of the same optimizer class only
            if _relevant(k, f):
                sub = (
                    f.get("optimizer._target_")
                    if k.startswith("optimizer.") and k != "optimizer._target_"
                    else None
                )
                groups.setdefault(sub, set()).add(fmt_value(f.get(k)))
        if any(len(v) > 1 for v in groups.values()):
            out.append(k)
    return out


def optimizer_name(flat: dict) -> str:
    """``sgd``, ``adamw``, ...: the optimizer class, lower case."""
    return str(flat.get("optimizer._target_", "?")).rsplit(".", 1)[-1].lower()


def label_suffixes(flats: list[dict], skip: Sequence[str] = LABEL_KEYS) -> list[str]:
    """For each config, `` key=value`` for every key that differs between ``flats`` (the
    leaf name when it is unique, ``optimizer=adamw`` for the optimizer class)."""
    keys = _differing_keys(flats, skip)
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    out = []
    for f in flats:
        label = ""
        for k, leaf in zip(keys, leaves):
            if not _relevant(k, f) or k not in f:
                continue
            if k == "optimizer._target_":
                label += f" optimizer={optimizer_name(f)}"
            elif k.endswith(".name"):  # a config group's option: schedule=wsd, data=sotu
                label += f" {k[: -len('.name')]}={fmt_value(f[k])}"
            else:
                label += f" {leaf if leaves.count(leaf) == 1 else k}={fmt_value(f[k])}"
        out.append(label)
    return out


def scheme_label(flat: dict, levels: dict | None = None) -> str:
    """The scheme in a few words, as the run's :class:`mltrain.config.scheme.Scheme` names it
    (:attr:`~mltrain.config.scheme.Scheme.label`): ``even_odd δ=0.25 m=20 w=5`` for a V-cycle,
    ``coarse-to-fine 6 → 12 blocks at 0.7/0.3 of the FLOPs, grow ode`` for coarse-to-fine
    stages (``levels``: ``run.json``'s), ``random sub-paths raptr_6 0.25 → ...`` for RaPTr; the
    scheme's name when this version does not know it."""
    scheme = scheme_of(flat)
    return scheme.label(flat, levels) if scheme else str(flat.get("coarsening.scheme"))


def base_label(flat: dict, role: str | None = None, levels: dict | None = None) -> str:
    """The reader's name of a role: ``single-level, same fine steps``, ``single-level, same
    FLOPs``, ``multilevel <coarsening> δ=.. m=.. w=..``, ``tuned frontier``, or a user's role
    string (followed by the coarsening for a multilevel run); ``levels``: ``run.json``'s, which
    name a staged run's models by their blocks."""
    role = role or derive_role(flat)
    coarse = scheme_label(flat, levels)
    if role == "multilevel":  # staged schemes name themselves (Scheme.names_itself)
        scheme = scheme_of(flat)
        return coarse if scheme and scheme.names_itself else f"multilevel {coarse}"
    if role in ROLE_NAMES:
        return ROLE_NAMES[role]
    return role if is_single_level(flat) else f"{role} {coarse}"


def _config_order(c: Configuration) -> int:
    return {"single_level/same_steps": 0, "single_level/same_flops": 1}.get(
        c.role, 2 if c.single_level else 3
    )


def group_configurations(runs: list[Run]) -> list[Configuration]:
    """Group ``runs`` into configurations (:func:`identity`, by role too) and label them.

    Order: single-level same fine steps, single-level same FLOPs, other single-level roles,
    then the others, each in the order their first run was found.
    """
    by_id: dict[tuple, Configuration] = {}
    for run in runs:
        by_id.setdefault(identity(run.flat, run.role), Configuration([])).runs.append(run)
    configs = list(by_id.values())
    for c in configs:
        c.runs.sort(key=lambda r: (str(r.seed), r.name))
    configs.sort(key=_config_order)  # stable
    budgets = {configured_budget(c.flat) for c in configs if c.same_flops}
    suffixes = label_suffixes([c.flat for c in configs])
    for c, suffix in zip(configs, suffixes):
        label = base_label(c.flat, c.role, c.runs[0].meta.get("levels"))
        target = configured_budget(c.flat)
        if target is not None and (len(budgets) > 1 or not c.same_flops):
            label += f" {fmt_flops(float(target), 2)} FLOPs"
        c.label = label + suffix
    seen: dict[str, int] = {}
    for c in configs:
        n = seen[c.label] = seen.get(c.label, 0) + 1
        if n > 1:
            c.label += f" #{n}"
    return configs


# --------------------------------------------------------------------------- settings
def tokens_per_step(run: Run) -> float:
    """Tokens per fine optimizer step: ``data.batch_size × model.seq_len × train.grad_accum``
    × processes (``run.json`` world, 1 when not recorded)."""
    f = run.flat
    try:
        return float(f["data.batch_size"] * f["model.seq_len"] * f.get("train.grad_accum", 1)) * (
            run.world
        )
    except (KeyError, TypeError):
        return math.nan


def setting_differences(a: Run, b: Run) -> dict[str, list[str]]:
    """What makes ``a`` train on different data or a different model than ``b``, by part:
    ``{"model": ["model.n_layer=6"], "data": [...], "tokens per step": ["4096 vs 2048"]}``
    (``model.*`` and ``data.*`` keys except :data:`IGNORED` and :data:`SAME_TRAINING`, values
    of ``a``; tokens per step by
    :func:`tokens_per_step`); parts without differences are left out."""
    out: dict[str, list[str]] = {}
    for k in sorted(set(a.flat) | set(b.flat)):
        if (
            k.startswith(("data.", "model."))
            and not _ignored(k)
            and k not in SAME_TRAINING
            and a.flat.get(k) != b.flat.get(k)
        ):
            out.setdefault(k.split(".", 1)[0], []).append(f"{k}={fmt_value(a.flat.get(k))}")
    ta, tb = tokens_per_step(a), tokens_per_step(b)
    if ta != tb and not (math.isnan(ta) and math.isnan(tb)):
        out["tokens per step"] = [f"{ta:g} vs {tb:g}"]
    return out


def optimizer_differences(a: Run, b: Run) -> dict[str, list[str]]:
    """``{"optimizer": ["optimizer=sgd"]}`` when ``a`` trains with another optimizer class
    (``optimizer._target_``) than ``b`` (the name of ``a``'s, :func:`optimizer_name`); empty
    when they agree. A judge's runs are tuned with their own optimizer: a ratio against them
    compares optimizers as well as methods."""
    if a.flat.get("optimizer._target_") == b.flat.get("optimizer._target_"):
        return {}
    return {"optimizer": [f"optimizer={optimizer_name(a.flat)}"]}
