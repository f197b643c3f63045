"""Warmup–stable–decay branches: a frontier for the price of one run plus short decays.

With a warmup–stable–decay schedule (Hägele et al. 2024, arXiv 2405.18392) the LR before the
decay does not depend on the run's length (:func:`mltrain.train.optim.wsd_decay_start`), and
neither do the batches (the sampler depends on the seed only). So one *trunk* at the largest
budget passes through the state of every shorter run at the step where that run's decay starts,
and a run at a smaller budget can start there instead of from step 0: a *branch*.

- Trunk: ``train.branch_points=[s1, s2, ...]`` (budgets as multiples of ``train.target_flops``,
  each below the trunk's own ``train.flops_scale``): at each budget's decay start it writes its
  full state to ``<run>/branches/ckpt_<step>.pt`` (kept, never rotated away).
- Branch: ``train.branch_from=<trunk run dir>`` with its own ``train.flops_scale``: it starts
  from the trunk's state at its decay start (its ``metrics.jsonl`` holds the trunk's records up
  to there) and runs its decay. It is the same run, bit for bit at the same thread count, as
  the run without ``branch_from`` (tests/train/test_branch.py); ``run.json`` records the trunk and
  the step (``branch``), and it resumes like any run (``train.resume=auto``).

Cost: k sizes × l learning rates × m budgets cost k·l trunks plus the decays (a fraction
``schedule.decay_fraction`` of each smaller budget) instead of k·l·m whole runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mltrain.config.overrides import override, shell_command
from mltrain.errors import CheckpointError, ConfigError
from mltrain.train import checkpoint as ckpt
from mltrain.train.optim import wsd_decay_start

BRANCH_DIR = "branches"
# what a branch may set differently from its trunk: its budget
BUDGET_KEYS = ("train.flops_scale", "train.target_flops", "train.steps", "train.max_steps")


def _require_wsd(cfg, plan, key: str) -> None:
    """Refuse ``key`` unless the run is wsd with a FLOPs budget and (given its ``plan``; None
    before there is one) single-level."""
    if cfg.schedule.name != "wsd":
        raise ConfigError(
            f"{key} needs schedule=wsd (warmup-stable-decay), not schedule.name="
            f"{cfg.schedule.name}: only there does the LR before the decay not depend on the budget"
        )
    if plan is not None and (plan.multilevel or len(plan.levels) > 1):
        raise ConfigError(f"{key} needs a single-level run (coarsening=none)")
    if cfg.train.target_flops is None:
        raise ConfigError(f"{key} needs train.target_flops (branches differ by their budget)")


def trunk_points(cfg, plan, plan_at) -> dict[int, float]:
    """The steps at which a trunk writes its branch points: ``{decay start: flops_scale}``.

    Args:
        cfg: the typed config (:class:`mltrain.config.MLTrainConfig`).
        plan: this run's plan; plan_at: ``flops_scale -> Plan`` of the same run at that budget.

    Raises:
        ConfigError: not wsd, not single-level, no ``train.target_flops``, or a point not
            below the trunk's own budget.
    """
    scales = list(cfg.train.branch_points)
    if not scales:
        return {}
    _require_wsd(cfg, plan, "train.branch_points")
    out = {}
    for s in scales:
        if not (isinstance(s, int | float) and 0 < s < cfg.train.flops_scale):
            raise ConfigError(
                f"train.branch_points={scales}: each must be a budget scale > 0 and below this "
                f"trunk's train.flops_scale={cfg.train.flops_scale:g}"
            )
        out[wsd_decay_start(plan_at(float(s)).iterations, cfg.schedule)] = float(s)
    return out


def check_trunk_dir(cfg) -> Path:
    """The trunk directory of a branch (``train.branch_from``), checked with the settings a
    branch needs that its config alone decides, before anything slow (the corpus is tokenized
    after it), so a mistake is refused alone. An empty value (an unset ``$TRUNK``) is refused,
    not read as "no trunk".

    Raises:
        ConfigError: ``train.branch_from`` is empty or not a run directory (no ``.hydra/`` in
            it), or the run is not wsd or has no ``train.target_flops``.
    """
    given = override("train.branch_from", cfg.train.branch_from)
    if not str(cfg.train.branch_from).strip():
        raise ConfigError(
            f"{given}: empty; give the trunk's run directory, or leave the setting out for a "
            "whole run"
        )
    _require_wsd(cfg, None, "train.branch_from")  # what the config alone decides
    trunk = Path(cfg.train.branch_from).expanduser()
    if not (trunk / ".hydra").is_dir():
        raise ConfigError(f"{given}: not a run directory")
    return trunk


def branch_start(cfg, plan) -> tuple[Path, int]:
    """The trunk's branch point a branch starts from: (checkpoint path, step).

    Raises:
        ConfigError: not wsd / single-level / sized by budget, or the trunk is not a run dir.
        CheckpointError: the trunk has no point at this branch's decay start (names the points
            it has and the setting that adds this one).
    """
    _require_wsd(cfg, plan, "train.branch_from")
    trunk = check_trunk_dir(cfg)
    step = wsd_decay_start(plan.iterations, cfg.schedule)
    path = ckpt.checkpoint_path(trunk / BRANCH_DIR, step)
    if not path.is_file():
        have = [int(p.stem.split("_")[1]) for p in ckpt.list_checkpoints(trunk / BRANCH_DIR)]
        raise CheckpointError(
            f"train.branch_from={trunk}: no branch point at step {step} (where the decay of "
            f"train.flops_scale={cfg.train.flops_scale:g} starts); the trunk has "
            + (f"steps {', '.join(map(str, have))}" if have else "none")
            + f"; {_trunk_command(trunk, float(cfg.train.flops_scale))}"
        )
    return path, step


def _trunk_command(trunk: Path, scale: float) -> str:
    """What to run for a trunk that has a branch point at ``scale``: the trunk's own command
    (its ``.hydra/overrides.yaml``) with ``scale`` added to ``train.branch_points``, and with a
    larger ``train.flops_scale`` (twice ``scale``) when ``scale`` is not below the trunk's own
    (a branch point must be: :func:`trunk_points`)."""
    from omegaconf import OmegaConf

    try:
        train = OmegaConf.load(trunk / ".hydra" / "config.yaml").train
        own, points = float(train.flops_scale), [float(p) for p in train.branch_points]
    except Exception:  # not readable: say what to add
        return f"run the trunk with {scale:g} in train.branch_points"
    new_scale = own if scale < own else 2 * scale
    settings = [override("train.branch_points", sorted({*points, scale}))]
    why = "run the trunk again"
    if new_scale != own:
        settings.insert(0, override("train.flops_scale", new_scale))
        why = (
            f"a branch's budget must be below its trunk's (train.flops_scale={own:g}): run this "
            "budget without train.branch_from, or a trunk with a larger budget"
        )
    try:
        given = [str(a) for a in OmegaConf.load(trunk / ".hydra" / "overrides.yaml")]
    except Exception:
        return f"{why} with {shell_command(settings)}"
    keys = {a.split("=", 1)[0] for a in settings}
    kept = [a for a in given if a.split("=", 1)[0].lstrip("+") not in keys]
    return f"{why} with {scale:g} in train.branch_points: {shell_command(['mltrain', *kept, *settings])}"


def check_point(state: dict, path: Path, *, config: dict, data_fingerprint: str) -> None:
    """Whether a trunk's branch point may start this branch: the same settings except the
    budget (:data:`BUDGET_KEYS`) and the same tokens.

    Raises:
        CheckpointError: every setting that differs (with the trunk's values to give), or
            other data.
    """

    def strip(c: dict) -> dict:
        c = {**c, "train": dict(c.get("train", {}))}
        for k in BUDGET_KEYS:
            c["train"].pop(k.split(".", 1)[1], None)
        return c

    differences = ckpt.config_differences(strip(state.get("config", {})), strip(config))
    if differences:
        trunk = path.parent.parent
        named = ", ".join(f"{k} (trunk {was}, here {now})" for k, was, now in differences)
        fix = [override(k, was) for k, was, _ in differences if was != "<unset>"]
        raise CheckpointError(
            f"train.branch_from={trunk}: this branch's settings differ from its trunk's in "
            f"{named}; a branch may change only its budget ({', '.join(BUDGET_KEYS)})"
            + (f": give it the trunk's, {shell_command(fix)}" if fix else "")
        )
    data = state.get("data_fingerprint")
    if data is not None and data != data_fingerprint:
        raise CheckpointError(f"train.branch_from: {path} was trained on other tokens")


def plan_at_scale(cfg, build):
    """``flops_scale -> Plan``: ``build(config)`` of ``cfg`` with another ``train.flops_scale``."""

    def at(scale: float):
        return build(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, flops_scale=scale))
        )

    return at
