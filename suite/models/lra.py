"""LRA models: a pre-LN Transformer encoder with a swappable attention, and the shared-weight dual encoder.

Shapes: tokens [B, L] int64, mask [B, L] bool (True = real token; padding only — pixel value 0 is a real
token). ``LRAClassifier`` returns logits [B, C]; ``LRADualClassifier`` takes two documents and returns [B, 2].
Head as in the LRA code: pooled vector -> Dense(mlp_dim) -> ReLU -> Dense(classes); the dual head combines
[e1, e2, e1*e2, e1-e2] (the paper's NLI form) -> Dense(mlp_dim) -> ReLU -> Dense(mlp_dim/2) -> ReLU -> Dense(2).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from suite.attention import build_attention
from suite.models.config import LRAConfig


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """[length, dim] fixed sine/cosine position codes (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class Block(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, attention: str, cfg: LRAConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = build_attention(attention, cfg.dim, cfg.heads, causal=False)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.mlp_dim, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class LRAEncoder(nn.Module):
    """tokens [B, L], mask [B, L] -> pooled [B, dim] (a learned CLS token is prepended for cls pooling)."""

    def __init__(self, attention: str, cfg: LRAConfig) -> None:
        super().__init__()
        if cfg.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {cfg.pool!r}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        extra = 1 if cfg.pool == "cls" else 0
        if cfg.pos_emb == "learned":
            self.pos = nn.Parameter(torch.randn(cfg.max_len + extra, cfg.dim) * 0.02)
        elif cfg.pos_emb == "sinusoidal":
            self.register_buffer("pos", sinusoidal_positions(cfg.max_len + extra, cfg.dim), persistent=False)
        else:
            raise ValueError(f"pos_emb must be 'learned' or 'sinusoidal', got {cfg.pos_emb!r}")
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if extra else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(attention, cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        x = self.drop(x + self.pos[: x.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.cls is not None:
            return x[:, 0]
        weights = mask.to(x.dtype)[..., None]
        return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class LRAClassifier(nn.Module):
    """Single-input LRA task model: encoder -> Dense(mlp_dim) -> ReLU -> Dense(num_classes)."""

    def __init__(self, attention: str, cfg: LRAConfig) -> None:
        super().__init__()
        self.encoder = LRAEncoder(attention, cfg)
        self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.ReLU(), nn.Linear(cfg.mlp_dim, cfg.num_classes))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(tokens, mask))


class LRADualClassifier(nn.Module):
    """Retrieval: one shared encoder for both documents, head over [e1, e2, e1*e2, e1-e2]."""

    def __init__(self, attention: str, cfg: LRAConfig) -> None:
        super().__init__()
        self.encoder = LRAEncoder(attention, cfg)
        self.head = nn.Sequential(nn.Linear(4 * cfg.dim, cfg.mlp_dim), nn.ReLU(),
                                  nn.Linear(cfg.mlp_dim, cfg.mlp_dim // 2), nn.ReLU(),
                                  nn.Linear(cfg.mlp_dim // 2, cfg.num_classes))

    def forward(self, tokens1: torch.Tensor, mask1: torch.Tensor, tokens2: torch.Tensor,
                mask2: torch.Tensor) -> torch.Tensor:
        e1, e2 = self.encoder(tokens1, mask1), self.encoder(tokens2, mask2)
        return self.head(torch.cat([e1, e2, e1 * e2, e1 - e2], dim=-1))
