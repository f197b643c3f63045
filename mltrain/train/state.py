"""The seam between the trainer and the schemes: what a scheme may use of a run
(:class:`RunState`) and how it keeps state across steps (:class:`Extension`).

A scheme (:mod:`mltrain.schemes`) plugs in through three registries and nothing else:

- a :class:`~mltrain.config.scheme.Scheme` for its ``coarsening.scheme`` (its plan builder, ...),
- a handler per operation type it puts in the plan (:func:`mltrain.plan.ops.handles`), called
  as ``handler(run, op)`` with the :class:`RunState`,
- an extension factory (:data:`EXTENSIONS`), ``factory(run) -> Extension | None``, for state
  that lives across steps (saved in every checkpoint under the extension's ``name``) and for
  hooks on every optimizer step.

No scheme reads or writes a private member of the trainer; forward/backward passes, gradients
averaged over micro-batches and ranks, losses on held-aside windows and the rank's share of a
batch all come from :class:`mltrain.train.step.Step` (``run.step``), and evaluation books its
own FLOPs (``run.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mltrain.registry import Registry

if TYPE_CHECKING:
    import torch

    from mltrain.config import MLTrainConfig
    from mltrain.data import DataBundle
    from mltrain.levels import Level
    from mltrain.model.transformer import BlockPath, ODETransformer
    from mltrain.plan.plan import Plan
    from mltrain.train.optim import LevelOptimizers
    from mltrain.train.step import Step


class RunState(Protocol):
    """What a scheme's handlers and extensions may use of a run (the trainer implements it).

    Attributes:
        cfg: the typed config.
        model: the fine model (every depth level's tensors are its tensors).
        plan: the run's plan.
        levels: level name -> :class:`mltrain.levels.Level`.
        data: the token streams (``data.train``: the training tokens, 1-D int64).
        optims: the levels' optimizers (``start_phase``, ``transfer``, ``get``).
        step: forward/backward machinery (:class:`mltrain.train.step.Step`).
        device: where tensors live.
        all_params: every parameter of the model by name.
        last_batch: the windows of the latest optimizer step on this rank, ``(B_rank, W)``.
        iteration: the plan iteration being run (read-only).
    """

    cfg: MLTrainConfig
    model: ODETransformer
    plan: Plan
    levels: dict[str, Level]
    data: DataBundle
    optims: LevelOptimizers
    step: Step
    device: torch.device
    all_params: dict[str, torch.nn.Parameter]
    last_batch: torch.Tensor | None

    @property
    def iteration(self) -> int: ...

    def params(self, level: str) -> dict[str, torch.nn.Parameter]:
        """The parameters a step of ``level`` trains (restriction by injection)."""
        ...

    def train(self, level: str, steps: int, lr_scale: float = 1.0) -> None:
        """``steps`` optimizer steps of ``level`` (counted, logged, resumable)."""
        ...

    def evaluate(self, path: BlockPath | None = None, model: ODETransformer | None = None) -> float:
        """Validation loss (nats/token) along ``path`` of ``model`` (default: the current stage
        level's evaluation path of its model; with a path, the fine model); its forward FLOPs
        are booked to ``perf/flops_eval``."""
        ...

    def note(self, key: str, value: float) -> None:
        """A value for the next metrics record."""
        ...

    def extension(self, name: str) -> Extension:
        """The run's extension registered as ``name``."""
        ...


class Extension:
    """Base of run extensions: state kept across steps and hooks on every optimizer step.

    Subclasses set ``name`` (the key of their state in checkpoints) and override what they
    need; every hook is a no-op here (OLMo-core's callbacks are the model).
    """

    name: str = ""

    def on_gradients(self, run: RunState, level: Level) -> None:
        """After the all-reduce of a step's gradients, before clipping."""

    def after_step(self, run: RunState, level: Level) -> None:
        """Right after a step's optimizer update."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the extension."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


# name -> factory(run) -> Extension or None (when the run's config does not use it)
EXTENSIONS: Registry[Callable[[Any], Extension | None]] = Registry("extension")


def build_extensions(run: RunState) -> dict[str, Extension]:
    """The run's extensions by name: every registered factory's, where its config uses it, in
    registration order (their hooks run in that order)."""
    out = {}
    for name in EXTENSIONS.names():
        ext = EXTENSIONS.get(name)(run)
        if ext is not None:
            out[name] = ext
    return out
