"""The ODE-Transformer: a pre-LN GPT decoder whose forward pass integrates a path of blocks.

Each residual block is one forward-Euler step of an ODE (Lauga et al. 2025, Sec. 2;
DESIGN.md section 1)::

    x <- x + h * F(x),   F(x) = SA(LN1(x)) + FF(LN2(x + SA(LN1(x))))

The fine network integrates all blocks with step h = 1 (a standard GPT-2 block when h = 1).
A coarse level integrates a subset of the *same* block modules with a larger step; the
model does not know about levels, it only takes the :class:`BlockPath` to integrate.

Shapes: ``idx`` and ``targets`` are ``(B, T)`` int64 token ids, logits ``(B, T, V)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from mltrain.errors import ConfigError

if TYPE_CHECKING:
    from mltrain.config import ModelConfig


@dataclass(frozen=True)
class BlockPath:
    """Which blocks a forward pass evaluates, in order, and the Euler step size of each.

    Attributes:
        blocks: block indices into ``model.blocks``, evaluated in this order.
        h: step size applied to every evaluation on this path (1.0 for the fine level).
        hs: per-evaluation step sizes (one per entry of ``blocks``) when they differ, e.g. a
            random sub-path whose sampled blocks are scaled by their inverse inclusion
            probability; None: ``h`` for every block.
    """

    blocks: tuple[int, ...]
    h: float = 1.0
    hs: tuple[float, ...] | None = None

    def steps(self) -> tuple[float, ...]:
        """The step size of each block evaluation, in order."""
        return self.hs if self.hs is not None else (self.h,) * len(self.blocks)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, ``(B, T, d) -> (B, T, d)``.

    ``attention="sdpa"`` uses :func:`torch.nn.functional.scaled_dot_product_attention`;
    ``"explicit"`` computes softmax(QKᵀ/√d_h)V with matmuls, the path FLOP counting needs
    (FlopCounterMode counts SDPA as 0 FLOPs on CPU; DESIGN.md section 3).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.attention = "sdpa"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        hd = C // self.n_head
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = explicit_attention(q, k, v, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal attention with plain matmuls: ``(B, H, T, d_h)`` q, k, v -> ``(B, H, T, d_h)``.

    Forward cost 2·2·B·H·T²·d_h FLOPs (QKᵀ and AV, no causal discount; DESIGN.md section 3).
    """
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    return att @ v


