"""Restriction by injection and prolongation (Lauga et al. 2025, Eq. 4).

Restriction is injection: a coarse level's parameters ARE the fine model's tensors
(:func:`level_parameters`). A coarse phase trains them on the coarse path; prolongation then
sets

    θ ← θ_before + δ · (θ_after − θ_before)

over the parameters the phase trained (:func:`prolong`; DESIGN.md section 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mltrain.levels.base import Level
from mltrain.model.transformer import ODETransformer


def level_parameters(model: ODETransformer, level: Level) -> dict[str, torch.nn.Parameter]:
    """Restriction by injection: the fine model's own parameter tensors that ``level``'s path
    uses (:meth:`Level.parameters` of the base class, also for a level on its own tensors).

    The level's blocks, plus the shared embeddings (tied with the head) and final norm unless
    the level's ``train_shared`` is False (the fine level always includes them). Returned in the model's
    registration order, so optimizers built over them are reproducible.
    """
    return Level.parameters(level, model)


def frozen_parameters(model: ODETransformer, level: Level) -> list[torch.nn.Parameter]:
    """The shared parameters ``level``'s path uses but does not train (a coarse level with
    ``train_shared`` False: embeddings, tied head, final norm); their gradients are dropped."""
    trained = level_parameters(model, level)
    return [
        p for n, p in model.named_parameters() if not n.startswith("blocks.") and n not in trained
    ]


def snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """θ_before: detached copies of ``params`` (the only copies the multilevel scheme makes)."""
    return {n: p.detach().clone() for n, p in params.items()}


@torch.no_grad()
def prolong(
    params: dict[str, torch.nn.Parameter], before: dict[str, torch.Tensor], delta: float
) -> None:
    """Eq. 4 in place: θ ← θ_before + δ·(θ − θ_before) for every tensor in ``before``.

    Uses ``torch.lerp``, which returns θ_before exactly for δ = 0 and θ exactly for δ = 1.
    """
    for n, b in before.items():
        p = params[n]
        p.copy_(torch.lerp(b, p, delta))


@torch.no_grad()
def correction(
    params: dict[str, torch.nn.Parameter], before: dict[str, torch.Tensor], delta: float
) -> dict[str, torch.Tensor]:
    """δ·(θ − θ_before) for ``coarsening.vcycle.combine=summed``, restoring θ to θ_before."""
    out = {}
    for n, b in before.items():
        p = params[n]
        out[n] = (p - b) * delta
        p.copy_(b)
    return out


@torch.no_grad()
def apply_corrections(
    params: dict[str, torch.nn.Parameter], corrections: Sequence[dict[str, torch.Tensor]]
) -> None:
    """θ ← θ + Σ corrections (the summed combination of several coarse phases)."""
    for corr in corrections:
        for n, c in corr.items():
            params[n].add_(c)
