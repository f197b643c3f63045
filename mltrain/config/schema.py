"""Typed configuration: the schemas Hydra composes into, each field with its range check and
its tags, and the conversion to typed objects that the components receive.

Every config group of ``conf/`` extends one schema registered here in Hydra's ConfigStore
(`Hydra structured configs <https://hydra.cc/docs/tutorials/structured_config/schema/>`_), so a
mistyped key or a value of the wrong type is rejected by Hydra while composing, before any
file is written. :func:`validate` then applies each field's own check (declared next to the
field with :func:`setting`) and the few cross-field rules, raising :class:`ConfigError` with
one line that names the setting and what is allowed. :func:`typed` converts a validated config
into these dataclasses once; each component receives its own section.

Where defaults live: **the dataclasses below are the source of every default**. A file of a
config group (``conf/<group>/<option>.yaml``) sets only what differs for that option, a preset
(``conf/experiment/*.yaml``) only what differs for that experiment. ``mltrain --cfg job``
prints the composed result.

Tags (field metadata): ``inert=True`` marks a setting that does not change training (where
the run is stored or shown, how often it is evaluated or checkpointed, ...). The one list
:func:`inert_keys` derived from the tags is what a resume may change, what
``mltrain-compare`` ignores when it groups runs into configurations and drops from the
commands it prints, and what Hydra leaves out of sweep job directory names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from mltrain.config.registries import (
    CORPORA,
    GROWTH,
    HIERARCHIES,
    SCHEDULES,
    STATE_POLICIES,
    registered_check,
)
from mltrain.config.scheme import SCHEMES
from mltrain.registry import Registry

# --------------------------------------------------------------------------- field helpers
Check = Callable[[Any], str | None]  # value -> what is allowed (when the value is not), or None


def setting(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    check: Check | None = None,
    choices: tuple[str, ...] | Registry | None = None,
    inert: bool = False,
):
    """A schema field with its range ``check`` (a function; for a check owned above the config
    layer, :func:`mltrain.config.registries.registered_check`), its allowed ``choices`` (a
    tuple, or a :class:`mltrain.registry.Registry` of :mod:`mltrain.config.registries` whose
    names are allowed, filled by the module that owns the values) and whether it is ``inert``
    (does not change training)."""
    meta = {"check": check, "choices": choices, "inert": inert}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def positive(v) -> str | None:
    return None if v is None or (math.isfinite(v) and v > 0) else "a number > 0"


def non_negative(v) -> str | None:
    return None if v is None or (math.isfinite(v) and v >= 0) else "a number >= 0"


def at_least(n: int, integer: bool = False) -> Check:
    what = f"an integer >= {n}" if integer else f">= {n}"
    return lambda v: None if v >= n else what


def within(lo: float, hi: float, left: str = "[", right: str = "]") -> Check:
    """Membership in an interval; ``left``/``right`` are ``[``/``(`` and ``]``/``)``."""

    def check(v):
        ok_lo = v >= lo if left == "[" else v > lo
        ok_hi = v <= hi if right == "]" else v < hi
        return None if ok_lo and ok_hi and math.isfinite(v) else f"in {left}{lo}, {hi}{right}"

    return check


def _device(v: str) -> str | None:
    ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
    return None if ok else "choose auto, cpu, cuda or cuda:<index>"


# --------------------------------------------------------------------------- schemas
@dataclass
class ModelConfig:
    """The ODE-Transformer (see :mod:`mltrain.model.transformer`)."""

    n_layer: int = setting(12, check=positive)  # blocks of the fine level
    n_embd: int = setting(128, check=positive)  # residual width d
    n_head: int = setting(4, check=positive)
    seq_len: int = setting(128, check=positive)  # training/evaluation sequence length T (tokens)
    block_size: int = setting("${.seq_len}", check=positive)  # positional rows; >= seq_len
    dropout: float = setting(0.0, check=within(0, 1, "[", ")"))
    bias: bool = True
    vocab_size: int | None = setting(None, check=positive)  # embedding rows; None: the tokenizer's
    attention: str = setting("sdpa", choices=("sdpa", "explicit"))  # explicit: for FLOP counting


@dataclass
class HierarchyConfig:
    """Which coarse levels exist (:mod:`mltrain.levels`): depth paths, patch levels, random
    sub-paths. ``coarsening.hierarchy.name`` chooses the builder."""

    name: str = setting("none", choices=HIERARCHIES)
    step_scale: float = setting(2.0, check=positive)  # coarse step size h = step_scale * 1
    factor: int = setting(2, check=at_least(2, integer=True))  # recursive: coarsening factor c
    depth: int = setting(2, check=at_least(1, integer=True))  # recursive: number of coarse levels
    blocks: list[list[int]] = setting(factory=list)  # custom: one block list per level
    step_sizes: list[float] = setting(factory=list)  # custom: h per level (default N/len)
    # width levels (mltrain.levels.width; Zou et al. 2024): c >= 2 runs every coarse level at
    # width d/c on its own tensors (name=width: one narrow level over all blocks, c at least 2)
    width_factor: int = setting(1, check=at_least(1, integer=True))
    # one width factor per coarse level, in hierarchy order (1: that level keeps width d);
    # overrides width_factor when given, e.g. recursive [1,2]: coarse_2 narrow, coarse_1 not
    width_factors: list[int] = setting(
        factory=list, check=lambda v: None if all(x >= 1 for x in v) else "integers >= 1"
    )
    # what every multilevel run (V-cycle or stages) does with its levels: the optimizer state
    # across them (separate | shared | reset) and whether coarse levels train the shared tensors
    optimizer_state: str = setting("separate", choices=STATE_POLICIES)
    train_shared: bool = True  # embeddings / final norm / head train on coarse levels


@dataclass
class VCycleConfig:
    """The V-cycle (Lauga et al. 2025; DESIGN.md section 1; :mod:`mltrain.schemes.vcycle`):
    coarse phases after fine steps, transferred back with Eq. 4, and where they are placed."""

    delta: float = setting(0.25, check=within(0, 1))  # prolongation weight, Eq. 4
    # width levels' interpolation weight (Zou et al. 2024): the same lerp as Eq. 4 with
    # decoalesce(narrow) as theta_after; None: delta
    alpha: float | None = setting(None, check=lambda v: None if v is None else within(0, 1)(v))
    coarse_steps: int = setting(20, check=at_least(0))  # optimizer steps per coarse phase
    window: int = setting(5, check=at_least(0))  # fine iterations that run coarse phases
    # V-cycles at fine iterations start, start+every, ... below the window (window_fraction:
    # the window as a share of the run's iterations, overriding window when set)
    start: int = setting(0, check=at_least(0))
    every: int = setting(1, check=at_least(1, integer=True))
    window_fraction: float | None = setting(None, check=within(0, 1, "(", "]"))
    combine: str = setting("sequential", choices=("sequential", "summed"))
    fine_step: str = setting("before", choices=("before", "after"))  # relative to coarse phases
    coarse_lr_scale: float = setting(1.0, check=non_negative)  # coarse LR = fine LR * this


@dataclass
class CorrectionsConfig:
    """Better coarse corrections of the V-cycle (:mod:`mltrain.schemes.corrections`), all off
    by default."""

    tau: str = setting("none", choices=("none", "exact", "cheap"))  # first-order coherence
    line_search: str = setting("none", choices=("none", "grid", "parabola"))  # delta per phase
    line_search_max: float = setting(2.0, check=positive)  # largest delta the search tries
    line_search_batch: int | None = setting(None, check=positive)  # sequences; None: global batch
    momentum: float = setting(0.0, check=within(0, 1, "[", ")"))  # outer momentum beta


@dataclass
class StagesConfig:
    """Coarse-to-fine stages (:mod:`mltrain.schemes.stages`): the levels trained in order, each
    for its share of the budget, with a growth (:mod:`mltrain.schemes.growth`) at each change."""

    levels: list[str] = setting(factory=list)
    shares: list[float] = setting(factory=list)  # of the run's training FLOPs, adding up to 1
    grow_init: str = setting("ode", choices=GROWTH)
    grow_warmup: int = setting(0, check=at_least(0))  # LR re-warm-up steps of new blocks


@dataclass
class PatchConfig:
    """Sequence coarsening (:mod:`mltrain.levels.patch`; Shao et al. 2025)."""

    size: int = setting(
        1, check=at_least(1, integer=True)
    )  # tokens per position K of coarse levels


@dataclass
class RaPTrConfig:
    """Random sub-paths (:mod:`mltrain.levels.raptr`; Panigrahi et al. 2024)."""

    blocks: list[int] = setting(factory=list)  # path length p of each raptr_<p> level
    scale: str = setting("inverse", choices=("inverse", "none"))  # sampled block's step


@dataclass
class CoarseningConfig:
    """The multilevel scheme: ``scheme`` says which one runs, each concern has its section."""

    # single_level: the fine level only; vcycle: coarse phases inside fine iterations
    # (``vcycle`` and ``corrections`` sections); stages: coarse-to-fine (``stages`` section)
    scheme: str = setting("single_level", choices=SCHEMES)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    vcycle: VCycleConfig = field(default_factory=VCycleConfig)
    corrections: CorrectionsConfig = field(default_factory=CorrectionsConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    raptr: RaPTrConfig = field(default_factory=RaPTrConfig)


@dataclass
class SGDConfig:
    """``torch.optim.SGD`` built with ``hydra.utils.instantiate`` (``_partial_``)."""

    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = setting(0.5, check=positive)  # peak learning rate
    momentum: float = setting(0.9, check=non_negative)
    nesterov: bool = False
    dampening: float = setting(0.0, check=within(0, 1))
    weight_decay: float = setting(0.0, check=non_negative)  # matrices and embeddings only


@dataclass
class AdamWConfig:
    """``torch.optim.AdamW`` built with ``hydra.utils.instantiate`` (``_partial_``)."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = setting(1e-3, check=positive)
    betas: list[float] = setting(
        factory=lambda: [0.9, 0.95],
        check=lambda b: (
            None
            if len(b) == 2 and all(0.0 <= x < 1.0 for x in b)
            else "two numbers in [0, 1), e.g. [0.9, 0.95]"
        ),
    )
    eps: float = setting(1e-8, check=positive)
    weight_decay: float = setting(0.1, check=non_negative)  # matrices and embeddings only


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over the run's iterations (:mod:`mltrain.train.optim`)."""

    name: str = setting("cosine", choices=SCHEDULES)
    warmup_steps: int = setting(10, check=at_least(0))
    min_lr_ratio: float = setting(0.1, check=within(0, 1))  # final LR = min_lr_ratio * peak
    decay_fraction: float = setting(0.2, check=within(0, 1, "(", "]"))  # wsd: share that decays
    decay_shape: str = setting("linear", choices=("linear", "cosine", "sqrt"))  # wsd decay