class MLP(nn.Module):
    """GELU feed-forward ``d -> 4d -> d``."""

    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """The residual function F of one block: ``(B, T, d) -> (B, T, d)``.

    ``F(x) = SA(LN1(x)) + FF(LN2(x + SA(LN1(x))))`` (DESIGN.md section 1). The Euler update
    ``x + h·F(x)`` is applied by :meth:`ODETransformer.integrate`, so the same compiled
    block serves every step size.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.ln_1(x))
        return a + self.mlp(self.ln_2(x + a))


class ODETransformer(nn.Module):
    """GPT-style decoder with learned positions and a tied head (input/output embeddings are
    one tensor), whose blocks are integrated along a :class:`BlockPath`.

    Args:
        cfg: the ``model`` section (:class:`mltrain.config.ModelConfig`): ``n_layer`` blocks N,
            width ``n_embd`` d, ``n_head`` attention heads (d must be divisible by it),
            ``block_size`` context (rows of the positional table, >= any T fed), ``dropout``
            (embedding, attention and residual; off in eval mode), ``bias`` (linear layers and
            layer norms, as GPT-2), ``attention`` (``"sdpa"`` or ``"explicit"``, see
            :class:`CausalSelfAttention`). Its ``vocab_size`` and ``seq_len`` are not used here.
        vocab_size: V, rows of the token embedding (= columns of the head).

    Initialisation follows GPT-2 (Radford et al. 2019; nanoGPT): N(0, 0.02) weights, zero
    biases, residual projections N(0, 0.02/√(2N)).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        n_layer, n_embd, n_head, block_size = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.block_size
        dropout, bias, attention = cfg.dropout, cfg.bias, cfg.attention
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_embd = n_embd
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one tensor
        self.set_attention(attention)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def n_layer(self) -> int:
        return len(self.blocks)

    def fine_path(self) -> BlockPath:
        """All blocks in order with step h = 1."""
        return BlockPath(tuple(range(self.n_layer)), 1.0)

    def set_attention(self, attention: str) -> None:
        """Select ``"sdpa"`` or ``"explicit"`` attention in every block.

        Raises:
            ValueError: for any other name.
        """
        if attention not in ("sdpa", "explicit"):
            raise ValueError(f"attention={attention!r}: choose sdpa or explicit")
        for block in self.blocks:
            block.attn.attention = attention

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings: ``(B, T)`` ids -> ``(B, T, d)``."""
        T = idx.size(1)
        if T > self.block_size:
            raise ValueError(
                f"sequence length {T} exceeds the context block_size={self.block_size}"
            )
        pos = torch.arange(T, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def integrate(self, x: torch.Tensor, path: BlockPath) -> torch.Tensor:
        """Forward-Euler integration ``x <- x + h·F_i(x)`` over ``path.blocks``: ``(B, T, d)``."""
        if path.hs is None:
            h = path.h
            for i in path.blocks:
                x = x + h * self.blocks[i](x)
            return x
        for i, h in zip(path.blocks, path.hs, strict=True):
            x = x + h * self.blocks[i](x)
        return x

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        path: BlockPath | None = None,
        patch: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, given ``targets``, the mean cross-entropy (nats per token).

        Token level (``patch=1``): ``idx`` and ``targets`` are ``(B, T)``, logits ``(B, T, V)``.
        Patch level (``patch=K`` > 1): :meth:`patch_forward`. ``path`` defaults to the fine
        path (all blocks, h = 1).
        """
        if patch != 1:
            return self.patch_forward(idx, targets, path, patch)
        x = self.integrate(self.embed(idx), path or self.fine_path())
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def patch_forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None,
        path: BlockPath | None,
        patch: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The patch-level forward of Shao et al., ICLR 2025 (arXiv 2407.12665, Sec. 2 and
        their code, ``modeling_llama.py``), with K = ``patch`` tokens per position.

        ``idx`` is ``(B, K·T)`` token ids; position i (0-based) gets the mean of the embeddings
        of tokens iK .. iK+K−1 plus position i's learned embedding (patch index i, as their
        ``position_ids[:, :num_patches]``). ``targets`` is ``(B, T, K)`` (or ``(B, K·T)``):
        position i's K next tokens, (i+1)K .. (i+1)K+K−1 of the window, all predicted from the
        one hidden state through the shared (tied) head. The loss is their
        ``Σ_k CE(logits, labels_k) / K``: the mean over positions and over the K tokens of the
        cross-entropy, nats per token. With K = 1 every step reduces to the token-level
        forward's, bit for bit (the mean of one embedding is itself; the loss is the same
        ``cross_entropy`` call). Returns logits ``(B, T, V)`` and the loss (0-d) or None.

        Raises:
            ValueError: ``K·T`` does not divide the input length, or T > ``block_size``.
        """
        B, L = idx.shape
        T = L // patch
        if T * patch != L or T > self.block_size:
            raise ValueError(
                f"patch={patch}: {L} tokens are not {patch} x T with T <= block_size={self.block_size}"
            )
        x = self.wte(idx).view(B, T, patch, self.n_embd).mean(dim=2)
        x = self.drop(x + self.wpe(torch.arange(T, device=idx.device)))
        logits = self.lm_head(self.ln_f(self.integrate(x, path or self.fine_path())))
        loss = None
        if targets is not None:
            flat = logits.view(B * T, -1)
            tgt = targets.reshape(B * T, patch)
            if patch == 1:  # Σ_k CE / K with K = 1: the token-level loss itself
                loss = F.cross_entropy(flat, tgt[:, 0])
            else:  # one log-softmax per position, K gathers: mean over (B, T, K)
                logp = F.log_softmax(flat.float(), dim=-1)
                loss = -logp.gather(-1, tgt).mean()
        return logits, loss

    def shared_parameter_names(self) -> list[str]:
        """Parameters every level uses: embeddings (tied with the head), final norm."""
        return [n for n, _ in self.named_parameters() if not n.startswith("blocks.")]

    def block_parameter_names(self, i: int) -> list[str]:
        """Parameters of block ``i`` (full names, e.g. ``blocks.3.attn.c_attn.weight``)."""
        return [f"blocks.{i}.{n}" for n, _ in self.blocks[i].named_parameters()]

    def param_counts(self) -> dict[str, int]:
        """Parameter counts (scalars; the tied head counted once) and V: ``total``,
        ``nonembed`` (without the token and position embeddings) and ``vocab``."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.wte.weight.numel() + self.wpe.weight.numel()
        return {"total": total, "nonembed": total - emb, "vocab": self.vocab_size}

    def compile_blocks(self, backend: str) -> None:
        """Compile each block once with ``torch.compile``'s ``backend``; the Euler update
        ``x + h·F(x)`` stays outside, so every level (any subset of blocks, any step size)
        reuses the same compiled code.

        Raises:
            ConfigError: ``backend`` is not one of torch's (names the allowed ones).
        """
        backends = torch._dynamo.list_backends(exclude_tags=())
        if backend not in backends:
            raise ConfigError(
                f"train.compile_backend={backend!r} is not allowed: choose one of "
                f"{', '.join(b for b in backends if 'TESTING' not in b and 'minifier' not in b)}"
            )
        for block in self.blocks:
            block.compile(backend=backend)
