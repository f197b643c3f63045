"""The training loop: it walks the run's :class:`~mltrain.plan.plan.Plan` one operation at a
time (each by its handler, :data:`mltrain.plan.ops.HANDLERS`), takes optimizer steps on the
level a :class:`~mltrain.plan.ops.Train` names, evaluates, logs one record per optimizer step
and writes checkpoints that resume exactly. It implements :class:`mltrain.train.state.RunState`,
the only thing schemes see of it.

The position in the plan (iteration, operation index, steps done inside it), every counter and
every extension's state are part of :meth:`Trainer.state_dict`, so a run stopped anywhere
(preemption signal, or a kill followed by a resume from the last checkpoint) continues with
the same losses, bit for bit on CPU at the same thread count.
"""

from __future__ import annotations

import logging
import math
import sys
import time

import torch

from mltrain.config import MLTrainConfig
from mltrain.data import BatchSampler, DataBundle, eval_windows
from mltrain.errors import Preempted
from mltrain.levels import Level
from mltrain.levels.transfer import frozen_parameters
from mltrain.model.flops import forward_flops
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.plan.ops import HANDLERS, Train, check_handled, handles
from mltrain.plan.plan import Plan
from mltrain.train import checkpoint as ckpt
from mltrain.train import distributed as D
from mltrain.train import precision as prec
from mltrain.train.clock import StepClock
from mltrain.train.optim import LevelOptimizers, level_optimizers, make_schedule
from mltrain.train.progress import Progress, Records
from mltrain.train.signals import SignalFlag
from mltrain.train.state import Extension, build_extensions
from mltrain.train.step import Step
from mltrain.train.tracking import Tracker

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
            cfg.coarsening.vcycle.optimizer_state,
            self.level_params,
            fused=ctx.device.type == "cuda",
        )
        self.lr_factor = make_schedule(cfg.schedule, plan.iterations)
        self.seq_len = int(cfg.model.seq_len)
        precision = prec.resolve(t.precision, ctx.device)
        self.step = Step(model, ctx, int(cfg.data.batch_size), int(t.grad_accum), precision)
        self.sampler = BatchSampler(data.train, self.seq_len, seed=int(t.seed) + 1)
        # one fixed validation set whatever the micro-batch, accumulation or world size
        self.val_batches = eval_windows(data.val, self.seq_len, int(t.eval_sequences))
        self.p = Progress.start(plan.levels)
        self.max_norm = float(t.max_grad_norm) or math.inf
        self.clock = StepClock(ctx.device)  # synchronizes CUDA before each reading
        self.peak = prec.device_peak(ctx.device, precision)  # FLOP/s of MFU; None: unknown
        # random sub-paths draw from their own generator (checkpointed), never from torch's
        self.path_generator = torch.Generator().manual_seed(int(t.seed) + 2)
        self._t0, self._wall0 = time.perf_counter(), 0.0
        self.records = Records(tracker, self.p, self._wall)
        self.signals = SignalFlag()
        self.last_batch: torch.Tensor | None = None
        self.last_checkpoint = None
        self.branch_points: dict[int, float] = {}  # iteration -> budget scale (a trunk's)
        self.extensions: dict[str, Extension] = build_extensions(self)

    # ------------------------------------------------------------------ RunState
    @property
    def iteration(self) -> int:
        return self.p.iteration

    @property
    def precision(self) -> str:
        """The resolved ``train.precision`` (``fp32``, ``bf16`` or ``fp16``)."""
        return self.step.precision

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
        """``steps`` optimizer steps on ``level``, continuing from ``p.inner`` done; the
        learning rate is the schedule's times ``lr_scale``."""
        while self.p.inner < steps:
            self.take_step(self.levels[level], lr_scale)
            self.p.inner += 1
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
        chunks = self.val_batches.split(self.step.micro)
        val = self.step.mean_loss(path, list(chunks[self.ctx.rank :: self.ctx.world]), m)
        tokens = len(self.val_batches) * self.seq_len
        n = len(path.blocks)
        self.p.flops_eval += forward_flops(n, m.n_embd, self.seq_len, m.vocab_size, tokens).total
        return val

    @property
    def eval_level(self) -> Level:
        """The level of the stage whose iteration ran last (before training: the first
        stage's), so the evaluation that ends a coarse stage measures the coarse path."""
        p = self.p
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

        self._t0, self._wall0 = time.perf_counter(), self.p.wall_s
        self.signals.install()
        try:
            if self.p.step == 0 and self.p.evaluated_at < 0:
                self._evaluate()
                log.info("step 0: val/loss %.4f (before training)", self.p.val_loss)
            show = self.cfg.train.progress and sys.stdout.isatty() and self.ctx.is_main
            total = self.plan.iterations
            with tqdm(
                total=total, initial=self.p.iteration, unit="fine step", disable=not show
            ) as bar:
                while self.p.iteration < total:
                    ops = self.plan.ops(self.p.iteration)
                    while self.p.op < len(ops):
                        self.run_op(ops[self.p.op])
                        self.p.op, self.p.inner = self.p.op + 1, 0
                    self.p.iteration, self.p.op = self.p.iteration + 1, 0
                    self.records.settle()
                    self._end_iteration()
                    bar.update(1)
            if self.p.evaluated_at != self.p.step:
                self._evaluate()
            self.records.flush()
            self.save()
            return float(self.p.val_loss)
        finally:
            self.signals.restore()

    def run_op(self, op) -> None:
        """Carry out one operation of the plan and count what it spends besides optimizer
        steps (:meth:`mltrain.plan.ops.Operation.extra_flops`)."""
        HANDLERS[type(op)](self, op)
        if not isinstance(op, Train):
            extra = op.extra_flops(self.plan)
            if extra.total:
                self.p.spend(op.booked_to(self.plan), extra.total, extra.nonembed)

    def _end_iteration(self) -> None:
        t, k = self.cfg.train, self.p.iteration
        last = k == self.plan.iterations
        if k % t.eval_every == 0 or last:
            self._evaluate()
        self.records.flush()
        if k % t.log_every == 0 or last:
            self.records.console(k, self.plan.iterations)
        if t.checkpoint_every and k % t.checkpoint_every == 0 and not last:
            self.save()
        if k in self.branch_points:  # a trunk's kept states (mltrain.train.branch)
            self.save(self.run_dir / "branches", keep=10**9)
        self._check_signal()

    # ------------------------------------------------------------------ one optimizer step
    def take_step(self, level: Level, lr_scale: float = 1.0) -> None:
        """One optimizer step of ``level`` at ``lr_scale`` times the schedule's learning rate:
        the next global batch, forward/backward, all-reduce, clipping, the update, the record."""
        self.clock.start()
        self.records.flush()
        opt = self.optims.get(level.steps_with)
        lr = self.optims.peak_lr * self.lr_factor(self.p.iteration)
        lr *= lr_scale
        LevelOptimizers.set_lr(opt, lr)
        batch = self.step.next_windows(self.sampler, level.window_tokens(self.seq_len))
        self.last_batch = batch  # this step's windows on this rank (extensions may reuse them)
        path = self.path_of(level)
        params = self.level_params[level.name].values()
        loss_sum = self.step.forward_backward(level, path, batch, params)
        loss, norm = self._reduce_clip_check(level, opt, loss_sum)
        self.step.update(opt)
        for ext in self.extensions.values():
            ext.after_step(self, level)
        self.model.zero_grad(set_to_none=True)
        level.module(self.model).zero_grad(set_to_none=True)  # a level on its own tensors
        self._account(level, loss, norm, lr, self.clock.stop())

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
        loss, norm, stop = self.step.reduce_and_clip(
            params, opt, loss_sum, self.max_norm, hooks, flag
        )
        self.signals.agreed = self.signals.agreed or stop
        if not math.isfinite(loss) or (not math.isfinite(norm) and self.step.scaler is None):
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            fine = self.p.fine_steps + (1 if level.is_fine else 0)
            self._diverged(what, value, self.p.step + 1, fine, level.name)
        return loss, norm

    def _diverged(self, what: str, value: float, step: int, fine: int, level: str) -> None:
        d = self.run_dir / ckpt.CKPT_DIR
        raise ckpt.divergence(what, value, step, fine, level, d if self.ctx.is_main else None)

    def _account(self, level: Level, loss: float, norm: float, lr: float, dt: float) -> None:
        """Counters (steps, FLOPs, tokens) and the step's record (``dt``: the step's seconds),
        written at the next flush."""
        f, tokens = self.plan.step_flops[level.name], self.plan.tokens_of(level.name)
        self.p.count_step(level.name, level.is_fine, f.total, f.nonembed, tokens)
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

    def _evaluate(self) -> None:
        """Evaluate, add ``val/*`` to the pending record (or log an evaluation record), and
        stop on a non-finite validation loss (after logging it)."""
        val = self.evaluate()
        self.p.val_loss, self.p.evaluated_at = val, self.p.step
        extra = {
            "val/loss": val,
            "val/ppl": math.exp(min(val, 50.0)),
            "perf/flops_eval": self.p.flops_eval,
        }
        fine = self.plan.fine.name
        self.records.add(extra, fine)
        if not math.isfinite(val):
            self.records.flush()
            self._diverged("validation loss", val, self.p.step, self.p.fine_steps, fine)

    def _check_signal(self) -> None:
        signum = self.signals.raised(self.ctx.world)
        if signum is not None:
            path = self.save()
            raise ckpt.preempted(signum, self.p.step, self.p.fine_steps, path, self.run_dir)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The trainer's part of a checkpoint (:func:`mltrain.train.checkpoint.trainer_state`)."""
        return ckpt.trainer_state(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (model, optimizers, position, RNGs, counters)."""
        ckpt.load_trainer_state(self, state)

    def save(self, directory=None, keep: int | None = None):
        """Write a checkpoint of the current state (rank 0; every rank must call it, since it
        first checks that all ranks hold the same parameters) into ``directory`` (default the
        run's checkpoints); returns its path. A trunk's branch points do not become
        :attr:`last_checkpoint`."""
        D.assert_identical(self.model.parameters(), self.ctx.world)
        if not self.ctx.is_main:
            return None
        path = ckpt.save_trainer(self, directory, keep)
        if directory is None:
            self.last_checkpoint = path
        return path
