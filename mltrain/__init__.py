"""mltrain: multilevel training of transformers (Lauga et al. 2025, arXiv 2504.18590).

Layout (data flows one way, top to bottom):

- :mod:`mltrain.config`      typed config schemas, validation, inert settings
- :mod:`mltrain.registry`    named registries that the settings choose from
- :mod:`mltrain.data`        corpora, tokenizers, token cache, batch sampler
- :mod:`mltrain.model.transformer`       the ODE-Transformer: a forward pass integrates a path of blocks
- :mod:`mltrain.levels.patch`       patch levels (sequence coarsening, K tokens per position)
- :mod:`mltrain.levels.base`      levels, hierarchy builders, restriction and prolongation (Eq. 4)
- :mod:`mltrain.plan.plan`        one plan of the run: levels, stages, step FLOPs, budget
- :mod:`mltrain.plan.vcycle`      the V-cycle schedule as data (a list of operations)
- :mod:`mltrain.schemes.corrections` tau-correction, placement, line-searched delta, outer momentum
- :mod:`mltrain.schemes.stages`      coarse-to-fine stages; :mod:`mltrain.schemes.growth` growth operators;
  :mod:`mltrain.schemes.rewarm` LR re-warm-up of new blocks; :mod:`mltrain.levels.raptr` random sub-paths
- :mod:`mltrain.plan.operations`  the handler of each plan operation
- :mod:`mltrain.train.optim`       optimizers, LR schedules, optimizer state across levels
- :mod:`mltrain.model.flops`       the FLOP convention (DESIGN.md section 3) and its measured check
- :mod:`mltrain.train.trainer`     the loop that walks the plan
- :mod:`mltrain.train.checkpoint`  checkpoint contents, atomic writes, resume state
- :mod:`mltrain.train.tracking`    metrics.jsonl and Weights & Biases
- :mod:`mltrain.job`         one job: build everything, run, write run.json
- :mod:`mltrain.cli`         the ``mltrain`` Hydra entry point
- :mod:`mltrain.analysis.compare`     ``mltrain-compare``: headline, same-FLOPs and same-fine-steps
  comparisons, FLOPs-to-target, plots; :mod:`mltrain.analysis.frontier` the tuned single-level
  frontier and r = C / C*(L) (DESIGN.md section 8)
"""

__version__ = "0.1.0"
