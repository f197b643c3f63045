"""Epochs: what a run draws from its training split, tokens planned and seen against the split's
size (a patch level consumes K tokens per position, :mod:`mltrain.levels.patch`)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def epoch_count(plan, train_tokens: int, seen: int | None = None) -> dict:
    """What a run draws from its training split.

    Args:
        plan: the run's :class:`mltrain.plan.plan.Plan`.
        train_tokens: tokens in the training split (a count).
        seen: tokens trained on so far (``perf/tokens``), when the run has started.

    Returns:
        ``train_tokens``; ``planned_tokens`` (every optimizer step's tokens: positions × K,
        :meth:`mltrain.plan.plan.Plan.tokens_of`) and ``planned_epochs`` (planned / train);
        ``tokens_per_level`` (planned); with ``seen``, ``tokens_seen`` and ``epochs``.
    """
    per_level = plan.tokens_per_level()
    planned = sum(per_level.values())
    out = {
        "train_tokens": int(train_tokens),
        "planned_tokens": planned,
        "planned_epochs": planned / train_tokens,
        "tokens_per_level": per_level,
    }
    if seen is not None:
        out["tokens_seen"] = int(seen)
        out["epochs"] = seen / train_tokens
    return out


def log_epoch_count(count: dict, at_end: bool = False) -> None:
    """One log line: the tokens the run will draw (at start) or drew (``at_end``) against the
    training split; a warning when that is more than one pass over it."""
    tokens = count["tokens_seen"] if at_end else count["planned_tokens"]
    epochs = count["epochs"] if at_end else count["planned_epochs"]
    verb = "drew" if at_end else "will draw"
    text = (
        f"the run {verb} {tokens:,} training tokens, {epochs:.2f} epochs of the training "
        f"split ({count['train_tokens']:,} tokens)"
    )
    if len(count["tokens_per_level"]) > 1 and not at_end:
        text += "; per level " + ", ".join(
            f"{n} {t:,}" for n, t in count["tokens_per_level"].items()
        )
    if epochs > 1:
        log.warning("%s: it passes over the training data more than once", text)
    else:
        log.info("%s", text)
