"""Data: corpus -> split by document -> tokenizer -> cached token streams -> batches.

:func:`build_data` is the one entry point the trainer uses. Documents are joined with the
tokenizer's end-of-text token (one after each document). Nothing here touches the network
unless the user chose ``data=fineweb_edu`` without local files or a hub ``hf:`` tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mltrain.data import cache
from mltrain.data.corpora import Corpus, is_validation, open_corpus
from mltrain.data.sampler import BatchSampler, eval_windows
from mltrain.data.tokenizers import (
    TOKENIZERS,
    Tokenizer,
    TokenizerSource,
    parse_spec,
    token_dtype,
)
from mltrain.errors import DataError

if TYPE_CHECKING:
    from mltrain.config import DataConfig

log = logging.getLogger(__name__)

# Bump when the tokenization code changes (how documents are joined, the dtype rule...): it is
# part of the token cache key, so older caches are not reused.
TOKENIZE_VERSION = 2

__all__ = ["DataBundle", "build_data", "BatchSampler", "eval_windows", "Tokenizer"]


@dataclass
class DataBundle:
    """Token streams and the tokenizer that made them.

    Attributes:
        train, val: 1-D token arrays (memory-mapped, uint16 or uint32).
        tokenizer: the :class:`~mltrain.data.tokenizers.Tokenizer`.
        fingerprint: the cache key (changes with corpus, tokenizer or split).
        n_docs: documents in (train, val).
        content_fingerprint: sha256 of the token streams themselves (what a checkpoint was
            trained on; a resume checks it).
    """

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    fingerprint: str
    n_docs: tuple[int, int]
    content_fingerprint: str = ""

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def _split_documents(corpus: Corpus, val_fraction: float) -> tuple[list[str], list[str]]:
    train, val = [], []
    for i, (_, text) in enumerate(corpus.documents()):
        (val if is_validation(i, val_fraction) else train).append(text)
    if not train or not val:
        raise DataError(_split_error(corpus, len(train) + len(val), val_fraction))
    return train, val


def _splits(n: int, val_fraction: float) -> bool:
    """Whether ``n`` units split by ``val_fraction`` leave at least one on each side."""
    held = sum(is_validation(i, val_fraction) for i in range(n))
    return 0 < held < n


# data.sample_by, from the largest unit to the smallest
_UNITS = ("document", "paragraph", "line")


def _split_error(corpus: Corpus, n: int, val_fraction: float) -> str:
    """Why ``n`` units split by ``val_fraction`` leave a side empty, and settings that split
    this corpus: a larger ``data.val_fraction``, or (text files) a smaller ``data.sample_by``,
    whose units are counted here, so the suggestion holds."""
    import dataclasses

    from mltrain.config.overrides import shell_command

    by = corpus.cfg.sample_by
    text = corpus.name == "text_files" and any(f.suffix == ".txt" for f in corpus.files)
    unit = by if text else "document"
    msg = (
        f"data: the corpus has {n} non-empty {unit}(s)"
        + (f" (data.sample_by={by})" if text else "")
        + f"; a split with data.val_fraction={val_fraction} needs at least one for train and "
        "one for validation: "
    )
    for other in _UNITS[_UNITS.index(by) :] if text else [by]:
        if other != by:
            cfg = dataclasses.replace(corpus.cfg, sample_by=other)
            n = sum(1 for _ in dataclasses.replace(corpus, cfg=cfg).documents())
        fraction = next(
            (f for f in (val_fraction, -(-100 // max(n, 1)) / 100, 0.5) if _splits(n, f)), None
        )
        if fraction is None:
            continue
        settings = [f"data.sample_by={other}"] if other != by else []
        if fraction != val_fraction:
            settings.append(f"data.val_fraction={fraction:g}")
        return msg + f"add {shell_command(settings)}" + (f" ({n} {other}s)" if other != by else "")
    return msg + "give more text (data.paths)"


def _tokenize(docs: list[str], tok: Tokenizer, chunk: int = 256) -> np.ndarray:
    dtype = token_dtype(tok.vocab_size)
    parts = []
    for i in range(0, len(docs), chunk):
        for ids in tok.encode_batch(docs[i : i + chunk]):
            parts.append(np.asarray(ids, dtype=dtype))
            parts.append(np.asarray([tok.eot_id], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def tokens_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the train and validation token streams (their dtype and values)."""
    h = hashlib.sha256()
    for name in ("train", "val"):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{len(a)}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def build_data(cfg: DataConfig, seq_len: int, cache_dir: str | Path | None = None) -> DataBundle:
    """Open the corpus, build or load the tokenizer and the cached token streams.

    The token cache key covers everything that determines the token streams: the corpus
    (settings, reader version and files' content), the split rule, the tokenizer's full
    content (:attr:`Tokenizer.fingerprint`) and the tokenization code's version
    (:data:`TOKENIZE_VERSION`).

    Args:
        cfg: the ``data`` section.
        seq_len: T; each split must hold at least T + 1 tokens.
        cache_dir: where token caches and trained tokenizers live (default ``data.cache_dir``,
            else :func:`mltrain.data.cache.default_cache_dir`).

    Raises:
        ConfigError: an unknown corpus or tokenizer.
        DataError: unreadable corpus, unusable tokenizer, or a split with fewer than
            ``seq_len + 1`` tokens (both numbers are named).
    """
    root = Path(cache_dir or cfg.cache_dir or cache.default_cache_dir()).expanduser()
    corpus = open_corpus(cfg)
    corpus_fp = corpus.fingerprint()
    split = {"val_fraction": float(cfg.val_fraction), "rule": "every-(1/f)th-document"}
    t0 = time.perf_counter()

    docs: tuple[list[str], list[str]] | None = None

    def split_docs() -> tuple[list[str], list[str]]:
        nonlocal docs
        if docs is None:
            docs = _split_documents(corpus, cfg.val_fraction)
        return docs

    kind, arg = parse_spec(cfg.tokenizer)
    source = TokenizerSource(cfg, root, corpus_fp, split, lambda: split_docs()[0])
    tokenizer = TOKENIZERS.get(kind).load(arg, source)

    key = cache.fingerprint(
        corpus=corpus_fp, split=split, tokenizer=tokenizer.fingerprint, code=TOKENIZE_VERSION
    )
    entry = root / "tokens" / key[:32]
    arrays = cache.load(entry)
    if arrays is None:
        train_docs, val_docs = split_docs()
        new = {"train": _tokenize(train_docs, tokenizer), "val": _tokenize(val_docs, tokenizer)}
        arrays = cache.save(
            entry,
            new,
            {
                "tokens_sha256": tokens_sha256(new),
                "corpus": cfg.name,
                "tokenizer": tokenizer.name,
                "vocab_size": tokenizer.vocab_size,
                "n_docs": [len(train_docs), len(val_docs)],
                "split": split,
            },
        )
        log.info("tokenized %s in %.1f s -> %s", cfg.name, time.perf_counter() - t0, entry)
    meta = json.loads((entry / "meta.json").read_text())
    content = meta.get("tokens_sha256") or tokens_sha256(arrays)

    for name, arr in arrays.items():
        if len(arr) < seq_len + 1:
            raise DataError(
                f"data: the {name} split holds {len(arr)} tokens, fewer than model.seq_len + 1 = "
                f"{seq_len + 1}; use more text or a shorter model.seq_len"
            )
    return DataBundle(
        arrays["train"], arrays["val"], tokenizer, key, tuple(meta["n_docs"]), content
    )
