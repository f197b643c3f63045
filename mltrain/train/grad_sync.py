"""Gradient averaging over ranks that overlaps the backward pass: bucketed asynchronous
all-reduces launched from gradient hooks (the scheme of PyTorch DDP, Li et al. 2020,
"PyTorch Distributed", VLDB, section 3.2), over exactly the parameters a step trains.

A coarse level trains a subset of the parameters, and one tensor may be shared by several
levels, so the hooks are put on the step's parameters for its last backward only
(:meth:`BucketedAllReduce.arm`) and taken off when the step's gradients are complete
(:meth:`BucketedAllReduce.finish`). Buckets are filled in reverse parameter order (roughly
the order backward produces gradients); a bucket is all-reduced as soon as its last gradient
has accumulated, while backward goes on. Every rank runs the same graph, so every rank
launches the same buckets in the same order. The averaged gradients equal those of one flat
all-reduce (:func:`mltrain.train.distributed.all_reduce_grads`) element for element: each
element is the same sum over ranks, divided by the same world size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size


class BucketedAllReduce:
    """Average ``.grad`` over ``world`` ranks in buckets of about ``bucket_bytes`` bytes.

    Usage per optimizer step: ``arm(params)`` before the step's last backward, then
    ``finish()`` after it (gradients of parameters without a hook call are reduced there).
    """

    def __init__(self, world: int, bucket_bytes: int = BUCKET_BYTES) -> None:
        self.world, self.bucket_bytes = world, int(bucket_bytes)
        self._buckets: list[list[torch.nn.Parameter]] = []
        self._pending: list[int] = []
        self._works: dict[int, tuple] = {}
        self._handles: list = []

    def arm(self, params) -> None:
        """Put a hook on each of ``params`` (``requires_grad`` tensors) for the next backward."""
        self._buckets, size = [[]], 0
        for p in reversed([p for p in params if p.requires_grad]):
            nbytes = p.numel() * p.element_size()
            if self._buckets[-1] and size + nbytes > self.bucket_bytes:
                self._buckets.append([])
                size = 0
            self._buckets[-1].append(p)
            size += nbytes
        self._pending = [len(b) for b in self._buckets]
        self._works = {}
        for i, bucket in enumerate(self._buckets):
            for p in bucket:
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook(i)))

    def _hook(self, i: int):
        def ready(_param) -> None:
            self._pending[i] -= 1
            if self._pending[i] == 0:
                self._launch(i)

        return ready

    def _launch(self, i: int) -> None:
        grads = [p.grad for p in self._buckets[i] if p.grad is not None]
        if not grads:
            self._works[i] = (None, grads, None)
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._works[i] = (dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True), grads, flat)

    def finish(self) -> None:
        """Wait for every bucket (launching those whose hooks did not all fire, in bucket
        order) and write the averaged gradients back; removes the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for i in range(len(self._buckets)):
            if i not in self._works:
                self._launch(i)
        for i in range(len(self._buckets)):
            work, grads, flat = self._works[i]
            if work is None:
                continue
            work.wait()
            flat.div_(self.world)
            offset = 0
            for g in grads:
                n = g.numel()
                g.copy_(flat[offset : offset + n].view_as(g))
                offset += n
        self._buckets, self._works, self._pending = [], {}, []
