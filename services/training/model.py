"""SASRec-family causal transformer over a user's recent items.

Item indices are 1..N with 0 as padding; sequences are left-padded so the most
recent item is always at the last position, whose hidden state is the user embedding.
Output item embeddings are separate from the input ones (untied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    num_items: int
    max_len: int = 50
    dim: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int = 256
    dropout: float = 0.5
    norm_first: bool = True
    num_attributes: int = 0  # > 0: item inputs also get the mean of their attribute embeddings


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean CE of ``h @ w.T`` against ``y``, with the softmax gradient written in place.

    Autograd's log_softmax + nll backward makes several full passes over the
    [positions, N] logits; this keeps one buffer and does exp once, which halves
    the step time on CPU (the logits dominate the cost).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = h @ w.T
        target = logits.gather(1, y[:, None])
        peak = logits.max(1, keepdim=True).values
        probs = logits.sub_(peak).exp_()
        total = probs.sum(1, keepdim=True)
        probs.div_(total)
        ctx.save_for_backward(h, w, y, probs)
        return (total.log() + peak - target).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        h, w, y, probs = ctx.saved_tensors
        probs.scatter_add_(1, y[:, None], torch.full((len(y), 1), -1.0, dtype=probs.dtype))
        probs.mul_(grad / len(y))
        return probs @ w, probs.T @ h, None


class Block(nn.Module):
    """Multi-head causal self-attention + feed-forward, pre-LN or post-LN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.num_heads:
            raise ValueError("dim must be divisible by num_heads")
        self.heads = cfg.num_heads
        self.head_dim = cfg.dim // cfg.num_heads
        self.norm_first = cfg.norm_first
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_dim, cfg.dim),
        )
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        att = self.attn_drop(att.masked_fill(~mask, -1e9).softmax(-1))
        out = (att @ v).transpose(1, 2).reshape(b, length, dim)
        return self.drop(self.proj(out))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attention(self.norm1(x), mask)
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.attention(x, mask))
        return self.norm2(x + self.drop(self.ffn(x)))


class SASRec(nn.Module):
    """Causal self-attentive sequential recommender; ``forward`` returns user embeddings."""

    def __init__(self, cfg: ModelConfig, item_attributes: torch.Tensor | None = None) -> None:
        """``item_attributes``: int64 [N+1, A] attribute indices 1..num_attributes, 0-padded."""
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.num_items + 1, cfg.dim, padding_idx=0)
        self.attr_emb = None
        if cfg.num_attributes:
            if item_attributes is None or item_attributes.shape[0] != cfg.num_items + 1:
                raise ValueError("num_attributes > 0 needs item_attributes of shape [N+1, A]")
            # A buffer, so the exported encoder still takes item ids only.
            self.register_buffer("item_attrs", item_attributes.long())
            self.attr_emb = nn.Embedding(cfg.num_attributes + 1, cfg.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.out_emb = nn.Embedding(cfg.num_items + 1, cfg.dim)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_blocks))
        self.final_norm = nn.LayerNorm(cfg.dim) if cfg.norm_first else nn.Identity()
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def hidden(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, dim] for left-padded ``item_seq`` [B, L], L <= max_len.

        Positions count back from the end (the last column is position max_len-1),
        so a cropped batch gets the same position embeddings as a full-width one.
        """
        length = item_seq.shape[1]
        valid = item_seq > 0
        positions = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=item_seq.device)
        x = self.item_emb(item_seq)
        if self.attr_emb is not None:
            attrs = self.item_attrs[item_seq]  # [B, L, A]
            count = (attrs > 0).sum(-1, keepdim=True).clamp(min=1)
            x = x + self.attr_emb(attrs).sum(-2) / count
        x = x * math.sqrt(self.cfg.dim) + self.pos_emb(positions)
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        # Built from comparisons rather than tril/eye: those export to ops (EyeLike on bool)
        # that onnxruntime lacks. Keys must be real items and not in the future; a query
        # always sees itself, so all-padding rows stay finite.
        idx = torch.arange(length, device=item_seq.device)
        causal, eye = idx[:, None] >= idx[None, :], idx[:, None] == idx[None, :]
        mask = (causal & valid.unsqueeze(1) | eye).unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask) * valid.unsqueeze(-1)
        return self.final_norm(x)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """User embeddings [B, dim]: the hidden state at the last position."""
        return self.hidden(item_seq)[:, -1]

    def output_embeddings(self) -> torch.Tensor:
        """Output item embeddings [N+1, dim] with the padding row zeroed."""
        weight = self.out_emb.weight.detach().clone()
        weight[0] = 0
        return weight

    def loss(self, item_seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Full softmax cross-entropy over all N items at every non-padded position."""
        h = self.hidden(item_seq)
        keep = targets > 0
        # Only real positions, only real items (row 0 of out_emb is padding).
        return SoftmaxCrossEntropy.apply(h[keep], self.out_emb.weight[1:], targets[keep] - 1)
