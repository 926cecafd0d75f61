"""A GPT-style decoder whose token mixer is any causal attention from the registry (nanoGPT habit: one screen).

    idx [B, L] -> tok_emb (+ pos_emb) -> depth x Block -> LayerNorm -> logits [B, L, V]  (head tied to tok_emb)
    Block:  x = x + mixer(LayerNorm(x));  x = x + MLP(LayerNorm(x))                       (pre-norm, residual)

Positions: none by default ("NoPE"). A causal decoder infers token order from its causal mask alone (Haviv et
al. 2022; Kazemnejad et al. 2023), recurrent mixers (EA, linear attention, retention, Mamba) carry order in
their state, and a model without a position table decodes at any context length, which the decode benchmark
needs (1k to 64k). So every mixer gets the same model. ``pos_emb="learned"`` adds a GPT-2 table of
``max_seq_len`` rows for those who want it (then contexts are capped at ``max_seq_len``).

Decoding: ``prefill`` runs each mixer's parallel ``prefill`` over a prompt and keeps its state (softmax: a KV
cache that grows with L; EA: the (A_n, B_n) sums, 2(t+1)·H·D floats per layer whatever L); ``step`` feeds one
token through each mixer's ``step``; ``generate`` is prefill + step.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from suite.attention import AttentionModule, build_attention
from suite.models.config import LMConfig


class Block(nn.Module):
    """Pre-norm residual block: causal mixer, then MLP. Tensors [B, L, dim] (or [B, dim] in ``step``)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.mixer = build_attention(cfg.attention, cfg.dim, cfg.heads, causal=True)
        hidden = int(cfg.mlp_ratio * cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer.prefill(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), state

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + y
        return x_t + self.mlp(self.norm2(x_t)), state


class DecoderLM(nn.Module):
    """Causal LM: ``forward(idx [B, L] long) -> logits [B, L, vocab_size]`` (float, unnormalised)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.pos_emb == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init for embeddings and MLPs (output layer scaled by 1/sqrt(2·depth)); mixers keep their own."""
        for emb in filter(None, (self.tok_emb, self.pos_emb)):
            nn.init.normal_(emb.weight, std=0.02)
        for blk in cast(Iterable[Block], self.blocks):
            for i, std in ((0, 0.02), (2, 0.02 / math.sqrt(2 * self.cfg.depth))):
                linear = cast(nn.Linear, blk.mlp[i])  # mlp = Linear, GELU, Linear, Dropout
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token (+ position) embedding of idx [B, L] (or [B] for one step) whose first token sits at ``start``."""
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            end = start + (idx.shape[-1] if idx.dim() == 2 else 1)
            if end > self.cfg.max_seq_len:
                raise ValueError(f"position {end - 1} is past the learned position table ({self.cfg.max_seq_len} rows)")
            pos = self.pos_emb(torch.arange(start, end, device=idx.device))
            x = x + (pos if idx.dim() == 2 else pos[0])
        return self.drop(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm and the tied output head: h [..., dim] -> logits [..., vocab_size]."""
        return F.linear(self.norm(h), self.tok_emb.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x)
        return self.logits(x)

    # -- decoding ----------------------------------------------------------------------------------
    def prefill(self, idx: torch.Tensor, last_only: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        """Parallel pass over a prompt idx [B, L] (L >= 1) that keeps every mixer's decoding state.

        Returns (logits [B, L, V], or [B, V] for the last position when ``last_only``; states).
        """
        if idx.dim() != 2 or idx.shape[1] < 1:
            raise ValueError(f"prefill needs idx of shape [B, L] with L >= 1, got {list(idx.shape)}")
        x, layer_states = self.embed(idx), []
        for blk in cast(Iterable[Block], self.blocks):
            x, state = blk.prefill(x)
            layer_states.append(state)
        h = x[:, -1] if last_only else x
        return self.logits(h), {"pos": idx.shape[1], "layers": layer_states}

    def step(self, token: torch.Tensor, states: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """One decoding step: token [B] long -> (logits [B, V] for the next token, updated states)."""
        x, layer_states = self.embed(token, states["pos"]), []
        for blk, state in zip(cast(Iterable[Block], self.blocks), states["layers"]):
            x, state = blk.step(x, state)
            layer_states.append(state)
        return self.logits(x), {"pos": states["pos"] + 1, "layers": layer_states}

    @staticmethod
    def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Next token [B] from logits [B, V]: argmax when temperature == 0, else softmax(logits / T) (top-k)."""
        if temperature <= 0:
            return logits.argmax(-1)
        logits = logits.float() / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Prompt idx [B, L] -> idx followed by ``max_new_tokens`` tokens [B, L + max_new_tokens] (prefill + step)."""
        logits, states = self.prefill(idx, last_only=True)
        out = [idx]
        for i in range(max_new_tokens):
            token = self.sample(logits, temperature, top_k, generator)
            out.append(token[:, None])
            if i + 1 < max_new_tokens:
                logits, states = self.step(token, states)
        return torch.cat(out, dim=1)

    @staticmethod
    def state_bytes(states: dict[str, Any]) -> int:
        """Bytes held by the decoding states of every layer (KV caches or recurrent states)."""
        return AttentionModule.state_bytes(states["layers"])



def next_token_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross entropy (nats per token) of ``model`` (a DecoderLM, or DDP around one) on a batch
    (idx, targets) of int64 [B, L]."""
    idx, targets = batch
    return F.cross_entropy(model(idx).flatten(0, 1).float(), targets.flatten())
