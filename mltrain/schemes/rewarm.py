"""LR re-warm-up of the blocks a growth adds (``coarsening.stages.grow_warmup`` steps; 0: off).

For the first W = ``grow_warmup`` iterations of a stage entered by a growth, the blocks that
growth starts fresh (:func:`mltrain.schemes.growth.new_blocks`) train with the learning rate
f_j·lr, f_j = (j + 1)/(W + 1) at the stage's j-th iteration (the convention of the run's own
warm-up, :func:`mltrain.train.optim.lr_factor`); every other parameter keeps lr. It is applied to the
step itself: their tensors before the step θ_b are kept, and after it θ ← θ_b + f_j·(θ − θ_b).
For SGD (momentum, dampening, Nesterov, L2 weight decay) and AdamW (decoupled weight decay) the
step θ − θ_b is exactly proportional to lr given the optimizer state, and the state updates
(momentum buffer, Adam moments) do not depend on lr, so this *is* a per-parameter learning rate
f_j·lr (up to float rounding), with the optimizer's parameter groups untouched: any
``optimizer_state`` policy and checkpoint keep their layout. It keeps no state of its own (the
position in the plan says where the warm-up is), so a resume continues it exactly.
"""

from __future__ import annotations

import torch

from mltrain.schemes.growth import new_blocks
from mltrain.schemes.stages import Grow
from mltrain.train.state import EXTENSIONS, Extension, RunState


class GrowWarmup(Extension):
    """The re-warm-up as a run extension (:data:`mltrain.train.state.EXTENSIONS`).

    Args:
        trainer: the trainer; its plan's stages entered by a :class:`mltrain.schemes.stages.Grow`
            define the spans.
        steps: W, iterations of re-warm-up after each growth.
    """

    name = "grow_warmup"

    def __init__(self, trainer: RunState, steps: int) -> None:
        self.steps = steps
        self.spans: list[tuple[int, list[torch.nn.Parameter]]] = []  # (first iteration, params)
        self._before: dict[torch.nn.Parameter, torch.Tensor] | None = None
        start = 0
        model = trainer.model
        for stage in trainer.plan.stages:
            for op in stage.enter:
                if isinstance(op, Grow):
                    src, dst = trainer.levels[op.source], trainer.levels[op.level]
                    params = [
                        p
                        for b in new_blocks(src, dst, op.init)
                        for p in model.blocks[b].parameters()
                    ]
                    self.spans.append((start, params))
            start += stage.iterations

    def factor(self, iteration: int) -> tuple[float, list[torch.nn.Parameter]]:
        """(f, the new blocks' parameters) at ``iteration``; f = 1 and no parameters outside
        every re-warm-up span."""
        for start, params in self.spans:
            j = iteration - start
            if 0 <= j < self.steps:
                return (j + 1) / (self.steps + 1), params
        return 1.0, []

    def on_gradients(self, trainer: RunState, level) -> None:
        """Keep θ_b of the new blocks this step trains (those with a gradient)."""
        f, params = self.factor(trainer.iteration)
        self._before = (
            {p: p.detach().clone() for p in params if p.grad is not None} if f < 1 else None
        )

    @torch.no_grad()
    def after_step(self, trainer: RunState, level) -> None:
        """θ ← θ_b + f·(θ − θ_b) for the new blocks (``torch.lerp``)."""
        if self._before:
            f, _ = self.factor(trainer.iteration)
            for p, b in self._before.items():
                p.copy_(torch.lerp(b, p, f))
        self._before = None


@EXTENSIONS.register("grow_warmup")
def _factory(trainer: RunState) -> GrowWarmup | None:
    steps = int(trainer.cfg.coarsening.stages.grow_warmup)
    ext = GrowWarmup(trainer, steps) if steps > 0 else None
    return ext if ext is not None and ext.spans else None
