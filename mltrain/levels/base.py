"""A level of the hierarchy and the registry of hierarchy builders.

A *level* is a path through the fine model's blocks with a step size (Lauga et al. 2025,
Sec. 3). Restriction is injection: a coarse level's parameters ARE the fine model's tensors (no
copies, no second model); :mod:`mltrain.levels.restrict_prolong` has restriction and prolongation
(Eq. 4). A level also says how it reads a batch (:meth:`Level.window_tokens`,
:meth:`Level.loss`) and which path validation measures (:attr:`Level.eval_path`), so the
trainer treats every level alike. Builders of hierarchies register in :data:`HIERARCHIES`
(:mod:`mltrain.levels.depth`, :mod:`.patch`, :mod:`.raptr`); :func:`mltrain.levels.build_hierarchy`
builds the one ``coarsening.hierarchy.name`` names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mltrain.config import CoarseningConfig, registries
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.registry import Registry


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy.

    Attributes:
        name: ``fine``, ``coarse_a``, ``coarse_b``, ``coarse_1``... (used in metric names).
        blocks: indices of the fine model's blocks this level evaluates, in order.
        h: Euler step size of every block evaluation on this level (1.0 on the fine level).
        parent: name of the next finer level (None for the fine level); the V-cycle
            descends from parent to child and prolongs back into the parent.
        patch: tokens per position (1: token level; K > 1: a patch level whose inputs are
            means of K token embeddings and whose positions predict the next K tokens).
        optimizer: the level whose optimizer this level steps with (None: its own, under the
            ``optimizer_state`` policy), e.g. random sub-paths share the fine optimizer.
        train_shared: whether a step of this coarse level trains the shared tensors (token
            and position embeddings, tied head, final norm); the fine level always does
            (``coarsening.hierarchy.train_shared``).
    """

    name: str
    blocks: tuple[int, ...]
    h: float
    parent: str | None = None
    patch: int = 1
    optimizer: str | None = None
    train_shared: bool = True

    @property
    def path(self) -> BlockPath:
        """The path a step of this level integrates (:meth:`sample_path` for random ones)."""
        return BlockPath(self.blocks, self.h)

    @property
    def n_blocks(self) -> int:
        """Block evaluations per forward pass (what a step's FLOPs count)."""
        return len(self.blocks)

    def sample_path(self, generator) -> BlockPath:
        """The path of the next step; a fixed level ignores ``generator`` (a
        ``torch.Generator`` whose state is checkpointed), a random one draws from it."""
        return self.path

    @property
    def is_fine(self) -> bool:
        return self.parent is None

    @property
    def steps_with(self) -> str:
        """The name of the optimizer a step of this level uses (:attr:`optimizer` or its own)."""
        return self.optimizer or self.name

    def window_tokens(self, seq_len: int) -> int:
        """Tokens of one training window (one row of a batch): T + 1 at token level, K·(T + 1)
        for a patch level (K tokens per position, :mod:`mltrain.levels.patch`)."""
        return self.patch * (seq_len + 1)

    def loss(self, model: ODETransformer, windows: torch.Tensor, path: BlockPath) -> torch.Tensor:
        """Mean training loss (nats/token, 0-d) of ``path`` on ``windows`` ``(B, W)`` int64 with
        W = :meth:`window_tokens`: next-token cross-entropy at token level; at a patch level
        the mean of the K cross-entropies of each position's next patch (Shao et al. 2025)."""
        K = self.patch
        if K == 1:
            return model(windows[:, :-1], windows[:, 1:], path=path)[1]
        return model(windows[:, :-K], windows[:, K:], path=path, patch=K)[1]

    def parameters(self, model: ODETransformer) -> dict[str, torch.nn.Parameter]:
        """The tensors a step of this level trains. Restriction by injection: the fine
        ``model``'s own tensors of the level's blocks, plus the shared embeddings (tied with
        the head) and final norm unless :attr:`train_shared` is False (the fine level always
        includes them), in the model's registration order (so optimizers built over them are
        reproducible). A level on its own tensors (:class:`mltrain.levels.width.WidthLevel`)
        returns those."""
        wanted = {n for i in self.blocks for n in model.block_parameter_names(i)}
        if self.train_shared or self.is_fine:
            wanted.update(model.shared_parameter_names())
        return {n: p for n, p in model.named_parameters() if n in wanted}

    def module(self, model: ODETransformer) -> ODETransformer:
        """The model this level's :meth:`loss` and validation run: the fine ``model`` itself
        (a width level: its narrow model)."""
        return model

    @property
    def eval_path(self) -> BlockPath:
        """The path validation measures while a stage of this level runs (at token level): the
        level's own fixed path (the fine path for the fine level)."""
        return self.path


# ``coarsening.hierarchy.name`` -> function (coarsening config, n_layer) -> coarse levels (fine excluded)
# (declared in the config layer, which names it in the schema)
HIERARCHIES: Registry[Callable[[CoarseningConfig, int], list[Level]]] = registries.HIERARCHIES


def fine_level(n: int) -> Level:
    """The fine level: blocks 0 .. n-1, h = 1."""
    return Level("fine", tuple(range(n)), 1.0)
