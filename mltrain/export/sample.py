"""Sampling text from a trained model, by two routes that agree at temperature 0:

- an export directory (``mltrain-export``'s): ``transformers``' ``generate`` on the exported
  model and its ``AutoTokenizer``;
- a run directory: mltrain's own model (:class:`~mltrain.model.transformer.ODETransformer`
  along the level's path) and the run's tokenizer, with :func:`generate_own`.

Both read the prompt after one end-of-text token (a document starts after one in training),
stop after ``max_new`` tokens or at end-of-text, and refuse a prompt plus ``max_new`` longer
than the model's context (no silent cropping, so both routes see the same tokens). Temperature
0 is greedy (argmax); above 0, logits are divided by the temperature, cut to the ``top_k``
largest (0: all) and sampled; a ``seed`` makes a route deterministic (transformers draws from
torch's global generator, which is seeded; mltrain's loop from its own ``torch.Generator``), but
the two routes draw differently, so only temperature 0 gives the same text by both.
"""

from __future__ import annotations

import torch

from mltrain.export.source import ExportError
from mltrain.model.transformer import BlockPath, ODETransformer


def check_length(prompt: int, max_new: int, context: int) -> None:
    """Raise :class:`ExportError` when ``prompt`` + ``max_new`` tokens exceed ``context``."""
    if max_new < 1:
        raise ExportError(f"--max-new-tokens {max_new} is not allowed: must be >= 1")
    if prompt + max_new > context:
        raise ExportError(
            f"--max-new-tokens {max_new}: the prompt ({prompt} tokens with the end-of-text "
            f"before it) plus the new tokens exceed the model's context of {context} tokens; "
            f"use --max-new-tokens {max(context - prompt, 0)} or less"
        )


def _pick(logits: torch.Tensor, temperature: float, top_k: int, gen) -> int:
    """The next token from ``logits`` ``(V,)``: argmax at temperature 0, else a draw."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.no_grad()
def generate_own(
    model: ODETransformer,
    path: BlockPath,
    ids: list[int],
    max_new: int,
    eot: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[int]:
    """``ids`` continued by up to ``max_new`` tokens (stopping after ``eot``) with mltrain's
    ``model`` along ``path``: one full forward per new token (no cache; the models are small).

    Raises:
        ExportError: ``ids`` + ``max_new`` exceed the context ``model.block_size``.
    """
    check_length(len(ids), max_new, model.block_size)
    gen = torch.Generator().manual_seed(int(seed))
    out = list(ids)
    model.eval()
    for _ in range(max_new):
        logits = model(torch.tensor([out]), path=path)[0][0, -1]
        out.append(_pick(logits, temperature, top_k, gen))
        if out[-1] == eot:
            break
    return out


@torch.no_grad()
def generate_hf(
    model, ids: list[int], max_new: int, temperature: float = 0.0, top_k: int = 0, seed: int = 0
) -> list[int]:
    """``ids`` continued by ``transformers``' ``model.generate`` (greedy at temperature 0,
    else sampling with ``temperature`` and ``top_k``, 0: no cut), stopping at EOS.

    Raises:
        ExportError: ``ids`` + ``max_new`` exceed the context ``n_positions``.
    """
    check_length(len(ids), max_new, int(model.config.n_positions))
    torch.manual_seed(int(seed))
    x = torch.tensor([ids])
    kwargs = {"do_sample": False}
    if temperature > 0:
        kwargs = {"do_sample": True, "temperature": float(temperature), "top_k": int(top_k)}
    y = model.generate(
        x,
        attention_mask=torch.ones_like(x),
        max_new_tokens=max_new,
        min_new_tokens=0,
        pad_token_id=model.config.eos_token_id,
        eos_token_id=model.config.eos_token_id,
        top_p=1.0,
        **kwargs,
    )
    out = y[0].tolist()
    eos = model.config.eos_token_id
    if eos in out[len(ids) :]:  # generate pads a finished sequence of a batch; there is one
        out = out[: len(ids) + out[len(ids) :].index(eos) + 1]
    return out
