"""The training loop: it walks the run's :class:`~mltrain.plan.plan.Plan` one operation at a time,
takes optimizer steps on the level each operation names, evaluates the fine model, logs one
record per optimizer step and writes checkpoints that resume exactly.

The position in the plan (iteration, operation index, steps done inside it), the open coarse
phases' snapshots and every counter are part of :meth:`Trainer.state_dict`, so a run stopped
anywhere (preemption signal, or a kill followed by a resume from the last checkpoint)
continues with the same losses, bit for bit on CPU at the same thread count.

One optimizer step is three parts: :meth:`Trainer._forward_backward` (micro-batches, gradient
accumulation), :meth:`Trainer._reduce_clip_check` (all-reduce, clipping, the divergence guard)
and :meth:`Trainer._account` (counters and the record). Record keys are written in
:meth:`Trainer._record` only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from mltrain.config import MLTrainConfig
from mltrain.data import BatchSampler, DataBundle, eval_windows
from mltrain.errors import DivergenceError, Preempted
from mltrain.levels.base import Level, level_parameters
from mltrain.model.flops import forward_flops, peak_flops
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.plan import operations
from mltrain.plan.plan import Plan
from mltrain.plan.vcycle import Train
from mltrain.train import checkpoint as ckpt
from mltrain.train import distributed as D
from mltrain.train.optim import LevelOptimizers, level_optimizers, make_schedule
from mltrain.train.tracking import Tracker

log = logging.getLogger(__name__)

__all__ = ["Trainer", "Progress", "Preempted"]


@dataclass
class Progress:
    """Where the run is and what it has spent (all restored on resume).

    ``step`` counts optimizer steps of every level; ``fine_steps`` fine optimizer steps;
    ``iteration`` is the plan iteration being run, ``op`` the index of the operation inside it
    and ``inner`` the steps already taken inside that operation. FLOPs are counts (with head /
    non-embedding), ``wall_s`` seconds since the run first started.
    """

    step: int = 0
    fine_steps: int = 0
    iteration: int = 0
    op: int = 0
    inner: int = 0
    flops: int = 0
    flops_nonembed: int = 0
    flops_eval: int = 0
    flops_level: dict = field(default_factory=dict)
    tokens: int = 0
    tokens_level: dict = field(default_factory=dict)  # per level, only when a level has K > 1
    wall_s: float = 0.0
    val_loss: float | None = None
    loss_ema: float | None = None
    evaluated_at: int = -1
    logged_step: int = 0  # the last step whose record is in metrics.jsonl

    @classmethod
    def from_state(cls, state: dict) -> Progress:
        state = dict(state)
        if "k" in state:  # checkpoints written before the plan refactor
            state["iteration"] = state.pop("k")
        return cls(**state)


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
        self.config_container = config_container or {}
        self.cfg, self.model, self.plan, self.data = cfg, model, plan, data
        self.tracker, self.ctx, self.run_dir = tracker, ctx, run_dir
        c, t = cfg.coarsening, cfg.train
        self.levels = {lv.name: lv for lv in plan.levels}
        self.fine = plan.fine
        self.delta = float(c.delta)
        self.lr_scale = float(c.coarse_lr_scale)
        self.level_params = {
            lv.name: level_parameters(model, lv, c.train_shared) for lv in plan.levels
        }
        self.all_params = dict(model.named_parameters())
        # parameters a coarse path uses but must not train (train_shared=false): grads dropped
        self.frozen = {
            name: [
                p
                for n, p in self.all_params.items()
                if not n.startswith("blocks.") and n not in params
            ]
            for name, params in self.level_params.items()
        }
        self.optims: LevelOptimizers = level_optimizers(
            cfg.optimizer, c.optimizer_state, self.level_params, fused=ctx.device.type == "cuda"
        )
        self.lr_factor = make_schedule(cfg.schedule, plan.iterations)
        self.accum = int(t.grad_accum)
        self.micro = int(cfg.data.batch_size)
        self.seq_len = int(cfg.model.seq_len)
        self.global_batch = self.micro * self.accum * ctx.world
        self.sampler = BatchSampler(data.train, self.seq_len, seed=int(t.seed) + 1)
        self.val_batches = eval_windows(data.val, self.seq_len, int(t.eval_batches) * self.micro)
        self.eval_flops = forward_flops(
            len(self.fine.blocks),
            model.n_embd,
            self.seq_len,
            model.vocab_size,
            len(self.val_batches) * self.seq_len,
        )
        self.p = Progress(flops_level={lv.name: 0 for lv in plan.levels})
        if any(
            lv.patch > 1 for lv in plan.levels
        ):  # perf/tokens_level/<name> (mltrain.levels.patch)
            self.p.tokens_level = {lv.name: 0 for lv in plan.levels}
        self.phases: list[tuple[str, dict[str, torch.Tensor]]] = []
        self.deferred: list[dict[str, torch.Tensor]] = []
        self.autocast, self.scaler = self._precision(t.precision)
        self.max_norm = float(t.max_grad_norm) or math.inf
        self.peak = (
            peak_flops(torch.cuda.get_device_name(ctx.device))
            if ctx.device.type == "cuda"
            else None
        )
        # random sub-paths draw from their own generator (checkpointed), never from torch's
        self.path_generator = torch.Generator().manual_seed(int(t.seed) + 2)
        self._notes: dict[str, float] = {}
        self.extensions = [e for e in (f(self) for f in operations.EXTENSIONS) if e is not None]
        self._pending: dict | None = None
        self.last_batch: torch.Tensor | None = None
        self._signal: int | None = None
        self._t0 = time.perf_counter()
        self._wall0 = 0.0
        self.last_checkpoint = None
        self.branch_points: dict[int, float] = {}  # iteration -> budget scale (a trunk's)

    @property
    def total_steps(self) -> int:
        """Iterations of the run (fine steps in a single-level or V-cycle run)."""
        return self.plan.iterations

    # ------------------------------------------------------------------ set-up helpers
    def _precision(self, precision: str):
        dev = self.ctx.device.type
        if precision == "auto":
            precision = "bf16" if dev == "cuda" else "fp32"
        if precision == "fp32":
            return contextlib.nullcontext, None
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        scaler = torch.amp.GradScaler(dev) if precision == "fp16" else None
        return (lambda: torch.autocast(dev, dtype=dtype)), scaler

    # ------------------------------------------------------------------ the loop
    def fit(self) -> float:
        """Run (or continue) the plan to its last iteration; return the final validation loss
        (fine model).

        Raises:
            DivergenceError: a non-finite loss, gradient or validation loss (names the step
                and level).
            Preempted: SIGTERM/SIGINT arrived; a checkpoint was saved first.
        """
        self._t0 = time.perf_counter()
        self._wall0 = self.p.wall_s
        handlers = self._install_signal_handlers()
        try:
            if self.p.step == 0 and self.p.evaluated_at < 0:
                self._evaluate()
                log.info("step 0: val/loss %.4f (before training)", self.p.val_loss)
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_steps,
                initial=self.p.iteration,
                unit="fine step",
                dynamic_ncols=True,
                disable=not (self.cfg.train.progress and sys.stdout.isatty() and self.ctx.is_main),
            )
            with bar:
                while self.p.iteration < self.total_steps:
                    ops = self.plan.ops(self.p.iteration)
                    while self.p.op < len(ops):
                        self.run_op(ops[self.p.op])
                        self.p.op += 1
                        self.p.inner = 0
                    self.p.iteration += 1
                    self.p.op = 0
                    self._settle()
                    self._end_iteration()
                    bar.update(1)
            if self.p.evaluated_at != self.p.step:
                self._evaluate()
            self._flush()
            self.save()
            return float(self.p.val_loss)
        finally:
            self._restore_signal_handlers(handlers)

    def run_op(self, op) -> None:
        """Carry out one operation of the plan (:data:`HANDLERS`) and count what it spends
        besides optimizer steps (:meth:`mltrain.plan.vcycle.Operation.extra_flops`)."""
        operations.HANDLERS[type(op)](self, op)
        if not isinstance(op, Train):
            extra = op.extra_flops(self.plan)
            if extra.total:
                self.p.flops += extra.total
                self.p.flops_nonembed += extra.nonembed
                self.p.flops_level[op.booked_to(self.plan)] += extra.total

    def _settle(self) -> None:
        """Bring the last step's record (not yet written) up to what the iteration spent and
        noted after that step (e.g. a line search closing the iteration's last phase), so the
        run's last record holds every FLOP of the plan."""
        rec, p = self._pending, self.p
        if rec is None:
            return
        rec.update(self._notes)
        self._notes = {}
        rec["perf/flops"], rec["perf/flops_nonembed"] = p.flops, p.flops_nonembed
        rec["perf/tokens"] = p.tokens
        rec.update({f"perf/flops_level/{n}": v for n, v in p.flops_level.items()})

    def note(self, key: str, value: float) -> None:
        """A value for the next record (e.g. the δ a line search chose, a growth's loss jump)."""
        self._notes[key] = value

    def path_of(self, level: Level) -> BlockPath:
        """The path of ``level``'s next step (a random sub-path draws it here)."""
        return level.sample_path(self.path_generator)

    def optimizer_of(self, level: Level):
        """The optimizer a step of ``level`` uses (``level.optimizer``, else its own)."""
        return self.optims.get(level.optimizer or level.name)

    @property
    def stage(self):
        """The plan stage of the current iteration."""
        return self.plan._locate(min(self.p.iteration, self.total_steps - 1))[0]

    def _end_iteration(self) -> None:
        t = self.cfg.train
        k = self.p.iteration
        if k % t.eval_every == 0 or k == self.total_steps:
            self._evaluate()
        self._flush()
        if k % t.log_every == 0 or k == self.total_steps:
            self._console(k)
        if t.checkpoint_every and k % t.checkpoint_every == 0 and k < self.total_steps:
            self.save()
        if k in self.branch_points:  # a trunk's kept states (mltrain.train.branch)
            self.save(self.run_dir / "branches", keep=10**9)
        self._check_signal()

    # ------------------------------------------------------------------ one optimizer step
    def _step(self, level: Level) -> None:
        t_start = time.perf_counter()
        self._flush()
        opt = self.optimizer_of(level)
        lr = self.optims.peak_lr * self.lr_factor(self.p.iteration)
        lr *= 1.0 if level.is_fine or self.stage.level == level.name else self.lr_scale
        LevelOptimizers.set_lr(opt, lr)
        loss_norm = self._reduce_clip_check(level, opt, self._forward_backward(level))
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        for ext in self.extensions:
            if hasattr(ext, "after_step"):
                ext.after_step(self, level)
        self.model.zero_grad(set_to_none=True)
        self._account(level, loss_norm, lr, time.perf_counter() - t_start)

    def _forward_backward(self, level: Level) -> torch.Tensor:
        """Forward and backward over this rank's micro-batches of the next global batch
        (``(B, T+1)`` windows); gradients accumulate in ``.grad``. Returns the sum over this
        rank's micro-batches of their mean loss (nats/token, a 0-d tensor)."""
        K = level.patch
        batch = self.sampler.next(self.global_batch, K * (self.seq_len + 1))
        per_rank = self.micro * self.accum
        batch = batch[self.ctx.rank * per_rank : (self.ctx.rank + 1) * per_rank]
        if self.ctx.device.type == "cuda":
            batch = batch.pin_memory().to(self.ctx.device, non_blocking=True)
        self.last_batch = batch  # this step's windows on this rank (extensions may reuse them)
        path = self.path_of(level)
        loss_sum = torch.zeros((), device=self.ctx.device)
        for micro in batch.split(self.micro):
            with self.autocast():
                if K == 1:
                    _, loss = self.model(micro[:, :-1], micro[:, 1:], path=path)
                else:  # positions of K tokens: inputs K·T tokens, targets the K next per position
                    _, loss = self.model(micro[:, :-K], micro[:, K:], path=path, patch=K)
            scaled = loss / self.accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach().float()
        return loss_sum

    def _reduce_clip_check(self, level: Level, opt, loss_sum: torch.Tensor) -> tuple[float, float]:
        """Drop frozen gradients, all-reduce over ranks, clip to ``train.max_grad_norm`` and
        stop on a non-finite loss or gradient norm. Returns (mean loss over every micro-batch
        of every rank, gradient norm before clipping) as floats.

        Raises:
            DivergenceError: naming the step, fine step and level the step would have logged.
        """
        for p in self.frozen[level.name]:
            p.grad = None
        params = list(self.level_params[level.name].values())
        D.all_reduce_grads(params, self.ctx.world)
        for ext in self.extensions:
            if hasattr(ext, "on_gradients"):
                ext.on_gradients(self, level)
        loss_avg = D.all_reduce_sum(loss_sum, self.ctx.world) / (self.accum * self.ctx.world)
        if self.scaler:
            self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        loss_val, norm_val = torch.stack([loss_avg, norm.float()]).tolist()
        if not math.isfinite(loss_val) or (not math.isfinite(norm_val) and self.scaler is None):
            what = "loss" if not math.isfinite(loss_val) else "gradient norm"
            fine = self.p.fine_steps + (1 if level.is_fine else 0)
            value = loss_val if what == "loss" else norm_val
            self._diverged(what, value, self.p.step + 1, fine, level.name)
        return loss_val, norm_val

    def _diverged(self, what: str, value: float, step: int, fine: int, level: str) -> None:
        """Raise :class:`DivergenceError` naming where (``step``, ``fine`` step, ``level``, as
        the failing step's record numbers them) and the newest finite checkpoint."""
        good = ckpt.latest_healthy(self.run_dir / ckpt.CKPT_DIR) if self.ctx.is_main else None
        kept = (
            f"the last good checkpoint is kept: {good}"
            if good
            else "no finite checkpoint had been written yet"
        )
        err = DivergenceError(
            f"non-finite {what} ({value}) at step {step} (fine step {fine}, level {level}); "
            f"stopped, {kept}"
        )
        err.where = {"step": step, "fine_step": fine, "level": level}
        raise err

    def _account(self, level: Level, loss_norm: tuple[float, float], lr: float, dt: float) -> None:
        """Counters (steps, FLOPs, tokens) and the step's record (``loss_norm``: training loss
        in nats/token and gradient norm before clipping; ``dt``: the step's seconds), sent at
        the next flush."""
        loss_val, norm_val = loss_norm
        p = self.p
        p.step += 1
        if level.is_fine:
            p.fine_steps += 1
        f = self.plan.step_flops[level.name]
        p.flops += f.total
        p.flops_nonembed += f.nonembed
        p.flops_level[level.name] += f.total
        tokens = self.plan.tokens_of(level.name)
        p.tokens += tokens
        if p.tokens_level:
            p.tokens_level[level.name] += tokens
        rec = self._record(
            level.name,
            **{
                "train/loss": loss_val,
                "train/grad_norm": norm_val,
                "lr": lr,
                "perf/tok_per_s": tokens / dt,
                **self._notes,
            },
        )
        self._notes = {}
        if self.peak:
            rec["perf/mfu"] = f.total / dt / (self.peak * self.ctx.world)
        spike = self.cfg.train.spike_factor
        if level.is_fine:
            if spike and p.loss_ema is not None and loss_val > spike * p.loss_ema:
                rec["train/spike"] = 1
                log.warning(
                    "loss spike at step %d (fine step %d): %.4f > %.1f x running mean %.4f",
                    p.step,
                    p.fine_steps,
                    loss_val,
                    spike,
                    p.loss_ema,
                )
            p.loss_ema = loss_val if p.loss_ema is None else 0.9 * p.loss_ema + 0.1 * loss_val
        self._pending = rec

    def _record(self, level: str, **values) -> dict:
        """A metrics record (DESIGN.md section 5): position, ``values``, then the counters."""
        p = self.p
        return {
            "step": p.step,
            "fine_step": p.fine_steps,
            "level": level,
            **values,
            "perf/flops": p.flops,
            "perf/flops_nonembed": p.flops_nonembed,
            "perf/tokens": p.tokens,
            "perf/wall_s": self._wall(),
            **{f"perf/flops_level/{n}": v for n, v in p.flops_level.items()},
            **{f"perf/tokens_level/{n}": v for n, v in p.tokens_level.items()},
        }

    def _wall(self) -> float:
        return self._wall0 + (time.perf_counter() - self._t0)

    def _flush(self) -> None:
        if self._pending is not None:
            self.tracker.log(self._pending)
            self._pending = None
        self.p.logged_step = self.p.step

    # ------------------------------------------------------------------ evaluation
    @property
    def eval_level(self) -> Level:
        """The model validation measures: the level of the stage whose iteration ran last
        (before training: the first stage's). The fine level in a single-level or V-cycle run;
        in a coarse-to-fine run the path trained so far, so the evaluation that ends a coarse
        stage measures the coarse path, not the fine path before its growth."""
        p = self.p
        k = p.iteration - 1 if p.op == 0 and p.iteration > 0 else p.iteration
        return self.levels[self.plan._locate(min(k, self.total_steps - 1))[0].level]

    @torch.no_grad()
    def evaluate(self, path: BlockPath | None = None) -> float:
        """Mean cross-entropy (nats/token) on the fixed validation windows, at token level,
        along ``path`` (default: :attr:`eval_level`'s fixed path; a random sub-path level is
        measured on all its candidate blocks, i.e. the fine path)."""
        model = self.model
        if path is None:
            lv = self.eval_level
            path = model.fine_path() if lv.is_fine or lv.optimizer else lv.path
        was_training = model.training
        model.eval()
        total = torch.zeros(2, device=self.ctx.device, dtype=torch.float64)
        chunks = self.val_batches.split(self.micro)
        for i in range(self.ctx.rank, len(chunks), self.ctx.world):
            b = chunks[i].to(self.ctx.device)
            with self.autocast():
                _, loss = model(b[:, :-1], b[:, 1:], path=path)
            total += torch.stack(
                [loss.double() * len(b), torch.tensor(len(b), device=b.device, dtype=torch.float64)]
            )
        model.train(was_training)
        total = D.all_reduce_sum(total, self.ctx.world)
        return float(total[0] / total[1])

    def _evaluate(self) -> None:
        """Evaluate, add ``val/*`` to the pending record (or log an evaluation record), and
        stop on a non-finite validation loss (after logging it)."""
        val = self.evaluate()
        m, tokens = self.model, len(self.val_batches) * self.seq_len  # the path's own FLOPs
        n = self._eval_blocks()
        self.p.flops_eval += forward_flops(n, m.n_embd, self.seq_len, m.vocab_size, tokens).total
        self.p.val_loss = val
        self.p.evaluated_at = self.p.step
        extra = {
            "val/loss": val,
            "val/ppl": math.exp(min(val, 50.0)),
            "perf/flops_eval": self.p.flops_eval,
        }
        if self._pending is not None:
            self._pending.update(extra)
        else:
            self.tracker.log(self._record(self.fine.name) | extra)
        if not math.isfinite(val):
            self._flush()
            p = self.p
            self._diverged("validation loss", val, p.step, p.fine_steps, self.fine.name)

    def _eval_blocks(self) -> int:
        lv = self.eval_level
        return len(self.fine.blocks) if lv.is_fine or lv.optimizer else lv.n_blocks

    def _console(self, k: int) -> None:
        last = self.p
        log.info(
            "fine step %d/%d | step %d | val %s | FLOPs %.3e | wall %.0f s",
            k,
            self.total_steps,
            last.step,
            f"{last.val_loss:.4f}" if last.evaluated_at == last.step else "-",
            last.flops,
            self._wall(),
        )

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            self._signal = signum
            log.warning(
                "received %s: stopping after the current optimizer step",
                signal.Signals(signum).name,
            )

        return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signal_handlers(self, handlers) -> None:
        for s, h in handlers.items():
            signal.signal(s, h)

    def _check_signal(self) -> None:
        if D.any_rank(self._signal is not None, self.ctx.world):
            signum = self._signal or signal.SIGTERM
            path = self.save()
            err = Preempted(
                f"stopped by {signal.Signals(signum).name} at step {self.p.step} (fine step {self.p.fine_steps}); "
                f"checkpoint {path}; continue with train.resume=auto \"hydra.run.dir='{self.run_dir}'\""
            )
            err.exit_code = 128 + int(signum)
            raise err

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The trainer's part of a checkpoint (see :mod:`mltrain.train.checkpoint`)."""
        rng = ckpt.rng_state()
        p = asdict(self.p)
        p["wall_s"] = self._wall()
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizers": self.optims.state_dict(),
            "progress": p,
            "total_steps": self.total_steps,
            "phases": [[name, {k: v.cpu() for k, v in snap.items()}] for name, snap in self.phases],
            "deferred": [{k: v.cpu() for k, v in d.items()} for d in self.deferred],
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "pending": self._pending,  # the last step's record, not yet written (see _flush)
            "notes": dict(self._notes),
            "path_generator": self.path_generator.get_state(),
            "extensions": {e.name: e.state_dict() for e in self.extensions},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (model, optimizers, position, RNGs, counters)."""
        dev = self.ctx.device
        self.model.load_state_dict(state["model"])
        self.optims.load_state_dict(state["optimizers"])
        self.p = Progress.from_state(state["progress"])
        self.phases = [
            (name, {k: v.to(dev) for k, v in snap.items()}) for name, snap in state["phases"]
        ]
        self.deferred = [{k: v.to(dev) for k, v in d.items()} for d in state["deferred"]]
        self.sampler.load_state_dict(state["sampler"])
        ckpt.set_rng_state(state["rng"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self._pending = state.get("pending")
        self._notes = dict(state.get("notes") or {})
        if state.get("path_generator") is not None:
            self.path_generator.set_state(state["path_generator"])
        saved = state.get("extensions") or {}
        for e in self.extensions:
            if e.name in saved:
                e.load_state_dict(saved[e.name])

    def healthy(self) -> bool:
        """Whether the state is worth resuming from: finite parameters, last training loss
        and last validation loss."""
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        val_ok = self.p.val_loss is None or math.isfinite(self.p.val_loss)
        loss = (self._pending or {}).get("train/loss")
        return finite and val_ok and (loss is None or math.isfinite(loss))

    def save(self, directory=None, keep: int | None = None):
        """Write a checkpoint of the current state (rank 0; every rank must call it, since it
        first checks that all ranks hold the same parameters) into ``directory`` (default the
        run's checkpoints, keeping ``train.keep_checkpoints``); returns its path."""
        D.assert_identical(self.model.parameters(), self.ctx.world)
        if not self.ctx.is_main:
            return None
        path = ckpt.save_checkpoint(
            ckpt.make_state(
                self.state_dict(),
                config=self.config_container,
                data_fingerprint=self.data.content_fingerprint,
                wandb_id=self.tracker.run_id,
                healthy=self.healthy(),
            ),
            directory or self.run_dir / ckpt.CKPT_DIR,
            self.p.step,
            keep or int(self.cfg.train.keep_checkpoints),
        )
        if directory is None:
            self.last_checkpoint = path
        return path


# operations of other modules register their handlers on import
import mltrain.schemes.growth  # noqa: E402, F401
