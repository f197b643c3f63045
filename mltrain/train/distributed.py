"""Several processes through ``torchrun`` (torch.distributed), and the device choice.

Gradients are averaged explicitly over the parameters a step trained (one flattened
all-reduce per optimizer step), instead of wrapping the model in DistributedDataParallel:
a coarse phase trains a subset of the parameters, which would trip DDP's unused-parameter
check, and a DDP wrapper per level would register hooks on shared tensors several times.
Every rank starts from the same seed and applies the same averaged gradients, so all ranks
keep identical parameters. Only rank 0 writes files, logs and W&B.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mltrain.errors import ConfigError, MLTrainError


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """``train.device``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:<i>``.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device={setting}: CUDA is not available here; use train.device=cpu or auto"
            )
        if setting == "cuda":
            setting = f"cuda:{local_rank}"
    return torch.device(setting)


def _export_submitit_env() -> None:
    """Inside a submitit job of several tasks (``hydra/launcher=submitit_slurm`` with
    ``tasks_per_node`` > 1), set torch.distributed's ``env://`` variables (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) the way torchrun would."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    try:
        import submitit
    except ImportError:
        return
    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init(device_setting: str) -> DistContext:
    """Initialise the process group when launched by torchrun (or a submitit job of several
    tasks) with ``WORLD_SIZE`` > 1: NCCL on CUDA, gloo on CPU. A single process needs none."""
    _export_submitit_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_setting, local_rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = (
            True  # TF32 for any fp32 matmul left outside autocast
        )
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            device_id=device if device.type == "cuda" else None,
        )
        atexit.register(shutdown)  # once per process: the jobs of a multirun share the group
    return DistContext(rank, world, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(params, world: int) -> None:
    """Average ``.grad`` over ranks for the parameters that have one (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if world <= 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; no-op for one process)."""
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def assert_identical(params, world: int) -> None:
    """Check that every rank holds the same parameters (sum and sum of squares of each tensor,
    in float64, compared exactly across ranks).

    Raises:
        RuntimeError: the ranks' parameters differ (a bug: the run cannot be trusted).
    """
    if world <= 1:
        return
    params = list(params)
    sig = torch.stack(
        [
            torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
            for p in params
        ]
    ).flatten()
    gathered = [torch.empty_like(sig) for _ in range(world)]
    dist.all_gather(gathered, sig)
    if not all(torch.equal(g, gathered[0]) for g in gathered[1:]):
        raise RuntimeError("parameters differ between ranks: distributed training went out of sync")


def broadcast_object(obj, world: int, src: int = 0):
    """``obj`` from rank ``src`` on every rank (pickled)."""
    if world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_decides(decide, ctx: DistContext):
    """Run ``decide()`` on rank 0 only (e.g. it looks at the run directory, which rank 0 is
    about to write) and give every rank its result, or raise its
    :class:`~mltrain.errors.MLTrainError` on every rank."""
    if ctx.world == 1:
        return decide()
    outcome = None
    if ctx.is_main:
        try:
            outcome = ("ok", decide())
        except MLTrainError as e:
            outcome = ("error", e)
    outcome = broadcast_object(outcome, ctx.world)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


__all__ = [
    "DistContext",
    "init",
    "shutdown",
    "all_reduce_grads",
    "all_reduce_sum",
    "broadcast_object",
    "main_decides",
    "resolve_device",
    "assert_identical",
]
