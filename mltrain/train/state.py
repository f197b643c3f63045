"""The seam between the trainer and the schemes: what a scheme may use of a run
(:class:`RunState`) and how it keeps state across steps (:class:`Extension`).

A scheme (:mod:`mltrain.schemes`) plugs in through three registries and nothing else:

- a :class:`~mltrain.config.scheme.Scheme` for its ``coarsening.scheme`` (its plan builder, ...),
- a handler per operation type it puts in the plan (:func:`mltrain.plan.ops.handles`), called
  as ``handler(run, op)`` with the :class:`RunState`,
- an extension factory (:data:`EXTENSIONS`), ``factory(run) -> Extension | None``, for state
  that lives across steps (saved in every checkpoint under the extension's ``name``) and for
  hooks on every optimizer step and at the end of every plan iteration.

**The order of hooks.** Every hook runs in the order of its object's :attr:`Extension.priority`,
higher first, ties by ``name`` (OLMo-core's callback priorities are the model): never in the
order modules happened to be imported. At the end of an iteration the trainer's own hooks
(:mod:`mltrain.train.hooks`) run among the extensions':

==================== ======== ===========================================================
hook                 priority what it does at the end of iteration k
==================== ======== ===========================================================
evaluation           300      validation loss, every ``train.eval_every`` and at the end
metrics record       200      writes the pending record; the console line every ``log_every``
extensions (default) 0        their ``end_iteration``
checkpoint           -100     every ``train.checkpoint_every`` (not at the last iteration)
branch point         -200     a trunk's kept state at each branch point
==================== ======== ===========================================================

then the trainer stops if a preemption signal arrived (after a checkpoint). An extension that
changes state at the end of an iteration keeps a priority above the checkpoint's (so the
checkpoint holds the change and a resume repeats the run bit for bit). The
step hooks (``on_gradients``, ``after_step``) of the extensions run in the same order: the
corrections' extension has priority 100 (it changes the gradients other hooks read), the
others the default.

No scheme reads or writes a private member of the trainer; forward/backward passes, gradients
averaged over micro-batches and ranks, losses on held-aside windows and the rank's share of a
batch all come from :class:`mltrain.train.batch_runner.BatchRunner` (``run.runner``), and evaluation books its
own FLOPs (``run.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from mltrain.registry import Registry

if TYPE_CHECKING:
    import torch

    from mltrain.config import MLTrainConfig
    from mltrain.data import DataBundle
    from mltrain.levels import Level
    from mltrain.model.transformer import BlockPath, ODETransformer
    from mltrain.plan.plan import Plan
    from mltrain.train.batch_runner import BatchRunner
    from mltrain.train.optim import LevelOptimizers


class RunState(Protocol):
    """What a scheme's handlers and extensions may use of a run (the trainer implements it).

    Attributes:
        cfg: the typed config.
        model: the fine model (every depth level's tensors are its tensors).
        plan: the run's plan.
        levels: level name -> :class:`mltrain.levels.Level`.
        data: the token streams (``data.train``: the training tokens, 1-D int64).
        optims: the levels' optimizers (``start_phase``, ``inherit_state``, ``get``).
        runner: forward/backward passes over a global batch (:class:`mltrain.train.batch_runner.BatchRunner`).
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
    runner: BatchRunner
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


# The end-of-iteration order (higher first) of the trainer's own hooks (mltrain.train.hooks)
# and the default of an extension's; the table in this module's docstring says what each does.
EVALUATION_PRIORITY = 300
RECORD_PRIORITY = 200
DEFAULT_PRIORITY = 0
CHECKPOINT_PRIORITY = -100
BRANCH_POINT_PRIORITY = -200


class Extension:
    """Base of run extensions: state kept across steps, hooks on every optimizer step and at
    the end of every plan iteration.

    Subclasses set ``name`` (the key of their state in checkpoints) and override what they
    need; every hook is a no-op here (OLMo-core's callbacks are the model). ``priority``
    orders the hooks of every extension of a run, higher first, ties by ``name``
    (:func:`by_priority`; the module's docstring gives the trainer's own hooks' priorities).
    """

    name: str = ""
    priority: int = DEFAULT_PRIORITY

    def on_gradients(self, run: RunState, level: Level) -> None:
        """After the all-reduce of a step's gradients, before clipping."""

    def after_step(self, run: RunState, level: Level) -> None:
        """Right after a step's optimizer update."""

    def end_iteration(self, run: RunState, iteration: int) -> None:
        """After the last operation of a plan iteration; ``iteration`` counts the iterations
        done (1 after the first; ``run.plan.iterations`` after the last)."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the extension."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


# name -> factory(run) -> Extension or None (when the run's config does not use it)
EXTENSIONS: Registry[Callable[[Any], Extension | None]] = Registry("extension")


def by_priority(hooks: Iterable[Extension]) -> list[Extension]:
    """``hooks`` in the order they run: higher :attr:`Extension.priority` first, ties by
    ``name`` (never by registration or import order)."""
    return sorted(hooks, key=lambda h: (-h.priority, h.name))


def build_extensions(run: RunState) -> dict[str, Extension]:
    """The run's extensions by name: every registered factory's, where its config uses it, in
    the order their hooks run (:func:`by_priority`).

    Raises:
        ValueError: a factory's extension is not named as it was registered.
    """
    out = []
    for name in EXTENSIONS.names():
        ext = EXTENSIONS.get(name)(run)
        if ext is not None:
            if ext.name != name:
                raise ValueError(f"extension {name!r} names itself {ext.name!r}")
            out.append(ext)
    return {ext.name: ext for ext in by_priority(out)}
