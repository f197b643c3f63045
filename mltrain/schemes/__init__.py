"""The training schemes, registered in one place: importing this package registers every
scheme's plan builder (:data:`mltrain.plan.plan.PLAN_BUILDERS`), operation handlers
(:data:`mltrain.plan.ops.HANDLERS`), V-cycle decorators and run extensions
(:data:`mltrain.train.state.EXTENSIONS`). The job (:mod:`mltrain.job`) and the plan read-back
(:mod:`mltrain.readback`) import it; nothing below them does.

- :mod:`.vcycle`: the V-cycle (Lauga et al. 2025), ``coarsening.scheme=vcycle``
- :mod:`.corrections`, :mod:`.linesearch`: τ-correction, line-searched δ, outer momentum
- :mod:`.stages`, :mod:`.growth`, :mod:`.rewarm`: coarse-to-fine stages,
  ``coarsening.scheme=stages`` (random sub-paths and patch stages are stages of their levels)
- :mod:`.width`: width levels (Zou et al. 2024) in the V-cycle and in stages

A new scheme is a module here (its operations, their handlers, its plan builder, an extension
if it keeps state), one line below, and its config section (:mod:`mltrain.config.schema`).
"""

from mltrain.schemes import corrections, growth, rewarm, stages, vcycle, width

__all__ = ["corrections", "growth", "rewarm", "stages", "vcycle", "width"]
