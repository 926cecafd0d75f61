"""The EA op: ``ea_attention`` (any backend, one contract) and ``ea_step`` (one recurrent step), with the checks
every backend shares (DESIGN.md §4). The backends live beside it: ``naive.py`` (the O(L²) reference),
``torch_op.py`` (the O(tLD) PyTorch path), ``cpu_fused.py`` (its fused C kernel on a CPU), ``triton_ops.py`` and
``triton_kernels.py`` (the Triton kernels and their launcher)."""
from __future__ import annotations

from typing import Any

import torch

from suite.attention.ea import cpu_fused
from suite.attention.ea.cpu_fused import ea_fused
from suite.attention.ea.naive import ea_naive, ea_naive_state
from suite.attention.ea.torch_op import ea_step_torch, ea_torch, empty_state

BACKENDS = ("auto", "torch", "triton", "naive")

__all__ = ["BACKENDS", "ea_attention", "ea_step", "empty_state", "path_used", "resolve_backend"]


def check_order(order: Any) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order < 0 or order % 2:
        raise ValueError(f"order must be a non-negative even integer (0, 2, 4, ...), got {order!r}")


def _check_state(state: torch.Tensor, B: int, H: int, D: int, order: int, name: str) -> None:
    expected = (B, H, 2, order + 1, D)
    if not isinstance(state, torch.Tensor) or tuple(state.shape) != expected:
        got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        raise ValueError(f"{name} must have shape [B, H, 2, order+1, D] = {list(expected)}, got {got}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run for tensors on ``device`` ('auto' -> triton on CUDA, torch elsewhere)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    return backend


def path_used(backend: str, device: torch.device | torch.Tensor) -> str:
    """What runs for a resolved ``backend`` on ``device``: the backend's name, except that the torch backend says
    which of its paths runs (cpu_fused.FUSED, the fused CPU kernel, or cpu_fused.UNFUSED, the op-by-op path)."""
    return cpu_fused.path_name(device) if backend == "torch" else backend


def ea_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: int = 6, causal: bool = False,
                 key_padding_mask: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                 output_final_state: bool = False, backend: str = "auto"):
    """Element-wise attention of q, k, v [B, L, H, D] (any float dtype; fp32 math) -> o like v.

    key_padding_mask: bool [B, L], True keeps the key. initial_state / output_final_state: causal only;
    the state is [B, H, 2, order+1, D] fp32, so two calls chained through it equal one call.
    Returns o, or (o, final_state) when output_final_state. A query with no usable key outputs 0.

    Bad numbers, alike on every backend: a NaN or inf in q, k or v at a usable position gives NaN in the
    outputs (and channels) it reaches, never a silent finite number; whatever a masked-out key or value holds
    never reaches any output. L = 0 returns an empty output.
    """
    check_order(order)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [B, L, H, D], got shape {list(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k and v must have the same shape, got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    B, L, H, D = q.shape
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool \
                or tuple(key_padding_mask.shape) != (B, L):
            got = (f"{key_padding_mask.dtype} {list(key_padding_mask.shape)}"
                   if isinstance(key_padding_mask, torch.Tensor) else type(key_padding_mask).__name__)
            raise ValueError(f"key_padding_mask must be a bool tensor of shape [B, L] = [{B}, {L}], got {got}")
        key_padding_mask = key_padding_mask.to(q.device)
    if not causal and (initial_state is not None or output_final_state):
        raise ValueError("initial_state and output_final_state apply to causal=True only")
    if initial_state is not None:
        _check_state(initial_state, B, H, D, order, "initial_state")
        if initial_state.requires_grad and torch.is_grad_enabled():
            raise ValueError("gradients through initial_state are not supported; pass initial_state.detach()")
    backend = resolve_backend(backend, q.device)
    state: torch.Tensor | None  # the final state (None where a path builds none)
    if L == 0:  # nothing to attend: an empty output (and the state passes through unchanged)
        state = initial_state.float() if initial_state is not None else empty_state(B, H, D, order, q.device)
        return (v.new_empty(v.shape), state) if output_final_state else v.new_empty(v.shape)
    if key_padding_mask is not None and not bool(key_padding_mask.all()):
        # a masked-out key never influences the output, whatever it holds (NaN, inf): every backend sees zeros
        keep = key_padding_mask[:, :, None, None]
        k, v = torch.where(keep, k, torch.zeros_like(k)), torch.where(keep, v, torch.zeros_like(v))

    if backend == "naive":
        o = ea_naive(q, k, v, order, causal, key_padding_mask, initial_state).to(v.dtype)
        state = ea_naive_state(k, v, order, key_padding_mask, initial_state) if output_final_state else None
    elif backend == "torch":
        torch_path = ea_fused if cpu_fused.usable(q) else ea_torch
        o, state = torch_path(q, k, v, order, causal, key_padding_mask, initial_state)
    else:
        if q.device.type != "cuda":
            from suite.attention.ea.triton_ops import interpreting

            if not interpreting():
                raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 on a CPU)")
        from suite.attention.ea.triton_ops import ea_triton

        o, state = ea_triton(q, k, v, order, causal, key_padding_mask, initial_state, output_final_state)
    return (o, state) if output_final_state else o


def ea_step(q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, state: torch.Tensor | None,
            order: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: q_t, k_t, v_t [B, H, D]; state [B, H, 2, order+1, D] fp32 or None (empty).

    Returns (o_t [B, H, D] like v_t, new state). Stepping through a sequence equals the causal op.
    """
    check_order(order)
    for name, t in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D tensor [B, H, D], got {getattr(t, 'shape', type(t).__name__)}")
    if not (q_t.shape == k_t.shape == v_t.shape):
        raise ValueError(f"q_t, k_t and v_t must have the same shape, got {list(q_t.shape)}, "
                         f"{list(k_t.shape)}, {list(v_t.shape)}")
    B, H, D = q_t.shape
    if state is None:
        state = empty_state(B, H, D, order, q_t.device)
    _check_state(state, B, H, D, order, "state")
    return ea_step_torch(q_t, k_t, v_t, state, order)
