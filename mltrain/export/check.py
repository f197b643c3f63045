"""The cross-check: an exported model's loss on the run's own validation windows, computed by
``transformers``, against the same level computed by mltrain's own model and against what the
run logged.

The validation windows are the run's (:func:`mltrain.data.sampler.eval_windows` over the
validation split, ``train.eval_sequences`` windows of ``model.seq_len + 1`` tokens), rebuilt
from its config and checked against the fingerprint in its ``run.json``. Both losses are the
run's own aggregation (:meth:`mltrain.train.batch_runner.BatchRunner.mean_loss`): a forward per chunk of
``data.batch_size`` windows, each chunk's mean cross-entropy (nats/token, fp32) weighted by its
token count, summed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mltrain.config.schema import ModelConfig
from mltrain.data import DataBundle, build_data, eval_windows
from mltrain.data.sampler import validation_fingerprint
from mltrain.export.source import Exportable, ExportError
from mltrain.model.transformer import BlockPath, ODETransformer


def run_data(ex: Exportable) -> DataBundle:
    """The run's token streams and tokenizer (:func:`mltrain.data.build_data` from its config:
    the token cache when it is there, else the corpus tokenized again)."""
    return build_data(ex.cfg.data, int(ex.cfg.model.seq_len))


def validation_windows(ex: Exportable, data: DataBundle) -> torch.Tensor:
    """The run's validation windows ``(m, T + 1)`` int64.

    Raises:
        ExportError: their fingerprint differs from the one the run recorded in ``run.json``
            (the corpus, tokenizer or split changed since the run).
    """
    t = ex.cfg
    windows = eval_windows(data.val, int(t.model.seq_len), int(t.train.eval_sequences))
    want = ex.validation_fingerprint()
    got = validation_fingerprint(windows)["fingerprint"]
    if want is not None and want != got:
        raise ExportError(
            f"the validation windows rebuilt from {ex.run_dir}'s config have fingerprint {got}, "
            f"the run recorded {want} (run.json): the corpus or tokenizer changed since the run"
        )
    return windows


def own_model(ex: Exportable) -> tuple[ODETransformer, BlockPath]:
    """mltrain's model holding ``ex.weights`` (eval mode) and the path it integrates."""
    n_layer = len({k.split(".")[1] for k in ex.weights if k.startswith("blocks.")})
    m = ex.cfg.model
    cfg = ModelConfig(
        n_layer=n_layer,
        n_embd=ex.n_embd,
        n_head=ex.n_head,
        seq_len=ex.block_size,
        block_size=ex.block_size,
        dropout=float(m.dropout),
        bias=ex.bias,
        attention=m.attention,
    )
    model = ODETransformer(cfg, ex.vocab_size)
    model.load_state_dict(ex.weights)
    return model.eval(), BlockPath(ex.blocks, hs=ex.steps)


def chunked_loss(loss_of, windows: torch.Tensor, chunk: int) -> float:
    """Mean next-token cross-entropy (nats/token) over ``windows`` ``(m, T + 1)``: ``loss_of(x,
    y)`` (0-d, fp32, x and y ``(b, T)``) per chunk of ``chunk`` windows, weighted by tokens,
    summed in float64 (the run's aggregation)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for b in windows.split(chunk):
            n = b[:, 1:].numel()
            total += float(loss_of(b[:, :-1], b[:, 1:]).double()) * n
            count += n
    return total / count


def own_loss(ex: Exportable, windows: torch.Tensor) -> float:
    """mltrain's validation loss of the exported level (its :func:`own_model`)."""
    model, path = own_model(ex)
    return chunked_loss(
        lambda x, y: model(x, y, path=path)[1], windows, int(ex.cfg.data.batch_size)
    )


def hf_loss(model, windows: torch.Tensor, chunk: int) -> float:
    """The validation loss of a ``transformers`` causal LM: logits from ``model(input_ids=x)``,
    loss by transformers' own ``model.loss_function`` with ``shift_labels=y`` (the targets are
    the next tokens already, so its own shift is not applied)."""

    def loss_of(x, y):
        logits = model(input_ids=x).logits
        return model.loss_function(
            logits, None, vocab_size=logits.size(-1), shift_labels=y.contiguous()
        )

    return chunked_loss(loss_of, windows, chunk)


def logit_diff(ex: Exportable, model, windows: torch.Tensor) -> tuple[float, float]:
    """(max |logits_transformers − logits_mltrain|, max |logits_mltrain|) over
    ``windows[:, :-1]`` ``(b, T)``."""
    ours, path = own_model(ex)
    x = windows[:, :-1]
    with torch.no_grad():
        a = model(input_ids=x).logits.float()
        b = ours(x, path=path)[0].float()
    return float((a - b).abs().max()), float(b.abs().max())


@dataclass
class Check:
    """The cross-check's numbers (losses in nats/token on the run's validation windows)."""

    hf: float  # the exported model, by transformers
    own: float  # the same level by mltrain's own model
    logged: float | None  # the run's val/loss at this step, when it measured this level
    logit_diff: float  # max |Δ logits| on the first chunk of windows
    logit_max: float  # max |logits| there (mltrain's)
    sequences: int
    tokens: int
    fingerprint: str

    def problem(self, loss_tol: float, logit_tol: float) -> str | None:
        """What is wrong when the two models differ by more than rounding: |Δ loss| >
        ``loss_tol`` or max |Δ logits| > ``logit_tol`` · max(1, max |logits|); else None."""
        if not abs(self.hf - self.own) <= loss_tol:
            return f"validation loss {self.hf:.6f} by transformers, {self.own:.6f} by mltrain"
        if not self.logit_diff <= logit_tol * max(1.0, self.logit_max):
            return (
                f"logits differ by up to {self.logit_diff:.3g} (max |logit| {self.logit_max:.3g})"
            )
        return None

    def as_dict(self) -> dict:
        return {
            "transformers": self.hf,
            "mltrain": self.own,
            "logged": self.logged,
            "max_abs_logit_diff": self.logit_diff,
            "max_abs_logit": self.logit_max,
            "validation": {
                "sequences": self.sequences,
                "tokens": self.tokens,
                "fingerprint": self.fingerprint,
            },
        }


def cross_check(ex: Exportable, model, windows: torch.Tensor) -> Check:
    """Measure :class:`Check` for the ``transformers`` ``model`` exported from ``ex``."""
    chunk = int(ex.cfg.data.batch_size)
    fp = validation_fingerprint(windows)
    diff, biggest = logit_diff(ex, model, windows[:chunk])
    return Check(
        hf=hf_loss(model, windows, chunk),
        own=own_loss(ex, windows),
        logged=ex.logged_val_loss(),
        logit_diff=diff,
        logit_max=biggest,
        sequences=fp["sequences"],
        tokens=fp["tokens"],
        fingerprint=fp["fingerprint"],
    )
