"""One training job assembled from a config: checks, data, model, hierarchy, resume, tracker.

The order matters for "nothing lost or overwritten": every check that can reject the job
(config values, data, vocabulary, an existing run in the directory, a checkpoint that does
not fit) runs before the first byte is written into the run directory.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mltrain import distributed as D
from mltrain.checkpoint import CKPT_DIR, list_checkpoints, load_checkpoint, load_latest
from mltrain.config import flatten, validate
from mltrain.data import build_data
from mltrain.errors import CheckpointError, ConfigError, MLTrainError
from mltrain.flops import level_step_flops
from mltrain.levels import build_hierarchy
from mltrain.model import ODETransformer
from mltrain.optim import build_optimizer
from mltrain.tracking import METRICS_FILE, Tracker, truncate_metrics
from mltrain.trainer import Trainer
from mltrain.vcycle import Schedule, build_cycle

log = logging.getLogger(__name__)

# Settings a resumed run may change: they do not alter the trajectory of the training.
RESUME_MAY_CHANGE = (
    "train.resume",
    "train.log_every",
    "train.progress",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.compile",
    "train.compile_backend",
    "train.device",
    "train.eval_every",
    "data.cache_dir",
    "experiment_name",
    "logger.",
)


def check_resume_compatible(saved: dict, current: dict, path: Path) -> None:
    """Raise :class:`CheckpointError` naming the first setting that differs between the
    checkpoint's config and this run's, other than :data:`RESUME_MAY_CHANGE`."""
    a, b = flatten(saved), flatten(current)
    for key in sorted(set(a) | set(b)):
        if key.startswith(RESUME_MAY_CHANGE) or key in RESUME_MAY_CHANGE:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            raise CheckpointError(
                f"train.resume: {path} was written with {key}={a.get(key, '<unset>')}, "
                f"this run has {key}={b.get(key, '<unset>')}; resume with the same settings or start a new run"
            )


def steps_for_budget(
    levels, coarsening: DictConfig, step_flops: dict[str, int], budget: float
) -> int:
    """The number of fine steps whose total training FLOPs (with head) is closest to ``budget``
    (coarse phases of the window included): |total − budget| <= half a fine iteration's cost."""
    cycle = build_cycle(levels, coarsening.coarse_steps, coarsening.combine, coarsening.fine_step)
    sched = Schedule(levels, coarsening.window, cycle)
    per_cycle = sum(step_flops[n] * s for n, s in sched.steps_per_level(0, 1).items())
    fine = step_flops[levels[0].name]

    def total(s: int) -> int:
        w = min(s, coarsening.window)
        return w * per_cycle + (s - w) * fine

    lo, hi = 1, 1
    while total(hi) < budget:
        hi *= 2
    while lo < hi:  # smallest s with total(s) >= budget
        mid = (lo + hi) // 2
        if total(mid) >= budget:
            hi = mid
        else:
            lo = mid + 1
    if lo > 1 and budget - total(lo - 1) < total(lo) - budget:
        lo -= 1
    return lo


def fine_steps(cfg: DictConfig, levels, vocab: int, world: int = 1) -> int:
    """The run's number of fine steps: ``train.steps``, or with ``train.target_flops`` the count
    whose training FLOPs (with head, coarse phases included) come closest to the budget
    (:func:`steps_for_budget`; the global batch is ``world`` processes' batches).

    Raises:
        ConfigError: a budget below one fine step, or one that leaves no step after warm-up.
    """
    t, m = cfg.train, cfg.model
    if t.target_flops is None:
        return int(t.steps)
    tokens = m.seq_len * cfg.data.batch_size * t.grad_accum * world
    per = {
        n: f.total for n, f in level_step_flops(levels, m.n_embd, m.seq_len, vocab, tokens).items()
    }
    if t.target_flops < per[levels[0].name]:
        raise ConfigError(
            f"train.target_flops={t.target_flops:.4g} is less than one fine step "
            f"({per[levels[0].name]:.4g} FLOPs with head); give a larger budget"
        )
    steps = steps_for_budget(levels, cfg.coarsening, per, float(t.target_flops))
    if cfg.schedule.warmup_steps >= steps:
        raise ConfigError(
            f"train.target_flops={t.target_flops:.3e} gives {steps} fine steps, not more than "
            f"schedule.warmup_steps={cfg.schedule.warmup_steps}; raise the budget or lower the warmup"
        )
    log.info("train.target_flops=%.4e -> %d fine steps", t.target_flops, steps)
    return steps


def _probe_params() -> dict:
    """A matrix and a vector to build the configured optimizer on before anything is written."""
    return {"w": torch.nn.Parameter(torch.zeros(2, 2)), "b": torch.nn.Parameter(torch.zeros(2))}


