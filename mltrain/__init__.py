"""mltrain: multilevel training of transformers (Lauga et al. 2025, arXiv 2504.18590).

Layout (data flows one way, top to bottom):

- :mod:`mltrain.config`     typed config schemas and validation
- :mod:`mltrain.data`       corpora, tokenizers, token cache, batch sampler
- :mod:`mltrain.model`      the ODE-Transformer: a forward pass integrates a path of blocks
- :mod:`mltrain.levels`     levels, hierarchy builders, restriction and prolongation (Eq. 4)
- :mod:`mltrain.vcycle`     the V-cycle schedule as data (a list of operations)
- :mod:`mltrain.optim`      optimizers, LR schedules, optimizer state across levels
- :mod:`mltrain.flops`      the FLOP convention (DESIGN.md section 3) and its measured check
- :mod:`mltrain.trainer`    the loop that walks the schedule
- :mod:`mltrain.checkpoint` atomic checkpoints and resume state
- :mod:`mltrain.tracking`   metrics.jsonl and Weights & Biases
- :mod:`mltrain.compare`    ``mltrain-compare``: curves and FLOPs-to-target tables
- :mod:`mltrain.cli`        the ``mltrain`` Hydra entry point
"""

__version__ = "0.1.0"
