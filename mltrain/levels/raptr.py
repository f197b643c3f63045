"""Progressive sub-paths (RaPTr; Panigrahi et al. 2024, arXiv 2402.05913): each optimizer step
trains a random path of p blocks of the fine model, the first and last blocks always on it, p
growing over the run in stages, e.g. 6 -> 8 -> 10 -> 12 of 12 blocks::

    mltrain coarsening=raptr                               # stages raptr_6, raptr_8, raptr_10, fine
    mltrain coarsening=raptr 'coarsening.raptr.blocks=[4,8]' \\
        'coarsening.stages.levels=[raptr_4,raptr_8,fine]' 'coarsening.stages.shares=[0.3,0.3,0.4]'

A level ``raptr_<p>`` (:class:`RandomPath`) draws its path from the trainer's checkpointed
``path_generator``: p − 2 of the N − 2 middle blocks, uniformly without replacement, kept in
order. Each middle block is on the path with probability q = (p − 2)/(N − 2). With
``coarsening.raptr.scale=inverse`` (the default) a sampled middle block takes the step
h = 1/q = (N − 2)/(p − 2) (the first and last blocks h = 1), so the path integrates the same
total time as the fine path and, to first order in the blocks' outputs, its expected update
equals the fine path's (the stochastic-depth convention of scaling a kept block's output by its
inverse keep probability); ``none`` takes h = 1 for every block (plain layer dropping). The
scaling rule is our reading of the method, stated here because it could not be checked against
the paper's text offline: compare both settings.

Every block is trained with the fine optimizer (``Level.optimizer = "fine"``: a block's Adam
moments carry across paths and stages); a step's FLOPs count p block evaluations; blocks off the
sampled path get no gradient and stay bit-identical in that step. Validation measures the fine
path (all blocks, h = 1), so there is no growth between stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mltrain.config import CoarseningConfig
from mltrain.errors import ConfigError
from mltrain.levels.base import HIERARCHIES, Level
from mltrain.model.transformer import BlockPath


@dataclass(frozen=True)
class RandomPath(Level):
    """A level whose every step trains a random path of ``p`` of its ``blocks`` (the fine
    path's): the first and last always, p − 2 of the others drawn uniformly.

    Attributes:
        p: blocks on each step's path (2 <= p < N).
        scale: ``inverse`` (sampled middle blocks take h = (N − 2)/(p − 2)) or ``none`` (h = 1).
    """

    p: int = 2
    scale: str = "inverse"

    @property
    def n_blocks(self) -> int:
        """Block evaluations per forward pass: p."""
        return self.p

    @property
    def eval_path(self) -> BlockPath:
        """Validation measures the fine path (every block, h = 1): the model being trained."""
        return BlockPath(self.blocks, 1.0)

    def sample_path(self, generator: torch.Generator) -> BlockPath:
        """The next step's path: blocks in order, with per-block steps (``BlockPath.hs``) when
        scaled. Draws one ``torch.randperm`` of the N − 2 middle blocks from ``generator``."""
        first, middle, last = self.blocks[0], self.blocks[1:-1], self.blocks[-1]
        k = self.p - 2
        picked = torch.randperm(len(middle), generator=generator)[:k].sort().values.tolist()
        blocks = (first, *(middle[i] for i in picked), last)
        if self.scale == "none" or k == 0:
            return BlockPath(blocks, 1.0)
        h = len(middle) / k
        return BlockPath(blocks, 1.0, (1.0, *(h,) * k, 1.0))


@HIERARCHIES.register("raptr")
def _raptr(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """One :class:`RandomPath` level ``raptr_<p>`` per entry of ``coarsening.raptr.blocks``
    (path lengths p), over all N blocks, stepping the fine optimizer."""
    sizes = [int(p) for p in c.raptr.blocks]
    if not sizes:
        raise ConfigError(
            "coarsening=raptr needs coarsening.raptr.blocks=[p,...]: the path length of each "
            "random sub-path level, e.g. [6,8,10] for 12 blocks"
        )
    bad = [p for p in sizes if not 2 <= p < n_layer]
    if bad or len(set(sizes)) != len(sizes):
        what = f"{bad[0]} is outside 2..{n_layer - 1}" if bad else "repeats a length"
        raise ConfigError(
            f"coarsening.raptr.blocks={sizes} is not allowed: {what} (give distinct path lengths "
            f"2 <= p < model.n_layer={n_layer}; the fine stage trains all {n_layer})"
        )
    blocks = tuple(range(n_layer))
    return [
        RandomPath(f"raptr_{p}", blocks, 1.0, "fine", optimizer="fine", p=p, scale=c.raptr.scale)
        for p in sizes
    ]