class Job:
    """Build and run one training job in ``run_dir``.

    Args:
        cfg: the composed config.
        run_dir: the Hydra run directory (created by Hydra; nothing written before checks pass).
        ctx: distributed context.
        hydra_cfg: Hydra's own config, saved to ``.hydra/hydra.yaml`` (None outside Hydra).
        group: W&B group (defaults to ``logger.group`` or the experiment name).

    Raises:
        MLTrainError subclasses for every user-fixable problem (see :mod:`mltrain.errors`).
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ctx: D.DistContext,
        hydra_cfg=None,
        group: str | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.ctx, self.hydra_cfg = cfg, Path(run_dir), ctx, hydra_cfg
        self.tracker = None
        validate(cfg)
        self.levels = build_hierarchy(cfg.coarsening, cfg.model.n_layer)
        self.data = build_data(cfg.data, cfg.model.seq_len)
        vocab = self._vocab_size()
        self.total_steps = fine_steps(cfg, self.levels, vocab, ctx.world)
        if cfg.coarsening.window > self.total_steps and len(self.levels) > 1:
            log.warning(
                "coarsening.window=%d is longer than the run (%d fine steps): every fine "
                "iteration runs coarse phases",
                cfg.coarsening.window,
                self.total_steps,
            )
        self.config_container = OmegaConf.to_container(cfg, resolve=True)
        self.resume_path = self._agree(self._decide_resume)  # rank 0 looks, every rank follows
        self.resume_state = self._load_resume_state(self.resume_path) if self.resume_path else None
        build_optimizer(cfg.optimizer, _probe_params())  # reject optimizer settings before writing

        seed = int(cfg.train.seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        m = cfg.model
        self.model = ODETransformer(
            vocab, m.n_layer, m.n_embd, m.n_head, m.block_size, m.dropout, m.bias, m.attention
        ).to(ctx.device)
        if cfg.train.compile:
            backends = torch._dynamo.list_backends(exclude_tags=())
            if cfg.train.compile_backend not in backends:
                raise ConfigError(
                    f"train.compile_backend={cfg.train.compile_backend!r} is not allowed: choose one "
                    f"of {', '.join(b for b in backends if 'TESTING' not in b and 'minifier' not in b)}"
                )
            # Each block is compiled once; the Euler update x + h*F(x) stays outside, so every
            # level (any subset of blocks, any step size) reuses the same compiled code.
            for block in self.model.blocks:
                block.compile(backend=cfg.train.compile_backend)
        # ---- all checks passed: from here on the run directory is written
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_run_dir()
        job_type = (
            "multilevel"
            if len(self.levels) > 1
            and cfg.coarsening.window > 0
            and cfg.coarsening.coarse_steps > 0
            else "single_level"
        )
        self.tracker = Tracker(
            self.run_dir,
            cfg.logger,
            self.config_container,
            job_type,
            group or cfg.logger.group or cfg.experiment_name,
            run_id=(self.resume_state or {}).get("wandb_id"),
            earlier_run_dir=self.resume_path.parent.parent if self.resume_path else None,
            enabled=ctx.is_main,
        )
        try:
            self.trainer = Trainer(
                cfg,
                self.model,
                self.levels,
                self.data,
                self.tracker,
                ctx,
                self.run_dir,
                self.total_steps,
                self.config_container,
            )
            if self.resume_state is not None:
                self.trainer.load_state_dict(self.resume_state)
                self.trainer.last_checkpoint = self.resume_path
                log.info(
                    "resumed from %s at step %d (fine step %d)",
                    self.resume_path,
                    self.trainer.p.step,
                    self.trainer.p.fine_steps,
                )
                self.resume_state = None
        except BaseException:
            self.tracker.close(exit_code=1)  # the W&B run is finished even when set-up fails
            raise

    # ------------------------------------------------------------------ checks
    def _vocab_size(self) -> int:
        tok_vocab = self.data.vocab_size
        want = self.cfg.model.vocab_size
        if want is None:
            return tok_vocab
        if want < tok_vocab:
            raise ConfigError(
                f"model.vocab_size={want} is smaller than the vocabulary of data.tokenizer="
                f"{self.cfg.data.tokenizer} ({tok_vocab}); use model.vocab_size=null or >= {tok_vocab}"
            )
        return int(want)

    def _agree(self, decide):
        """Run ``decide`` on rank 0 only (it looks at the run directory, which rank 0 is about
        to write) and give every rank its result or its error."""
        if self.ctx.world == 1:
            return decide()
        outcome = None
        if self.ctx.is_main:
            try:
                outcome = ("ok", decide())
            except MLTrainError as e:
                outcome = ("error", e)
        outcome = D.broadcast_object(outcome, self.ctx.world)
        if outcome[0] == "error":
            raise outcome[1]
        return outcome[1]

    def _decide_resume(self) -> Path | None:
        """The checkpoint this run continues from, or None to start from step 0.

        - ``train.resume`` unset: the run directory must not hold a run already.
        - ``auto``: the newest readable checkpoint of this run directory; with none, a run
          already there (killed before its first checkpoint) restarts, if its settings match.
        - a path: a checkpoint file; its run continues into this run directory, which must
          then be new (or the checkpoint's own).

        Raises:
            CheckpointError: naming the directory or file and what to do instead.
        """
        resume = self.cfg.train.resume
        ckdir = self.run_dir / CKPT_DIR
        metrics = self.run_dir / METRICS_FILE
        holds_run = bool(list_checkpoints(ckdir)) or metrics.is_file()
        if resume is None:
            if holds_run:
                raise CheckpointError(
                    f"run directory {self.run_dir} already holds a run; continue it with "
                    "train.resume=auto or choose a new hydra.run.dir"
                )
            return None
        if resume == "auto":
            found = load_latest(ckdir)
            if found is not None:
                return found[1]
            saved = self.run_dir / ".hydra" / "config.yaml"
            if metrics.is_file() and saved.is_file():
                before = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
                check_resume_compatible(before, self.config_container, saved)
            log.info("train.resume=auto: no checkpoint in %s, starting from step 0", ckdir)
            return None
        path = Path(resume).expanduser()
        if not resume.strip() or path.is_dir():
            raise CheckpointError(
                f"train.resume={resume!r} is not a checkpoint file: give auto or a path such as "
                "outputs/runs/<run>/checkpoints/ckpt_000000300.pt"
            )
        if holds_run and path.resolve().parent != ckdir.resolve():
            raise CheckpointError(
                f"run directory {self.run_dir} already holds another run; train.resume={path} "
                "continues into a new directory: choose a new hydra.run.dir"
            )
        return path

    def _load_resume_state(self, path: Path) -> dict:
        """Load ``path`` and check it fits this run: settings, length and data.

        Raises:
            CheckpointError: unreadable, or the first setting/length/data that differs.
        """
        state = load_checkpoint(path)
        check_resume_compatible(state.get("config", {}), self.config_container, path)
        if state.get("total_steps") != self.total_steps:
            raise CheckpointError(
                f"train.resume: checkpoint {path} belongs to a run of {state.get('total_steps')} fine steps, "
                f"this run has {self.total_steps}"
            )
        data = state.get("data_fingerprint")
        if data is not None and data != self.data.content_fingerprint:
            raise CheckpointError(
                f"train.resume: checkpoint {path} was trained on other tokens (the corpus or the "
                "tokenizer changed since); resume with the same data or start a new run"
            )
        return state

    def _prepare_run_dir(self) -> None:
        """Write ``.hydra/`` and bring ``metrics.jsonl`` to the checkpoint's step (the Tracker
        then asks W&B which of its steps W&B lacks)."""
        if not self.ctx.is_main:
            return
        try:  # fail before writing anything else if checkpoints cannot be written here
            (self.run_dir / CKPT_DIR).mkdir(exist_ok=True)
        except OSError as e:
            raise CheckpointError(
                f"cannot write checkpoints in {self.run_dir / CKPT_DIR}: {e.strerror}"
            ) from None
        hd = self.run_dir / ".hydra"
        hd.mkdir(exist_ok=True)
        OmegaConf.save(self.cfg, hd / "config.yaml")
        if self.hydra_cfg is not None:
            OmegaConf.save({"hydra": self.hydra_cfg}, hd / "hydra.yaml")
            OmegaConf.save(list(self.hydra_cfg.overrides.task), hd / "overrides.yaml")
        metrics = self.run_dir / METRICS_FILE
        if self.resume_path is not None:
            step = int(self.resume_state["progress"]["logged_step"])
            source = self.resume_path.parent.parent / METRICS_FILE
            if source.resolve() != metrics.resolve() and source.is_file() and not metrics.exists():
                shutil.copyfile(source, metrics)
            if metrics.is_file():
                truncate_metrics(metrics, step)
        elif metrics.is_file():  # resume=auto found no checkpoint: the same run restarts from 0
            truncate_metrics(metrics, -1)

    # ------------------------------------------------------------------ run
    def run(self) -> float:
        """Train to the end; return the final validation loss."""
        log.info("run directory: %s", self.run_dir)
        for line in self.trainer.describe().splitlines():
            log.info("%s", line)
        return self.trainer.fit()

    def close(self, exit_code: int = 0) -> None:
        if self.tracker is not None:
            self.tracker.close(exit_code)
