"""One training job assembled from a config: the composition root.

It builds each piece from its owner, in an order that makes "nothing lost or overwritten"
hold: every check that can reject the job (config values, data, vocabulary, the plan, an
existing run in the directory, a checkpoint that does not fit: :mod:`mltrain.train.resume`)
runs before the first byte is written into the run directory. Then it writes ``.hydra/``,
``run.json`` (:mod:`mltrain.runrecord`, again with the final status when the run ends) and
builds the tracker and the trainer (which restores a resumed run's checkpoint itself).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mltrain.schemes  # noqa: F401  (registers every scheme: plan builders, handlers, extensions)
from mltrain import __version__
from mltrain.config import typed, validate
from mltrain.config.scheme import SCHEMES
from mltrain.data import build_data
from mltrain.data.sampler import eval_windows, validation_fingerprint
from mltrain.errors import CheckpointError, ConfigError, DivergenceError, Preempted
from mltrain.model.transformer import ODETransformer
from mltrain.plan.epochs import epoch_count, log_epoch_count
from mltrain.plan.plan import budget_of, build_plan
from mltrain.runrecord import RunRecord, hold_run_dir, role_of, write_run_record
from mltrain.schemes.corrections import check_ranks
from mltrain.train import branch as br
from mltrain.train import checkpoint as ckpt
from mltrain.train import distributed as D
from mltrain.train.optim import build_optimizer
from mltrain.train.precision import resolve as resolve_precision
from mltrain.train.resume import resume_point
from mltrain.train.tracking import Tracker
from mltrain.train.trainer import Trainer

log = logging.getLogger(__name__)


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
        self._lock = None  # a run still going there is refused before any work or log line
        if ctx.is_main and self.run_dir.is_dir():
            self._lock = hold_run_dir(self.run_dir)
        validate(cfg)
        self.typed = t = typed(cfg)
        if t.train.threads:
            torch.set_num_threads(int(t.train.threads))
        if t.train.branch_from is not None:  # before the corpus is tokenized (a cold cache logs it)
            br.check_trunk_dir(t)
        self.data = build_data(t.data, t.model.seq_len)
        vocab = self._vocab_size()
        self.plan = build_plan(t, vocab, ctx.world)
        check_ranks(t.coarsening, ctx.world)
        self.config_container = OmegaConf.to_container(cfg, resolve=True)
        # warmup-stable-decay branches (mltrain.train.branch): a trunk's points, a branch's start
        at = br.plan_at_scale(t, lambda c: build_plan(c, vocab, ctx.world))
        self.trunk_points = br.trunk_points(t, self.plan, at)
        self.resume = resume_point(
            t, self.plan, self.run_dir, self.config_container, self.data.content_fingerprint, ctx
        )
        build_optimizer(t.optimizer, _probe_params())  # reject optimizer settings before writing

        seed = int(t.train.seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.model = ODETransformer(t.model, vocab).to(ctx.device)
        if t.train.compile:
            self.model.compile_blocks(t.train.compile_backend)
        # ---- all checks passed (nothing is said before: a refused run prints its error alone);
        # from here on the run directory is written
        if t.train.target_flops is not None:
            log.info("FLOPs budget %.4e -> %d fine steps", budget_of(t), self.total_steps)
        SCHEMES.get(t.coarsening.scheme).after_plan(t.coarsening, self.plan)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if ctx.is_main and self._lock is None:
            self._lock = hold_run_dir(self.run_dir)
        self._prepare_run_dir()
        self.record = RunRecord(
            role=role_of(t.logger.job_type, self.plan.multilevel, t.train.target_flops is not None),
            threads=torch.get_num_threads(),
            device=str(ctx.device),
            precision=resolve_precision(t.train.precision, ctx.device, self.resume.precision),
            world=ctx.world,
            torch=torch.__version__,
            mltrain=__version__,
            plan=self.plan.summary(),
            data=epoch_count(self.plan, len(self.data.train), None),
            validation=validation_fingerprint(
                eval_windows(self.data.val, int(t.model.seq_len), int(t.train.eval_sequences))
            ),
            params=self.model.param_counts(),
            branch=self.resume.branch,
            branch_points=self.trunk_points,
        )
        self._write_record()
        self.tracker = Tracker(
            self.run_dir,
            t.logger,
            self.config_container,
            self.record.role,
            group or t.logger.group or t.experiment_name,
            run_id=self.resume.wandb_id,
            earlier_run_dir=self.resume.earlier_run_dir,
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
                branch_points=self.trunk_points,
                resume=self.resume,
            )
        except BaseException:
            self.tracker.close(exit_code=1)  # the W&B run is finished even when set-up fails
            raise
        self.resume.state = None  # restored: the trainer holds it now

    @property
    def total_steps(self) -> int:
        """Iterations of the run (fine steps for single-level and V-cycle runs)."""
        return self.plan.iterations

    @property
    def role(self) -> str:
        """The run's comparison role (``run.json``'s ``role``, the W&B job type)."""
        return self.record.role

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

    # ------------------------------------------------------------------ the run directory
    def _prepare_run_dir(self) -> None:
        """Write ``.hydra/`` and bring ``metrics.jsonl`` to the checkpoint's step
        (:meth:`mltrain.train.resume.ResumePoint.restore_metrics`)."""
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
        self.resume.restore_metrics(self.run_dir)

    def _write_record(self) -> None:
        """``run.json`` (rank 0 only; :func:`mltrain.runrecord.write_run_record`)."""
        if self.ctx.is_main:
            write_run_record(self.run_dir, self.record)

    def _epoch_count(self) -> dict:
        """Tokens planned and seen against the training split (:func:`mltrain.plan.epochs.epoch_count`)."""
        return epoch_count(self.plan, len(self.data.train), self.trainer.progress.tokens)

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
        log_epoch_count(self._epoch_count())
        try:
            loss = self.trainer.fit()
        except DivergenceError as e:
            self.record = self.record.ended("diverged", getattr(e, "where", None))
            raise
        except Preempted:
            self.record = self.record.ended("preempted")
            raise
        except BaseException:
            self.record = self.record.ended("failed")
            raise
        self.record = self.record.ended("completed")
        log_epoch_count(self._epoch_count(), at_end=True)
        return loss

    def close(self, exit_code: int = 0) -> None:
        """Record the final status and the tokens seen in ``run.json`` and close the tracker."""
        if self.tracker is not None:
            if self.record.status == "running":  # closed without run() finishing (set-up error)
                self.record = self.record.ended("failed")
            if getattr(self, "trainer", None) is not None:
                self.record = self.record.ended(
                    self.record.status, self.record.diverged_at, data=self._epoch_count()
                )
            self._write_record()
            self.tracker.close(exit_code)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
