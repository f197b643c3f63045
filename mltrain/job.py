"""One training job assembled from a config: checks, data, plan, model, resume, tracker.

The order matters for "nothing lost or overwritten": every check that can reject the job
(config values, data, vocabulary, the plan, an existing run in the directory, a checkpoint
that does not fit) runs before the first byte is written into the run directory.

Besides ``.hydra/`` and ``metrics.jsonl``, a job writes ``run.json``: its comparison role,
status (``running``, ``completed``, ``diverged`` with where, ``preempted``, ``failed``), the
thread count, device, resolved precision (:mod:`mltrain.train.precision`) and versions it ran
with, its plan's summary (multilevel or not, planned FLOPs) and its validation set
(``validation``: sequences, tokens and a fingerprint of the tokens,
:func:`mltrain.data.sampler.validation_fingerprint`). ``mltrain-compare`` reads it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mltrain.schemes  # noqa: F401  (registers every scheme: plan builders, handlers, extensions)
from mltrain.config import MLTrainConfig, typed, validate
from mltrain.config.scheme import SCHEMES
from mltrain.data import build_data
from mltrain.data.sampler import eval_windows, validation_fingerprint
from mltrain.errors import CheckpointError, ConfigError, DivergenceError, MLTrainError, Preempted
from mltrain.metrics import METRICS_FILE, truncate_metrics
from mltrain.model.transformer import ODETransformer
from mltrain.plan.passes import data_passes, log_data_passes
from mltrain.plan.plan import Plan, budget_of, build_plan
from mltrain.schemes.corrections import check_ranks
from mltrain.train import branch as br
from mltrain.train import checkpoint as ckpt
from mltrain.train import distributed as D
from mltrain.train.optim import build_optimizer
from mltrain.train.tracking import Tracker
from mltrain.train.trainer import Trainer

log = logging.getLogger(__name__)

RUN_INFO = "run.json"


def role_of(cfg: MLTrainConfig, plan: Plan) -> str:
    """The run's comparison role (its W&B job type): ``logger.job_type`` when set, else
    ``multilevel``, ``single_level/same_flops`` (sized by ``train.target_flops``) or
    ``single_level/same_steps``."""
    if cfg.logger.job_type:
        return cfg.logger.job_type
    if plan.multilevel:
        return "multilevel"
    return "single_level/same_flops" if cfg.train.target_flops else "single_level/same_steps"


def _probe_params() -> dict:
    """A matrix and a vector to build the configured optimizer on before anything is written."""
    return {"w": torch.nn.Parameter(torch.zeros(2, 2)), "b": torch.nn.Parameter(torch.zeros(2))}


class Job:
    """Build and run one training job in ``run_dir``.

    Args:
        cfg: the composed config (DictConfig; validated and converted to typed sections here).
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
        self.status, self.diverged_at = "running", None
        validate(cfg)
        self.typed = t = typed(cfg)
        if t.train.threads:
            torch.set_num_threads(int(t.train.threads))
        self.data = build_data(t.data, t.model.seq_len)
        vocab = self._vocab_size()
        self.plan = build_plan(t, vocab, ctx.world)
        check_ranks(t.coarsening, ctx.world)
        self.config_container = OmegaConf.to_container(cfg, resolve=True)
        # warmup-stable-decay branches (mltrain.train.branch): a trunk's points, a branch's start
        at = br.plan_at_scale(t, lambda c: build_plan(c, vocab, ctx.world))
        self.trunk_points = br.trunk_points(t, self.plan, at)
        self.resume_path = self._agree(self._decide_resume)  # rank 0 looks, every rank follows
        start = self.resume_path is not None and self.resume_path.parent.name == br.BRANCH_DIR
        self.branch = (
            {"trunk": str(self.resume_path.parent.parent), "step": int(self.resume_path.stem[5:])}
            if start
            else (self._recorded_branch() if t.train.branch_from else None)
        )
        self.resume_state = self._load_resume_state(self.resume_path) if self.resume_path else None
        build_optimizer(t.optimizer, _probe_params())  # reject optimizer settings before writing

        seed = int(t.train.seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.model = ODETransformer(t.model, vocab).to(ctx.device)
        if t.train.compile:
            self._compile(t.train.compile_backend)
        # ---- all checks passed (nothing is said before: a refused run prints its error alone);
        # from here on the run directory is written
        if t.train.target_flops is not None:
            log.info("FLOPs budget %.4e -> %d fine steps", budget_of(t), self.total_steps)
        SCHEMES.get(t.coarsening.scheme).after_plan(t.coarsening, self.plan)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_run_dir()
        self.role = role_of(t, self.plan)
        self.validation = validation_fingerprint(
            eval_windows(self.data.val, int(t.model.seq_len), int(t.train.eval_sequences))
        )
        self._write_run_info()
        self.tracker = Tracker(
            self.run_dir,
            t.logger,
            self.config_container,
            self.role,
            group or t.logger.group or t.experiment_name,
            run_id=(self.resume_state or {}).get("wandb_id"),
            earlier_run_dir=self.resume_path.parent.parent
            if self.resume_path and not start
            else None,
            enabled=ctx.is_main,
        )
        try:
            self.trainer = Trainer(
                t,
                self.model,
                self.plan,
                self.data,
                self.tracker,
                ctx,
                self.run_dir,
                self.config_container,
            )
            self.trainer.branch_points = self.trunk_points
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

    @property
    def total_steps(self) -> int:
        """Iterations of the run (fine steps for single-level and V-cycle runs)."""
        return self.plan.iterations

    # ------------------------------------------------------------------ checks
    def _vocab_size(self) -> int:
        tok_vocab = self.data.vocab_size
        want = self.typed.model.vocab_size
        if want is None:
            return tok_vocab
        if want < tok_vocab:
            raise ConfigError(
                f"model.vocab_size={want} is smaller than the vocabulary of data.tokenizer="
                f"{self.typed.data.tokenizer} ({tok_vocab}); use model.vocab_size=null or >= {tok_vocab}"
            )
        return int(want)

    def _compile(self, backend: str) -> None:
        backends = torch._dynamo.list_backends(exclude_tags=())
        if backend not in backends:
            raise ConfigError(
                f"train.compile_backend={backend!r} is not allowed: choose one of "
                f"{', '.join(b for b in backends if 'TESTING' not in b and 'minifier' not in b)}"
            )
        # Each block is compiled once; the Euler update x + h*F(x) stays outside, so every
        # level (any subset of blocks, any step size) reuses the same compiled code.
        for block in self.model.blocks:
            block.compile(backend=backend)

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
        - ``auto``: the newest readable, healthy checkpoint of this run directory; with none,
          a run already there (killed before its first checkpoint) restarts, if its settings
          match.
        - a path: a checkpoint file; its run continues into this run directory, which must
          then be new (or the checkpoint's own).

        Raises:
            CheckpointError: naming the directory or file and what to do instead.
        """
        resume = self.typed.train.resume
        ckdir = self.run_dir / ckpt.CKPT_DIR
        metrics = self.run_dir / METRICS_FILE
        holds_run = bool(ckpt.list_checkpoints(ckdir)) or metrics.is_file()
        if resume is None:
            if holds_run:
                raise CheckpointError(
                    f"run directory {self.run_dir} already holds a run; continue it with "
                    "train.resume=auto or choose a new hydra.run.dir"
                )
            return (
                br.branch_start(self.typed, self.plan)[0] if self.typed.train.branch_from else None
            )
        if resume == "auto":
            found = ckpt.load_latest(ckdir)
            if found is not None:
                return found[1]
            if self.typed.train.branch_from:  # a branch killed before its first checkpoint
                return br.branch_start(self.typed, self.plan)[0]
            saved = self.run_dir / ".hydra" / "config.yaml"
            if metrics.is_file() and saved.is_file():
                before = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
                ckpt.check_compatible(before, self.config_container, saved)
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
        """Load ``path`` and check it fits this run (:func:`mltrain.train.checkpoint.check_fits`).

        Raises:
            CheckpointError: unreadable, or the first setting/length/data that differs.
        """
        state = ckpt.load_checkpoint(path)
        if path.parent.name == br.BRANCH_DIR:  # a trunk's state: this run's budget differs
            br.check_point(
                state,
                path,
                config=self.config_container,
                data_fingerprint=self.data.content_fingerprint,
            )
            state["wandb_id"] = None  # a run of its own, not the trunk's W&B run
            return state
        ckpt.check_fits(
            state,
            path,
            config=self.config_container,
            total_steps=self.total_steps,
            data_fingerprint=self.data.content_fingerprint,
            world=self.ctx.world,
        )
        return state

    def _prepare_run_dir(self) -> None:
        """Write ``.hydra/`` and bring ``metrics.jsonl`` to the checkpoint's step (the Tracker
        then asks W&B which of its steps W&B lacks)."""
        if not self.ctx.is_main:
            return
        try:  # fail before writing anything else if checkpoints cannot be written here
            (self.run_dir / ckpt.CKPT_DIR).mkdir(exist_ok=True)
        except OSError as e:
            raise CheckpointError(
                f"cannot write checkpoints in {self.run_dir / ckpt.CKPT_DIR}: {e.strerror}"
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

    def _write_run_info(self) -> None:
        """``run.json`` (atomically): role, status, where it diverged, threads, device,
        versions, the plan's summary and the validation set's fingerprint."""
        if not self.ctx.is_main:
            return
        from mltrain import __version__

        info = {
            "role": self.role,
            "status": self.status,
            "diverged_at": self.diverged_at,
            "threads": torch.get_num_threads(),
            "device": str(self.ctx.device),
            "precision": self._precision(),
            "world": self.ctx.world,
            "torch": torch.__version__,
            "mltrain": __version__,
            **self.plan.summary(),
            "data": self._data_passes(),
            "validation": self.validation,
            "params": self._params(),
        }
        if self.branch:
            info["branch"] = self.branch
        if self.trunk_points:
            info["branch_points"] = {str(k): v for k, v in self.trunk_points.items()}
        tmp = self.run_dir / f".{RUN_INFO}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, self.run_dir / RUN_INFO)

    def _precision(self) -> str:
        """The resolved ``train.precision`` (:func:`mltrain.train.precision.resolve`; on a
        resume with ``auto``, the checkpoint's)."""
        from mltrain.train.precision import resolve

        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.precision
        saved = (self.resume_state or {}).get("precision")
        return resolve(self.typed.train.precision, self.ctx.device, saved)

    def _recorded_branch(self) -> dict | None:
        """A resumed branch's ``branch`` entry of ``run.json`` (written at its start)."""
        try:
            return json.loads((self.run_dir / RUN_INFO).read_text()).get("branch")
        except (OSError, ValueError):
            return None

    def _params(self) -> dict:
        """Parameter counts of the model (scalars; the tied head counted once) and V:
        ``total`` and ``nonembed`` (without the token and position embeddings)."""
        total = sum(p.numel() for p in self.model.parameters())
        emb = self.model.wte.weight.numel() + self.model.wpe.weight.numel()
        return {"total": total, "nonembed": total - emb, "vocab": self.model.vocab_size}

    def _data_passes(self) -> dict:
        """Tokens planned and seen against the training split (:func:`mltrain.plan.passes.data_passes`)."""
        trainer = getattr(self, "trainer", None)
        seen = trainer.p.tokens if trainer is not None else None
        return data_passes(self.plan, len(self.data.train), seen)

    # ------------------------------------------------------------------ run
    def run(self) -> float:
        """Train to the end; return the final validation loss.

        Raises:
            DivergenceError, Preempted: as :meth:`mltrain.train.trainer.Trainer.fit` (``run.json``
                records which).
        """
        log.info("run directory: %s", self.run_dir)
        for line in self.plan.describe().splitlines():
            log.info("%s", line)
        log_data_passes(self._data_passes())
        try:
            loss = self.trainer.fit()
        except DivergenceError as e:
            self.status, self.diverged_at = "diverged", getattr(e, "where", None)
            raise
        except Preempted:
            self.status = "preempted"
            raise
        except BaseException:
            self.status = "failed"
            raise
        self.status = "completed"
        log_data_passes(self._data_passes(), at_end=True)
        return loss

    def close(self, exit_code: int = 0) -> None:
        """Record the final status in ``run.json`` and close the tracker."""
        if self.tracker is not None:
            if self.status == "running":  # closed without run() finishing (set-up error)
                self.status = "failed"
            self._write_run_info()
            self.tracker.close(exit_code)
