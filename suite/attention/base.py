"""The module contract every attention follows (DESIGN.md §4).

- ``forward(x [B, L, dim], key_padding_mask=None [B, L] bool, True = keep) -> [B, L, dim]``
- causal modules: ``init_state(batch, device, dtype)`` and ``step(x_t [B, dim], state) -> (y_t [B, dim], state)``
- ``backend_used``: the implementation that ran last (goes into the record's env; no silent fallback)
- ``reference_forward(x, key_padding_mask, rows)``: the same weights through the plain PyTorch reference,
  optionally only for the query positions ``rows``, for checking a fast path on the shape it is timed on.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype attention math runs in: fp32 for half/bf16/fp32 inputs, fp64 for fp64 inputs (exact checks)."""
    return torch.promote_types(t.dtype, torch.float32)


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den == 0 (a query with no usable key); gradient-safe. A NaN in num or den stays NaN
    (a bad input is never turned into a finite number)."""
    empty = den == 0
    return torch.where(empty, torch.zeros_like(num), num / torch.where(empty, torch.ones_like(den), den))


def fla_unavailable_reason(x: torch.Tensor) -> str | None:
    """Why flash-linear-attention's kernels cannot run on ``x`` (None when they can)."""
    if x.device.type != "cuda":
        return f"the tensors are on {x.device.type}, and fla's Triton kernels need CUDA"
    if importlib.util.find_spec("fla") is None:
        return "flash-linear-attention is not installed (pip install -e '.[gpu]')"
    return None


def wants_fast_path(module: AttentionModule, x: torch.Tensor, reason_not: str | None,
                    fast: str = "fla") -> bool:
    """Whether to run the fast backend ``fast``: yes for backend=fast (raising a clear ValueError when it cannot
    run, with ``reason_not`` or the availability reason), yes for auto when it can run, no for torch."""
    if module.backend == "torch":
        return False
    reason = reason_not or (fla_unavailable_reason(x) if fast == "fla" else None)
    if reason is None:
        return True
    if module.backend == fast:
        raise ValueError(f"{module.registry_name}: backend={fast!r} was requested but {reason}")
    return False


class AttentionModule(nn.Module):
    """Base class: holds ``dim``, ``num_heads``, ``head_dim``, ``causal`` and the backend bookkeeping."""

    registry_name: str = "?"
    #: backend names this module accepts; the first one is the plain PyTorch reference
    backends: tuple[str, ...] = ("torch",)
    #: the input projection dim -> 3*dim that ``project_qkv`` uses; set by the subclasses that call it
    qkv: nn.Linear

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if backend != "auto" and backend not in self.backends:
            raise ValueError(f"unknown backend {backend!r} for {self.registry_name}; "
                             f"valid: auto, {', '.join(self.backends)}")
        self.dim, self.num_heads, self.head_dim, self.causal = dim, num_heads, dim // num_heads, causal
        self.backend = backend
        self.backend_used = "none"

    # -- helpers -------------------------------------------------------------------------------------
    def init_qk_norm(self, enabled: bool, width: int | None = None) -> None:
        """``q_norm`` and ``k_norm``: EA's per-head RMS normalisation of q and k over ``width`` channels (default
        the head dim), each with a learnable per-channel gain initialised to 1; identities when not ``enabled``.
        Every attention with a ``qk_norm`` option uses this one form, so that the QK-norm control of a comparison
        differs from EA in the attention alone."""
        width = width or self.head_dim
        self.q_norm: nn.Module = nn.RMSNorm(width) if enabled else nn.Identity()
        self.k_norm: nn.Module = nn.RMSNorm(width) if enabled else nn.Identity()

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> q, k, v [..., H, D] through ``self.qkv`` (one Linear dim -> 3*dim).

        Every attention names its input projection ``project_qkv``; subclasses normalise, scale or feature-map
        q and k on top of this (their docstrings say how), or project differently (Based, AFT).
        """
        q, k, v = self.split_heads(self.qkv(x).unflatten(-1, (3, self.dim)).movedim(-2, 0))
        return q, k, v

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H*D] -> [B, L, H, D] (also [B, H*D] -> [B, H, D])."""
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    @staticmethod
    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-2)

    def check_step_allowed(self) -> None:
        if not self.causal:
            raise RuntimeError(f"{self.registry_name}: step() needs a causal module (build with causal=True)")

    @contextmanager
    def reference_backend(self) -> Iterator[None]:
        """Temporarily run the plain PyTorch reference path."""
        saved = self.backend
        self.backend = self.backends[0]
        try:
            yield
        finally:
            self.backend = saved

    def reference_forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                          rows: torch.Tensor | None = None) -> torch.Tensor:
        """The reference path's output at query positions ``rows`` (all positions when None)."""
        with self.reference_backend():
            out = self.forward(x, key_padding_mask)
        return out if rows is None else out[:, rows]

    def init_state(self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Any:
        raise RuntimeError(f"{self.registry_name} has no recurrent form")

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise RuntimeError(f"{self.registry_name} has no recurrent form")

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Run a prompt x [B, L, dim]; returns (y [B, L, dim], state after the last token).

        This generic form steps token by token; modules with a parallel form that yields the state override it.
        """
        state = self.init_state(x.shape[0], x.device, x.dtype)
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, dim=1), state

    @staticmethod
    def state_bytes(state: Any) -> int:
        """Bytes held by a decoding state (any nesting of tensors, tuples, lists and dicts; an object with its own
        ``state_bytes()``, such as a KV cache, says itself)."""
        if hasattr(state, "state_bytes"):
            return int(state.state_bytes())
        if isinstance(state, torch.Tensor):
            return state.numel() * state.element_size()
        if isinstance(state, dict):
            return sum(AttentionModule.state_bytes(v) for v in state.values())
        if isinstance(state, (tuple, list)):
            return sum(AttentionModule.state_bytes(v) for v in state)
        return 0

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}, backend={self.backend}"
