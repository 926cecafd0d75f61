"""Linear attention with the elu+1 feature map, normalised (Katharopoulos et al. 2020).

    φ(x) = elu(x) + 1      o_i = φ(q_i) S_i / φ(q_i) z_i,   S_i = Σ_{j≤i} φ(k_j) v_jᵀ,  z_i = Σ_{j≤i} φ(k_j)

Non-causal: S, z sum over every usable key (two matmuls). Causal: ``causal_linear_scan``, a chunkwise form
(quadratic inside a chunk, a carried state across chunks) whose memory is O(L·C) for chunk size C; it also
serves ``based`` and ``retention`` (which adds a per-position log-decay). Decoding state: S [B, H, D, D] and
z [B, H, D], fp32.

Backends: ``torch`` (the reference above) and ``fla`` (flash-linear-attention's ``chunk_linear_attn``, causal
form on CUDA tensors). ``auto`` takes fla when it can run and records which one did in ``backend_used``.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.attention.base import AttentionModule, compute_dtype, safe_divide
from suite.attention.registry import register_attention


# -- shared helpers (also used by based and retention) ------------------------------------------------

def causal_linear_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None = None,
                       initial_state: torch.Tensor | None = None,
                       chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise causal linear attention with an optional per-position decay.

    q, k: [B, L, H, F] (already feature-mapped and scaled); v: [B, L, H, V]; log_decay: [B, L, H], ≤ 0, or None
    (no decay); initial_state: [B, H, F, V] or None. The recurrence it computes is
        S_t = exp(g_t) S_{t-1} + k_t v_tᵀ,    o_t = q_t S_t
    Returns (o [B, L, H, V] in the compute dtype, S_L [B, H, F, V]). Every exponent is ≤ 0, so nothing overflows.
    """
    B, L, H, Fd = q.shape
    dt = compute_dtype(v)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    state = (torch.zeros(B, H, Fd, v.shape[-1], device=v.device, dtype=dt)
             if initial_state is None else initial_state.to(dt))
    outs = []
    for start in range(0, L, chunk_size):
        qc, kc, vc = (t[:, start:start + chunk_size] for t in (q, k, v))
        c = qc.shape[1]
        scores = torch.einsum("bihf,bjhf->bhij", qc, kc)
        below = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
        if log_decay is None:
            scores = scores.masked_fill(~below, 0.0)
            o = torch.einsum("bhij,bjhv->bihv", scores, vc) + torch.einsum("bihf,bhfv->bihv", qc, state)
            state = state + torch.einsum("bjhf,bjhv->bhfv", kc, vc)
        else:
            G = torch.cumsum(log_decay[:, start:start + chunk_size].to(dt), dim=1)      # [B, c, H]
            Gh = G.transpose(1, 2)                                                       # [B, H, c]
            exponent = (Gh[:, :, :, None] - Gh[:, :, None, :]).masked_fill(~below, float("-inf"))
            scores = scores * torch.exp(exponent)
            o = (torch.einsum("bhij,bjhv->bihv", scores, vc)
                 + torch.einsum("bihf,bhfv->bihv", qc * torch.exp(G)[..., None], state))
            to_end = torch.exp(G[:, -1:] - G)                                            # [B, c, H]
            state = (torch.exp(G[:, -1])[:, :, None, None] * state
                     + torch.einsum("bjhf,bjhv->bhfv", kc * to_end[..., None], vc))
        outs.append(o)
    return torch.cat(outs, dim=1), state


def fla_unavailable_reason(x: torch.Tensor) -> str | None:
    """Why fla's kernels cannot run on ``x`` (None when they can)."""
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