@dataclass
class DataConfig:
    """Corpus, tokenizer and batches (:mod:`mltrain.data`)."""

    name: str = setting("sotu", choices=CORPORA)
    tokenizer: str = setting(
        "bpe", check=registered_check("data.tokenizer")
    )  # bpe | gpt2 | hf:<name or path>
    bpe_vocab_size: int = setting(8192, check=within(257, 1 << 20))  # tokenizer=bpe: entries
    batch_size: int = setting(16, check=positive)  # sequences per micro-batch (per process)
    val_fraction: float = setting(0.05, check=within(0, 1, "(", ")"))  # documents held out
    paths: list[str] = setting(factory=list)  # text_files / fineweb_edu local files
    text_field: str = "text"
    sample_by: str = setting("document", choices=("document", "paragraph", "line"))
    hf_path: str = "HuggingFaceFW/fineweb-edu"
    hf_name: str | None = "sample-10BT"
    n_docs: int = setting(20000, check=positive)  # fineweb_edu: first N documents of the stream
    cache_dir: str | None = setting(
        None, inert=True
    )  # None: $MLTRAIN_CACHE_DIR or ~/.cache/mltrain


@dataclass
class LoggerConfig:
    """Where records go besides ``metrics.jsonl`` (:mod:`mltrain.train.tracking`)."""

    name: str = setting("wandb", choices=("wandb", "none"), inert=True)
    project: str = setting("mltrain", inert=True)
    entity: str | None = setting(None, inert=True)
    group: str | None = setting(None, inert=True)  # None: experiment name (or the sweep dir)
    tags: list[str] = setting(factory=list, inert=True)
    mode: str | None = setting(None, inert=True)  # None: $WANDB_MODE, else offline
    job_type: str | None = setting(None, inert=True)  # comparison role; None: from the plan


