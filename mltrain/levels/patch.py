"""The patch level: coarsening along the sequence (Shao, Meng, Zhou, "Beyond Next Token
Prediction: Patch-Level Training for Large Language Models", ICLR 2025, arXiv 2407.12665).

A *patch level* with K tokens per position reads a window of K·T tokens as T positions: the
input of position i is the mean of the embeddings of tokens iK .. iK+K−1, and position i
predicts the K tokens of the next patch, (i+1)K .. (i+1)K+K−1, each from its one hidden state
through the shared head; the loss is the mean of the K cross-entropies (their Sec. 2 and code;
:meth:`mltrain.model.transformer.ODETransformer.patch_forward`). The parameters are the token-level model's
own: a patch level is the same tensors with a different path of the data through them, so it
needs no restriction or growth of its own.

Settings (:class:`mltrain.config.CoarseningConfig`):

- ``coarsening.patch.size`` K (default 1: token level) applies to every *coarse* level of the
  hierarchy; the fine level is always token level (the model being trained).
- ``coarsening=patch``: one coarse level named ``patch`` over all blocks with h = 1 and
  K = ``patch_size`` (4 in ``conf/coarsening/patch.yaml``, the paper's choice).
- Combined with depth: ``coarsening=odd coarsening.patch.size=4`` makes ``coarse_b`` (blocks
  0, 2, …, step 2h) a patch level, so one level coarsens both ways; ``even_odd``,
  ``recursive`` and ``custom`` levels take K the same way.

Every level can be used both ways mltrain combines levels:

- as a **stage** (the paper's scheme: patch-level training for a share λ of the budget, then
  token level with the same weights): ``coarsening.scheme=stages
  coarsening.stages.levels=[patch,fine] coarsening.stages.shares=[λ,1−λ]``
  (``coarsening.stages.grow_init=keep``: the patch level already trains every block). λ here is a share of the **FLOPs** budget; Shao
  et al.'s λ is a share of the **training data** (their cost is λ/K + 1 − λ of token-level
  training); for a patch level over all blocks they relate by λ_data = Kλ / (Kλ + 1 − λ)
  (their K = 4, λ_data = 2/3 is λ = 1/3 here).
- as a **V-cycle level** (``coarsening=patch`` with ``coarsening.vcycle.window`` > 0): after each
  fine step inside the window, ``coarse_steps`` patch steps, transferred back with Eq. 4 of
  Lauga et al. 2025 (over every parameter, since the patch level trains them all).

FLOPs: a patch step runs the blocks and the head on T positions, so it costs what a token step
on the same path costs (DESIGN.md section 3: B·T·3·(L·(24d² + 4Td) + 2dV)); the mean of K
embeddings and the K cross-entropies per position are not matmuls (like the embedding lookup
and the softmax, they count 0). It consumes K times the tokens: ``perf/tokens`` counts K·T per
sequence, ``perf/tokens_level/<level>`` per level when a level has K > 1.

``val/loss`` during a patch stage is the **token-level** loss (patch 1) of the current weights
along the stage level's blocks and step size (:attr:`mltrain.train.trainer.Trainer.eval_level`): the
model a patch stage trains is deployed at token level, and the token-level loss is what the
frontier judges, so this is the number to compare. It is not the patch-level training loss
(``train/loss`` of a patch step, which predicts K tokens from coarser context and is not
comparable). Expect it to be high during the patch stage (the weights have not seen
single-token inputs yet): in the paper_small probes it stayed near 6.7 nats/token (about the
unigram entropy of the 8k BPE) through the patch stage and fell only once token-level
training began.

Data: a run that draws more tokens than the training split holds repeats data. At start the
job logs the planned tokens against the split (:func:`mltrain.plan.epochs.epoch_count`) and warns when the run
would pass over it more than once; ``run.json`` records the planned and the seen tokens and
the epochs (tokens drawn / tokens in the split; windows are drawn at random, so an epoch is
an average number of passes, not one ordered sweep).
"""

from __future__ import annotations

from dataclasses import replace

from mltrain.config import CoarseningConfig
from mltrain.errors import ConfigError
from mltrain.levels.base import HIERARCHIES, Level

PATCH = "patch"  # the level name of coarsening=patch


@HIERARCHIES.register(PATCH)
def _patch(c: CoarseningConfig, n_layer: int) -> list[Level]:
    """One coarse level ``patch``: all blocks, h = 1, K = ``patch_size`` tokens per position
    (Shao et al. 2025), a child of the fine level."""
    return [Level(PATCH, tuple(range(n_layer)), 1.0, "fine")]


def with_patch(c: CoarseningConfig, coarse: list[Level]) -> list[Level]:
    """``coarse`` levels with K = ``c.patch_size`` tokens per position (unchanged for K = 1).

    Raises:
        ConfigError: K > 1 without a coarse level to carry it (``coarsening=none``).
    """
    k = int(c.patch.size)
    if k == 1:
        return coarse
    if not coarse:
        raise ConfigError(
            f"coarsening.patch.size={k} needs a coarse level, but coarsening.hierarchy.name={c.hierarchy.name} has only the "
            "fine level: choose coarsening=patch (all blocks) or a depth hierarchy (e.g. odd)"
        )
    return [replace(lv, patch=k) for lv in coarse]
