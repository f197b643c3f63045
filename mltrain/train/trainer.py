"""The training loop: it walks the run's :class:`~mltrain.plan.plan.Plan` one operation at a
time (each by its handler, :data:`mltrain.plan.ops.HANDLERS`), takes optimizer steps on the
level a :class:`~mltrain.plan.ops.Train` names, evaluates, logs one record per optimizer step
and writes checkpoints that resume exactly. It implements :class:`mltrain.train.state.RunState`,
the only thing schemes see of it.

The end of every plan iteration runs the hooks of the trainer (evaluation, the metrics
record, checkpoints, a trunk's branch points: :mod:`mltrain.train.hooks`) and of the
extensions in the order of their priorities (the table in :mod:`mltrain.train.state`), then
stops if a preemption signal arrived.

The trainer owns its state: it is built complete (a resumed run's checkpoint is restored in
the constructor), and others read it or call its methods, never assign its fields. The
position in the plan (iteration, operation index, steps done inside it), every counter and
every extension's state are part of :meth:`Trainer.state_dict`, so a run stopped anywhere
(preemption signal, or a kill followed by a resume from the last checkpoint) continues with
the same losses, bit for bit on CPU at the same thread count.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mltrain.config import MLTrainConfig
from mltrain.data import BatchSampler, DataBundle, eval_windows
from mltrain.errors import Preempted
from mltrain.levels import Level
from mltrain.levels.restrict_prolong import frozen_parameters
from mltrain.model.flops import forward_flops
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.plan.ops import HANDLERS, Train, check_handled, handles
from mltrain.plan.plan import Plan
from mltrain.train import checkpoint as ckpt
from mltrain.train import distributed as D
from mltrain.train import precision as prec
from mltrain.train.batch_runner import BatchRunner
from mltrain.train.clock import StepClock
from mltrain.train.hooks import trainer_hooks
from mltrain.train.optim import LevelOptimizers, level_optimizers, make_schedule
from mltrain.train.progress import Progress, Records
from mltrain.train.signals import SignalFlag
from mltrain.train.state import Extension, build_extensions, by_priority
from mltrain.train.tracking import Tracker

if TYPE_CHECKING:
    from mltrain.train.resume import ResumePoint

log = logging.getLogger(__name__)

__all__ = ["Trainer", "Progress", "Preempted"]


@handles(Train)
def _train(run: Trainer, op: Train) -> None:
    run.train(op.level, op.steps, op.lr_scale)


class Trainer:
    """Multilevel (or single-level) training of an :class:`ODETransformer` along a plan.

    Args:
        cfg: the typed config.
        model: the fine model, already on ``ctx.device``.
        plan: what the run does (:func:`mltrain.plan.plan.build_plan`, with FLOPs).
        data: token streams.
        tracker: where records go.
        ctx: distributed context (rank, world, device).
        run_dir: the run directory (checkpoints go to ``run_dir/checkpoints``).
        config_container: the resolved config as a plain dict, stored in every checkpoint.
        branch_points: a trunk's branch points, ``{iteration: budget scale}``
            (:func:`mltrain.train.branch.trunk_points`); empty for other runs.
        resume: where the run starts (:func:`mltrain.train.resume.resume_point`); its
            checkpoint's state is restored here (None or no state: from step 0).

    Raises:
        ConfigError: the plan holds an operation no registered handler carries out.
    """

    def __init__(
        self,
        cfg: MLTrainConfig,
        model: ODETransformer,
        plan: Plan,
        data: DataBundle,
        tracker: Tracker,
        ctx: D.DistContext,
        run_dir,
        config_container: dict | None = None,
        branch_points: dict[int, float] | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        check_handled(plan.operations())
        self.config_container = config_container or {}
        self.cfg, self.model, self.plan, self.data = cfg, model, plan, data
        self.tracker, self.ctx, self.run_dir, self.device = tracker, ctx, run_dir, ctx.device
        t = cfg.train
        self.levels = {lv.name: lv for lv in plan.levels}
        self.level_params = {lv.name: lv.parameters(model) for lv in plan.levels}
        self.all_params = dict(model.named_parameters())
        # parameters a coarse path uses but must not train (train_shared=false): grads dropped
        self.frozen = {lv.name: frozen_parameters(model, lv) for lv in plan.levels}
        self.optims: LevelOptimizers = level_optimizers(
            cfg.optimizer,
            cfg.coarsening.hierarchy.optimizer_state,
            self.level_params,
            fused=ctx.device.type == "cuda",
        )
        self.lr_factor = make_schedule(cfg.schedule, plan.iterations)
        self.seq_len = int(cfg.model.seq_len)
        precision = prec.resolve(t.precision, ctx.device)
        self.runner = BatchRunner(
            model, ctx, int(cfg.data.batch_size), int(t.grad_accum), precision
        )
        self.sampler = BatchSampler(data.train, self.seq_len, seed=int(t.seed) + 1)
        # one fixed validation set whatever the micro-batch, accumulation or world size
        self.val_batches = eval_windows(data.val, self.seq_len, int(t.eval_sequences))
        self.progress = Progress.start(plan.levels)
        self.max_norm = float(t.max_grad_norm) or math.inf
        self.clock = StepClock(ctx.device)  # synchronizes CUDA before each reading
        self.peak = prec.device_peak(ctx.device, precision)  # FLOP/s of MFU; None: unknown
        # random sub-paths draw from their own generator (checkpointed), never from torch's
        self.path_generator = torch.Generator().manual_seed(int(t.seed) + 2)
        self._t0, self._wall0 = time.perf_counter(), 0.0
        self.records = Records(tracker, self.progress, self._wall)
        self.signals = SignalFlag()
        self.last_batch: torch.Tensor | None = None
        self.last_checkpoint: Path | None = None
        self.extensions: dict[str, Extension] = build_extensions(self)  # in priority order
        # what runs at the end of an iteration, in priority order (mltrain.train.state)
        self.hooks = by_priority(
            [*trainer_hooks(t.checkpoint_every, branch_points or {}), *self.extensions.values()]
        )
        if resume is not None and resume.state is not None:
            self.load_state_dict(resume.state)
            self.last_checkpoint = resume.path
            log.info(
                "resumed from %s at step %d (fine step %d)",
                *(resume.path, self.progress.steps, self.progress.fine_steps),
            )

    # ------------------------------------------------------------------ RunState
    @property
    def iteration(self) -> int:
        return self.progress.iteration

    @property
    def precision(self) -> str:
        """The resolved ``train.precision`` (``fp32``, ``bf16`` or ``fp16``)."""
        return self.runner.precision

    def params(self, level: str) -> dict[str, torch.nn.Parameter]:
        return self.level_params[level]

    def path_of(self, level: Level) -> BlockPath:
        """The path of ``level``'s next step (a random sub-path draws it here)."""
        return level.sample_path(self.path_generator)

    def extension(self, name: str) -> Extension:
        return self.extensions[name]

    def note(self, key: str, value: float) -> None:
        """A value for the next record (e.g. the δ a line search chose, a growth's loss jump)."""
        self.records.notes[key] = value

    def train(self, level: str, steps: int, lr_scale: float = 1.0) -> None:
        """``steps`` optimizer steps on ``level``, continuing from ``progress.inner`` done; the
        learning rate is the schedule's times ``lr_scale``."""
        while self.progress.inner < steps:
            self.train_step(self.levels[level], lr_scale)
            self.progress.inner += 1
            self._check_signal()

    @torch.no_grad()
    def evaluate(self, path: BlockPath | None = None, model: ODETransformer | None = None) -> float:
        """Mean cross-entropy (nats/token) on the fixed validation windows, at token level,
        along ``path`` of ``model`` (default: :attr:`eval_level`'s
        :attr:`~mltrain.levels.Level.eval_path` of its :meth:`~mltrain.levels.Level.module`;
        with a ``path``, the fine model); books the forward FLOPs to ``perf/flops_eval``."""
        if path is None:
            path, model = self.eval_level.eval_path, self.eval_level.module(self.model)
        m = self.model if model is None else model
        chunks = self.val_batches.split(self.runner.micro)
        val = self.runner.mean_loss(path, list(chunks[self.ctx.rank :: self.ctx.world]), m)
        tokens = len(self.val_batches) * self.seq_len
        n = len(path.blocks)
        f = forward_flops(n, m.n_embd, self.seq_len, m.vocab_size, tokens)
        self.progress.flops_eval += f.total
        return val

    @property
    def eval_level(self) -> Level:
        """The level of the stage whose iteration ran last (before training: the first
        stage's), so the evaluation that ends a coarse stage measures the coarse path."""
        p = self.progress
        k = p.iteration - 1 if p.op == 0 and p.iteration > 0 else p.iteration
        return self.levels[self.plan.stage_at(k).level]

    # ------------------------------------------------------------------ the loop
    def fit(self) -> float:
        """Run (or continue) the plan to its last iteration; return the final validation loss.

        Raises:
            DivergenceError: a non-finite loss, gradient or validation loss (names the step
                and level).
            Preempted: SIGTERM/SIGINT arrived; a checkpoint was saved first.
        """
        from tqdm.auto import tqdm

        self._t0, self._wall0 = time.perf_counter(), self.progress.wall_s
        self.signals.install()
        try:
            if self.progress.steps == 0 and self.progress.evaluated_at < 0:
                self.log_validation()
                log.info("step 0: val/loss %.4f (before training)", self.progress.val_loss)
            show = self.cfg.train.progress and sys.stdout.isatty() and self.ctx.is_main
            total = self.plan.iterations
            with tqdm(
                total=total, initial=self.progress.iteration, unit="fine step", disable=not show
            ) as bar:
                while self.progress.iteration < total:
                    self.run_iteration()
                    self.records.settle()
                    self._end_iteration()
                    bar.update(1)
            if self.progress.evaluated_at != self.progress.steps:
                self.log_validation()
            self.records.flush()
            self.save()
            return float(self.progress.val_loss)
        finally:
            self.signals.restore()

    def run_iteration(self) -> None:
        """Carry out the operations of the current plan iteration (from where a resumed run
        stopped inside it), then move the position to the next iteration. No hooks run
        (:meth:`fit` runs them)."""
        p = self.progress
        ops = self.plan.ops(p.iteration)
        while p.op < len(ops):
            self.run_op(ops[p.op])
            p.op, p.inner = p.op + 1, 0
        p.iteration, p.op = p.iteration + 1, 0

    def run_ops(self, ops) -> None:
        """Carry out ``ops`` one after another, each from its first step, outside the plan's
        walk (tests and benchmarks drive single phases this way); the position in the plan
        stays where it was."""
        for op in ops:
            self.progress.inner = 0
            self.run_op(op)
        self.progress.inner = 0

    def run_op(self, op) -> None:
        """Carry out one operation of the plan and count what it spends besides optimizer
        steps (:meth:`mltrain.plan.ops.Operation.extra_flops`)."""
        HANDLERS[type(op)](self, op)
        if not isinstance(op, Train):
            extra = op.extra_flops(self.plan)
            if extra.total:
                self.progress.spend(op.booked_to(self.plan), extra.total, extra.nonembed)

    def _end_iteration(self) -> None:
        """Every hook in priority order (:attr:`hooks`), then stop on a preemption signal."""
        for hook in self.hooks:
            hook.end_iteration(self, self.progress.iteration)
        self._check_signal()

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self, level: Level, lr_scale: float = 1.0) -> None:
        """One optimizer step of ``level`` at ``lr_scale`` times the schedule's learning rate:
        the next global batch, forward/backward, all-reduce, clipping, the update, the record."""
        self.clock.start()
        self.records.flush()
        opt = self.optims.get(level.steps_with)
        lr = self.optims.peak_lr * self.lr_factor(self.progress.iteration)
        lr *= lr_scale
        LevelOptimizers.set_lr(opt, lr)
        batch = self.runner.next_windows(self.sampler, level.window_tokens(self.seq_len))
        self.last_batch = batch  # this step's windows on this rank (extensions may reuse them)
        loss, norm = self.step_gradients(level, batch)
        self.runner.update(opt)
        for ext in self.extensions.values():
            ext.after_step(self, level)
        self.model.zero_grad(set_to_none=True)
        level.module(self.model).zero_grad(set_to_none=True)  # a level on its own tensors
        self._account(level, loss, norm, lr, self.clock.stop())

    def step_gradients(self, level: Level, windows: torch.Tensor) -> tuple[float, float]:
        """The gradient a training step of ``level`` takes on this rank's ``windows``
        ``(B_rank, W)``, left in ``.grad`` (no update): forward/backward along its path, then
        :meth:`_reduce_clip_check`. Returns (mean loss, gradient norm before clipping).

        Raises:
            DivergenceError: a non-finite loss or gradient norm.
        """
        params = self.level_params[level.name].values()
        loss_sum = self.runner.forward_backward(level, self.path_of(level), windows, params)
        return self._reduce_clip_check(level, self.optims.get(level.steps_with), loss_sum)

    def _reduce_clip_check(self, level: Level, opt, loss_sum: torch.Tensor) -> tuple[float, float]:
        """Drop frozen gradients, all-reduce over ranks, let extensions adjust the gradients,
        clip to ``train.max_grad_norm`` and stop on a non-finite loss or gradient norm.
        Returns (mean loss over every micro-batch of every rank, gradient norm before
        clipping).

        Raises:
            DivergenceError: naming the step, fine step and level the step would have logged.
        """
        for p in self.frozen[level.name]:
            p.grad = None

        def hooks():
            for ext in self.extensions.values():
                ext.on_gradients(self, level)

        params = list(self.level_params[level.name].values())
        flag = self.signals.signum is not None
        loss, norm, stop = self.runner.reduce_and_clip(
            params, opt, loss_sum, self.max_norm, hooks, flag
        )
        self.signals.agreed = self.signals.agreed or stop
        if not math.isfinite(loss) or (not math.isfinite(norm) and self.runner.scaler is None):
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            fine = self.progress.fine_steps + (1 if level.is_fine else 0)
            self._diverged(what, value, self.progress.steps + 1, fine, level.name)
        return loss, norm

    def _diverged(self, what: str, value: float, step: int, fine: int, level: str) -> None:
        d = self.run_dir / ckpt.CKPT_DIR
        raise ckpt.divergence(what, value, step, fine, level, d if self.ctx.is_main else None)

    def _account(self, level: Level, loss: float, norm: float, lr: float, dt: float) -> None:
        """Counters (steps, FLOPs, tokens) and the step's record (``dt``: the step's seconds),
        written at the next flush."""
        f, tokens = self.plan.step_flops[level.name], self.plan.tokens_of(level.name)
        self.progress.count_step(level.name, level.is_fine, f.total, f.nonembed, tokens)
        values = {
            "train/loss": loss,
            "train/grad_norm": norm,
            "lr": lr,
            "perf/tok_per_s": tokens / dt,
        }
        rec = self.records.make(level.name, **values, **self.records.take_notes())
        if self.peak:
            rec["perf/mfu"] = f.total / dt / (self.peak * self.ctx.world)
        if level.is_fine:
            self.records.watch_spike(rec, loss, self.cfg.train.spike_factor)
        self.records.pending = rec

    def _wall(self) -> float:
        return self._wall0 + (time.perf_counter() - self._t0)

    def log_validation(self) -> None:
        """Evaluate (:meth:`evaluate`), add ``val/*`` to the pending record (or log an
        evaluation record), and stop on a non-finite validation loss (after logging it).

        Raises:
            DivergenceError: the validation loss is not finite (names the step)."""
        val = self.evaluate()
        self.progress.val_loss, self.progress.evaluated_at = val, self.progress.steps
        extra = {
            "val/loss": val,
            "val/ppl": math.exp(min(val, 50.0)),
            "perf/flops_eval": self.progress.flops_eval,
        }
        fine = self.plan.fine.name
        self.records.add(extra, fine)
        if not math.isfinite(val):
            self.records.flush()
            self._diverged(
                "validation loss", val, self.progress.steps, self.progress.fine_steps, fine
            )

    def _check_signal(self) -> None:
        signum = self.signals.raised(self.ctx.world)
        if signum is not None:
            path = self.save()
            raise ckpt.preempted(
                signum, self.progress.steps, self.progress.fine_steps, path, self.run_dir
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The trainer's part of a checkpoint (:func:`mltrain.train.checkpoint.make_state` adds
        what identifies the run): model, optimizers, position and counters (``progress``,
        ``wall_s`` up to now), sampler, RNGs, loss scaler, the pending record and notes, the
        random-path generator, every extension's state (under its name), the precision and
        the number of processes. Tensors on the CPU, plain values otherwise."""
        p = self.progress.state_dict()
        p["wall_s"] = self._wall()
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizers": self.optims.state_dict(),
            "progress": p,
            "total_steps": self.plan.iterations,
            "sampler": self.sampler.state_dict(),
            "rng": ckpt.rng_state(self.device),
            "scaler": self.runner.scaler.state_dict() if self.runner.scaler else None,
            **self.records.state_dict(),  # the last step's record, not yet written; notes
            "path_generator": self.path_generator.get_state(),
            "extensions": {n: e.state_dict() for n, e in self.extensions.items()},
            "precision": self.runner.precision,
            "world": self.ctx.world,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (model, optimizers, position, RNGs, counters); with
        ``train.precision=auto`` the run continues in the checkpoint's precision. Checkpoints
        of earlier versions: see :func:`mltrain.train.checkpoint.extension_states`."""
        self.model.load_state_dict(state["model"])
        saved = state.get("precision")
        self.runner.set_precision(prec.resolve(self.cfg.train.precision, self.device, saved))
        self.optims.load_state_dict(state["optimizers"])
        self.progress.load_state_dict(state["progress"])
        self.sampler.load_state_dict(state["sampler"])
        ckpt.set_rng_state(state["rng"], self.device)
        if self.runner.scaler and state.get("scaler"):
            self.runner.scaler.load_state_dict(state["scaler"])
        self.records.load_state_dict(state)
        if state.get("path_generator") is not None:
            self.path_generator.set_state(state["path_generator"])
        saved = ckpt.extension_states(state)
        for name, ext in self.extensions.items():
            if name in saved:
                ext.load_state_dict(saved[name])

    def healthy(self) -> bool:
        """Whether the state is worth resuming from: finite parameters, last training loss
        and last validation loss."""
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        val_ok = self.progress.val_loss is None or math.isfinite(self.progress.val_loss)
        loss = (self.records.pending or {}).get("train/loss")
        return finite and val_ok and (loss is None or math.isfinite(loss))

    def save(self, directory=None, keep: int | None = None):
        """Write a checkpoint of the current state (rank 0; every rank must call it, since it
        first checks that all ranks hold the same parameters) into ``directory`` (default the
        run's checkpoints); returns its path. A trunk's branch points do not become
        :attr:`last_checkpoint`."""
        D.assert_identical(self.model.parameters(), self.ctx.world)
        if not self.ctx.is_main:
            return None
        state = ckpt.make_state(
            self.state_dict(),
            config=self.config_container,
            data_fingerprint=self.data.content_fingerprint,
            wandb_id=self.tracker.run_id,
            healthy=self.healthy(),
        )
        keep = keep or int(self.cfg.train.keep_checkpoints)
        path = ckpt.save_checkpoint(
            state, directory or Path(self.run_dir) / ckpt.CKPT_DIR, self.progress.steps, keep
        )
        if directory is None:
            self.last_checkpoint = path
        return path
