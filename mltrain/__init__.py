"""mltrain: multilevel training of transformers (Lauga et al. 2025, arXiv 2504.18590) and the
schemes around it, with Hydra configs, W&B/metrics.jsonl records and a tuned-frontier judge.

The layout, the import rules and the seam between the trainer and the schemes are described
once, in docs/architecture.md.
"""

__version__ = "0.1.0"
