"""Batches of ``seq_len + 1`` tokens from a token stream.

Training batches are random windows drawn with a seeded ``torch.Generator`` whose state is
saved in checkpoints, so a resumed run sees the same batches. The validation set is fixed:
``train.eval_sequences`` evenly spaced, non-overlapping windows over the whole validation
stream, chosen from the split and the sequence length only (never the micro-batch, gradient
accumulation, process count or device), identical at every evaluation so that validation curves
compare like with like; :func:`validation_fingerprint` identifies it in ``run.json``.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


class BatchSampler:
    """Random windows of ``seq_len + 1`` tokens: :meth:`next` returns ``(n, seq_len + 1)`` int64.

    Args:
        tokens: 1-D token stream (a memmap is fine).
        seq_len: T; every window has T + 1 tokens (inputs and shifted targets).
        seed: seed of the generator (its state is in :meth:`state_dict`).

    Raises:
        ValueError: the stream holds fewer than ``seq_len + 1`` tokens.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        if len(tokens) < seq_len + 1:
            raise ValueError(f"{len(tokens)} tokens < seq_len + 1 = {seq_len + 1}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(seq_len + 1)

    def next(self, n: int, length: int | None = None) -> torch.Tensor:
        """``n`` windows of ``length`` consecutive tokens (default ``seq_len + 1``; a patch level
        of K tokens per position takes K·(T + 1)): ``(n, length)`` int64. One draw of ``n``
        start positions from the generator whatever the length, so the sampler's state after
        a step does not depend on the level.

        Raises:
            ValueError: the stream holds fewer than ``length`` tokens.
        """
        length = self.seq_len + 1 if length is None else int(length)
        high = len(self.tokens) - length + 1  # last valid start + 1
        if high < 1:
            raise ValueError(f"{len(self.tokens)} tokens < window length {length}")
        offsets = self._offsets if length == self.seq_len + 1 else np.arange(length)
        starts = torch.randint(0, high, (n,), generator=self.generator).numpy()
        return torch.from_numpy(self.tokens[starts[:, None] + offsets].astype(np.int64))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def eval_windows(tokens: np.ndarray, seq_len: int, n: int) -> torch.Tensor:
    """The validation set: at most ``n`` (``train.eval_sequences``) non-overlapping windows of
    ``seq_len + 1`` tokens, evenly spaced over the stream: ``(m, T + 1)`` int64 with
    ``1 <= m <= n`` (fewer only when the stream holds fewer windows). Deterministic: a function
    of the stream, ``seq_len`` and ``n`` alone."""
    available = (len(tokens) - 1) // seq_len
    m = max(1, min(n, available))
    if m < n:
        log.warning(
            "train.eval_sequences=%d: the validation split holds %d windows of %d tokens; "
            "the validation set is those %d",
            *(n, available, seq_len + 1, m),
        )
    starts = (np.arange(m) * (available // m)) * seq_len
    idx = starts[:, None] + np.arange(seq_len + 1)
    return torch.from_numpy(tokens[idx].astype(np.int64))


def validation_fingerprint(windows: torch.Tensor) -> dict:
    """What identifies a validation set ``windows`` (``(m, T + 1)`` int64): ``sequences`` (m),
    ``tokens`` (the m·T predicted tokens a validation loss averages over) and ``fingerprint``
    (the first 16 hex digits of the SHA-256 of the windows' tokens as little-endian int64).
    Two runs measure their validation loss on the same tokens iff the three agree."""
    data = np.ascontiguousarray(windows.numpy().astype("<i8"))
    m, length = data.shape
    return {
        "sequences": int(m),
        "tokens": int(m * (length - 1)),
        "fingerprint": hashlib.sha256(data.tobytes()).hexdigest()[:16],
    }