@dataclass
class TrainConfig:
    """The training run (:mod:`mltrain.train.trainer`)."""

    steps: int = setting(300, check=positive)  # fine optimizer steps
    target_flops: float | None = setting(None, check=positive)  # steps from a budget (with head)
    flops_scale: float = setting(1.0, check=positive)  # budget = target_flops * this (frontier)
    max_steps: int | None = setting(None, check=positive)  # cap on the run's length (mode=smoke)
    grad_accum: int = setting(1, check=positive)  # micro-batches per optimizer step
    max_grad_norm: float = setting(1.0, check=non_negative)  # 0 disables clipping
    eval_every: int = setting(25, check=positive, inert=True)  # fine steps between validations
    # validation windows of seq_len + 1 tokens: one fixed set whatever the micro-batch
    eval_sequences: int = setting(128, check=at_least(1, integer=True))
    log_every: int = setting(10, check=positive, inert=True)  # fine steps between console lines
    seed: int = setting(0, check=within(0, 2**32, "[", ")"))
    device: str = setting("auto", check=_device, inert=True)  # auto | cpu | cuda | cuda:<i>
    precision: str = setting("auto", choices=("auto", "fp32", "bf16", "fp16"))
    threads: int | None = setting(None, check=positive, inert=True)  # CPU threads; None: torch's
    compile: bool = setting(False, inert=True)  # torch.compile each block once
    compile_backend: str = setting("inductor", inert=True)  # aot_eager: quick, for debugging
    checkpoint_every: int = setting(100, check=non_negative, inert=True)  # 0: only at the end
    keep_checkpoints: int = setting(2, check=positive, inert=True)
    resume: str | None = setting(None, inert=True)  # None | auto | <path to a checkpoint>
    spike_factor: float = setting(1.3, check=non_negative, inert=True)  # warn above; 0: off
    progress: bool = setting(True, inert=True)  # tqdm bar (only when stdout is a terminal)
    # warmup-stable-decay branches (mltrain/train/branch.py): a trunk keeps its state where the
    # decay of each budget flops_scale x target_flops in branch_points starts; a run with
    # branch_from=<trunk run dir> starts from that state (bitwise the same run as without it)
    branch_points: list[float] = setting(factory=list, inert=True)
    branch_from: str | None = setting(None, inert=True)


@dataclass
class MLTrainConfig:
    """The whole composed configuration (``mltrain --cfg job`` prints it)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    coarsening: CoarseningConfig = field(default_factory=CoarseningConfig)
    optimizer: Any = MISSING
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment_name: str = setting("default", inert=True)


SECTIONS = {
    "model": ModelConfig,
    "coarsening": CoarseningConfig,
    "schedule": ScheduleConfig,
    "data": DataConfig,
    "logger": LoggerConfig,
    "train": TrainConfig,
}
OPTIMIZERS = {"torch.optim.SGD": SGDConfig, "torch.optim.AdamW": AdamWConfig}

# Keys renamed since earlier versions: old name -> new name. Old configs (checkpoints, finished
# runs read by mltrain-compare) are upgraded with :func:`upgrade`; an old key on the command
