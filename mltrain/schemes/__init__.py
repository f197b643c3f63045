"""The training schemes, registered in one place: importing this package registers every
scheme (:data:`mltrain.config.scheme.SCHEMES`: its plan builder, checks, label, ...),
operation handlers (:data:`mltrain.plan.ops.HANDLERS`), V-cycle decorators and run extensions
(:data:`mltrain.train.state.EXTENSIONS`). The job (:mod:`mltrain.job`), the command line
(:mod:`mltrain.cli`) and the plan read-back (:mod:`mltrain.readback`) import it; nothing below
them does.

- :mod:`.single`: the fine level alone, ``coarsening.scheme=single_level``

- :mod:`.vcycle`: the V-cycle (Lauga et al. 2025), ``coarsening.scheme=vcycle``
- :mod:`.corrections`, :mod:`.linesearch`: τ-correction, line-searched δ, outer momentum
- :mod:`.stages`, :mod:`.growth`, :mod:`.rewarm`: coarse-to-fine stages,
  ``coarsening.scheme=stages`` (random sub-paths and patch stages are stages of their levels)
- :mod:`.width`: width levels (Zou et al. 2024) in the V-cycle and in stages

Every scheme registers one :class:`mltrain.config.scheme.Scheme` in
:data:`mltrain.config.scheme.SCHEMES` (its sections, checks, plan builder, label, checkpoint
upgrade): ``single_level`` in :mod:`.single`, ``vcycle`` in :mod:`.vcycle`, ``stages`` in
:mod:`.stages`. Importing this package also fills every registry
that :func:`mltrain.config.validate` checks names against (:mod:`mltrain.config.registries`).

A new scheme is a module here (its :class:`Scheme`, its operations and their handlers, an
extension if it keeps state), one import line below, its ``conf/`` file and its tests.
"""

# each import registers what its module defines (single_level first: coarsening.scheme's choices
# in this order); a new scheme's module is one more name on the second line
from mltrain.schemes import single  # noqa: I001, F401
from mltrain.schemes import corrections, growth, rewarm, stages, vcycle, width  # noqa: F401

# the owners of the other registries that validate() checks config values against
# (mltrain.config.registries): importing this package fills them all
from mltrain.data import corpora, tokenizers  # noqa: F401, E402
from mltrain.levels import hierarchy  # noqa: F401, E402
from mltrain.train import optim  # noqa: F401, E402