def normalised_feature_attention(qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, causal: bool,
                                 chunk_size: int, want_state: bool = False
                                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """o_i = φ(q_i)·Σ_j φ(k_j) v_j / φ(q_i)·Σ_j φ(k_j) over all j (non-causal) or j <= i (causal).

    qf, kf: features [B, L, H, F]; v [B, L, H, D]. Returns (o [B, L, H, D] like v, {S [B, H, F, D], z [B, H, F]}
    after the last position when causal and want_state, else None). Rows with a zero denominator give 0.
    """
    dt = compute_dtype(v)
    qf, kf, vd = qf.to(dt), kf.to(dt), v.to(dt)
    if not causal:
        S = torch.einsum("bjhf,bjhv->bhfv", kf, vd)
        num = torch.einsum("bihf,bhfv->bihv", qf, S)
        den = torch.einsum("bihf,bhf->bih", qf, kf.sum(1))[..., None]
        return safe_divide(num, den).to(v.dtype), None
    ones = torch.ones_like(vd[..., :1])
    o, S_aug = causal_linear_scan(qf, kf, torch.cat([vd, ones], dim=-1), chunk_size=chunk_size)
    out = safe_divide(o[..., :-1], o[..., -1:]).to(v.dtype)
    state = {"S": S_aug[..., :-1], "z": S_aug[..., -1]} if want_state else None
    return out, state


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


# -- the module ------------------------------------------------------------------------------------------

@register_attention("linear", "linear attention, elu+1 feature map, normalised (Katharopoulos et al. 2020)")
class LinearAttention(AttentionModule):
    """Multi-head normalised linear attention; decoding state S [B, H, D, D] and z [B, H, D] (fp32)."""

    backends = ("torch", "fla")

    def __init__(self, dim: int, num_heads: int, causal: bool = False, backend: str = "auto",
                 chunk_size: int = 64, qkv_bias: bool = False) -> None:
        super().__init__(dim, num_heads, causal, backend)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., dim] -> φ(q), φ(k), v, each [..., H, D]."""
        q, k, v = self.split_heads(self.qkv(x).unflatten(-1, (3, self.dim)).movedim(-2, 0))
        return elu_feature_map(q), elu_feature_map(k), v

    def attend(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None,
               want_state: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """φ(q), φ(k), v [B, L, H, D] -> (o [B, L, H, D], state {S, z} when want_state)."""
        if key_padding_mask is not None:
            kf = kf * key_padding_mask[:, :, None, None].to(kf.dtype)
        no_kernel = None if self.causal else "fla has no non-causal linear-attention kernel (it is two matmuls in torch)"
        if wants_fast_path(self, v, no_kernel):
            return self._attend_fla(qf, kf, v, want_state)
        self.backend_used = "torch"
        return normalised_feature_attention(qf, kf, v, self.causal, self.chunk_size, want_state)

    def _attend_fla(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor,
                    want_state: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """fla's chunk kernel for the numerator; the denominator φ(q_i)·Σ_{j≤i} φ(k_j) is a cumsum here."""
        from fla.ops.linear_attn import chunk_linear_attn

        self.backend_used = "fla-chunk"
        num, S = chunk_linear_attn(q=qf, k=kf, v=v, scale=1.0, initial_state=None,
                                   output_final_state=want_state, normalize=False)
        z_run = torch.cumsum(kf.float(), dim=1)
        den = (qf.float() * z_run).sum(-1, keepdim=True)
        out = safe_divide(num.float(), den).to(v.dtype)
        state = {"S": S.float(), "z": z_run[:, -1]} if want_state else None
        return out, state

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        qf, kf, v = self._features(x)
        out, _ = self.attend(qf, kf, v, key_padding_mask)
        return self.proj(self.merge_heads(out))

    # -- decoding ------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: Any = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Empty state: S [B, H, D, D] and z [B, H, D] zeros (fp32, fp64 when dtype is fp64)."""
        self.check_step_allowed()
        dt = torch.promote_types(dtype or torch.float32, torch.float32)
        H, D = self.num_heads, self.head_dim
        return {"S": torch.zeros(batch, H, D, D, device=device, dtype=dt),
                "z": torch.zeros(batch, H, D, device=device, dtype=dt)}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, dim] -> (y_t [B, dim], state with this token's φ(k) vᵀ and φ(k) added)."""
        self.check_step_allowed()
        qf, kf, v = self._features(x_t)                                   # [B, H, D]
        dt = state["S"].dtype
        S = state["S"] + torch.einsum("bhf,bhv->bhfv", kf.to(dt), v.to(dt))
        z = state["z"] + kf.to(dt)
        num = torch.einsum("bhf,bhfv->bhv", qf.to(dt), S)
        den = (qf.to(dt) * z).sum(-1, keepdim=True)
        self.backend_used = "torch-recurrent"
        y = self.proj(self.merge_heads(safe_divide(num, den).to(x_t.dtype)))
        return y, {"S": S, "z": z}

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Parallel causal forward over a prompt x [B, L, dim] that also returns the state after it."""
        self.check_step_allowed()
        qf, kf, v = self._features(x)
        out, state = self.attend(qf, kf, v, want_state=True)
        return self.proj(self.merge_heads(out)), state
