"""Which validation set each run measured its loss on, and the refusal to compare losses
measured on different sets.

A run's ``run.json`` holds ``validation``: ``sequences``, ``tokens`` and ``fingerprint`` (a
hash of the window tokens, :func:`mltrain.data.sampler.validation_fingerprint`). The set is a
function of the data split, the tokenizer, ``model.seq_len`` and ``train.eval_sequences``
only, so runs of different micro-batches, accumulation, process counts or devices share it;
losses on different sets are not comparable (a difference of a few hundredths of a nat comes
from the windows alone), so ``mltrain-compare`` and the frontier judge refuse them. Runs of an
earlier mltrain record no fingerprint: they are compared with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

from mltrain.analysis.judging.runs import CompareError, Run


def validation_set(run: Run) -> tuple | None:
    """``(fingerprint, sequences, tokens)`` of the run's validation set, None when its
    ``run.json`` does not record it (runs of an earlier mltrain)."""
    v = run.meta.get("validation")
    if not isinstance(v, dict) or not v.get("fingerprint"):
        return None
    return (str(v["fingerprint"]), v.get("sequences"), v.get("tokens"))


def check_validation_sets(runs: Sequence[Run]) -> list[str]:
    """The warnings to print before comparing ``runs`` (empty when every run records the same
    validation set, or there is one run).

    Raises:
        CompareError: two runs record different validation sets; one line naming the runs of
            each set.
    """
    if len(runs) < 2:
        return []
    groups: dict = {}
    for r in runs:
        groups.setdefault(validation_set(r), []).append(r)
    known = {k: v for k, v in groups.items() if k is not None}
    if len(known) > 1:
        parts = [
            f"{fp} ({seqs} sequences, {tokens} tokens): " + ", ".join(r.name for r in rs)
            for (fp, seqs, tokens), rs in known.items()
        ]
        raise CompareError(
            "validation losses measured on different validation sets cannot be compared ("
            + "; ".join(parts)
            + "); use the same data, tokenizer, model.seq_len and train.eval_sequences"
        )
    if None in groups:
        names = ", ".join(r.name for r in groups[None])
        return [
            f"warning: no validation-set fingerprint in run.json of {names} (an earlier "
            "mltrain): their validation losses may be measured on other windows"
        ]
    return []
