"""Running the model over a global batch of windows: forward and backward passes, shared by
optimizer steps and by the passes schemes add (a τ-correction's gradients, a line search's
losses, a growth's evaluations). The trainer holds one (``run.runner``).

A global batch of ``micro × accum × world`` windows is shared out among ranks
(:meth:`BatchRunner.shard`), each rank's share split into micro-batches of ``data.batch_size``
windows; losses are means over tokens (nats/token) and gradients means over every micro-batch
of every rank, as in a training step.
"""

from __future__ import annotations

import torch

from mltrain.levels import Level
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.train import distributed as D
from mltrain.train import precision as prec
from mltrain.train.distributed import DistContext
from mltrain.train.grad_sync import BucketedAllReduce


class BatchRunner:
    """Forward and backward passes of ``model`` on windows of tokens, a global batch shared out
    among ranks and split into micro-batches (with the precision's autocast and loss scaler).

    Args:
        model: the fine model.
        ctx: rank, world size and device.
        micro: windows per micro-batch (``data.batch_size``).
        accum: micro-batches per optimizer step and rank (``train.grad_accum``).
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved; fp16 uses a GradScaler).
    """

    def __init__(
        self, model: ODETransformer, ctx: DistContext, micro: int, accum: int, precision: str
    ) -> None:
        self.model, self.ctx, self.micro, self.accum = model, ctx, micro, accum
        self.global_batch = micro * accum * ctx.world
        self.grad_sync = BucketedAllReduce(ctx.world)  # under torchrun: overlaps backward
        self.set_precision(precision)

    def set_precision(self, precision: str) -> None:
        """Use the resolved ``precision`` (:mod:`mltrain.train.precision`): autocast and loss
        scaler."""
        self.precision = precision
        self.autocast, self.scaler = prec.autocast_and_scaler(precision, self.ctx.device)

    def loss_scale(self) -> float:
        """The fp16 loss scale gradients carry (1 without a scaler)."""
        return float(self.scaler.get_scale()) if self.scaler else 1.0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a batch ``(B, W)``: the rank's contiguous share
        (``torch.tensor_split``; equal shares when B is a multiple of the world size)."""
        if self.ctx.world == 1:
            return batch
        return batch.tensor_split(self.ctx.world)[self.ctx.rank]

    def next_windows(self, sampler, window_tokens: int) -> torch.Tensor:
        """This rank's share ``(micro × accum, W)`` of the next global batch of windows of
        ``window_tokens`` tokens, on the device (pinned, non-blocking copies on CUDA)."""
        batch = self.shard(sampler.next(self.global_batch, window_tokens))
        if self.ctx.device.type == "cuda":
            batch = batch.pin_memory().to(self.ctx.device, non_blocking=True)
        return batch

    def update(self, opt) -> None:
        """The optimizer step (through the loss scaler for fp16)."""
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def forward_backward(
        self, level: Level, path: BlockPath, windows: torch.Tensor, params=()
    ) -> torch.Tensor:
        """Forward and backward over this rank's ``windows`` ``(micro × accum, W)``, one
        micro-batch at a time; gradients accumulate in ``.grad`` (each micro-batch's mean loss
        divided by ``accum``, scaled for fp16). Under torchrun the gradients of ``params`` are
        all-reduced in buckets while the last micro-batch's backward runs
        (:class:`mltrain.train.grad_sync.BucketedAllReduce`). Returns the sum of the
        micro-batches' mean losses (nats/token, a 0-d float tensor)."""
        loss_sum = torch.zeros((), device=self.ctx.device)
        micros = windows.split(self.micro)
        for i, micro in enumerate(micros):
            if i == len(micros) - 1 and self.ctx.world > 1:  # all-reduce during the last backward
                self.grad_sync.arm(params)
            with self.autocast():
                loss = level.loss(self.model, micro, path)
            scaled = loss / self.accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach().float()
        return loss_sum

    def reduce_and_clip(
        self, params: list, opt, loss_sum: torch.Tensor, max_norm: float, on_gradients, flag: bool
    ) -> tuple[float, float, bool]:
        """After :meth:`forward_backward`: finish the gradients' all-reduce, call
        ``on_gradients()`` (extensions adjust them), unscale (fp16) and clip them to
        ``max_norm``. This rank's preemption ``flag`` travels with the loss's all-reduce (no
        collective of its own). Returns (mean loss over every micro-batch of every rank in
        nats/token, gradient norm before clipping, whether any rank raised its flag)."""
        world = self.ctx.world
        if world > 1:
            self.grad_sync.finish()  # the buckets launched by the last backward's hooks
        on_gradients()
        flag_t = torch.full((), float(flag), device=loss_sum.device)
        loss_avg, stop = D.all_reduce_sum(torch.stack([loss_sum, flag_t]), world)
        loss_avg = loss_avg / (self.accum * world)
        if self.scaler:
            self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        loss, norm, stop = torch.stack([loss_avg, norm.float(), stop]).tolist()
        return loss, norm, stop > 0

    def gradient(
        self,
        level: Level,
        path: BlockPath,
        windows: torch.Tensor,
        params: list[torch.nn.Parameter],
        seed: int,
    ) -> list[torch.Tensor]:
        """The gradient of ``level``'s training loss along ``path`` with respect to ``params``
        on this rank's ``windows`` ``(B_rank, W)``, averaged over micro-batches and ranks as a
        training step's gradient, without loss scaling; ``.grad`` is not touched. Dropout draws
        from torch's RNG seeded with ``seed`` inside a fork (the global RNG is unchanged)."""
        grads = [torch.zeros_like(p) for p in params]
        cuda = self.ctx.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.ctx.device] if cuda else []):
            torch.manual_seed(seed)
            for micro in windows.to(self.ctx.device).split(self.micro):
                with self.autocast():
                    loss = level.loss(self.model, micro, path)
                gs = torch.autograd.grad(loss.float() / self.accum, params, allow_unused=True)
                for acc, g in zip(grads, gs):
                    if g is not None:
                        acc.add_(g.to(acc.dtype))
        if self.ctx.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            D.all_reduce_sum(flat, self.ctx.world).div_(self.ctx.world)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        return grads

    @torch.no_grad()
    def mean_loss(
        self, path: BlockPath, chunks: list[torch.Tensor], model: ODETransformer | None = None
    ) -> float:
        """Mean next-token cross-entropy (nats/token) along ``path`` of ``model`` (default: the
        fine model; a width level's narrow model) over every rank's ``chunks`` (this rank's
        windows ``(b, T+1)``, each its own forward), in evaluation mode: each chunk's mean
        weighted by its token count (a shorter last chunk weighs less), summed over ranks, so
        the result is the same tokens' mean whatever the micro-batch or world size."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        total = torch.zeros(2, device=self.ctx.device, dtype=torch.float64)
        for chunk in chunks:
            b = chunk.to(self.ctx.device)
            with self.autocast():
                _, loss = model(b[:, :-1], b[:, 1:], path=path)
            n = b[:, 1:].numel()  # tokens predicted
            total += torch.stack(
                [loss.double() * n, torch.tensor(n, device=b.device, dtype=torch.float64)]
            )
        model.train(was_training)
        total = D.all_reduce_sum(total, self.ctx.world)
        return float(total[0] / total[1])
