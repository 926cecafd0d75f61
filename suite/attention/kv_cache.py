"""The decoding state of the attentions that keep every key and value (softmax, exact EA): a KV cache.

Keys and values live in buffers [B, capacity, H, D] of which the first ``length`` positions are filled. A step
writes its key and value at position ``length`` in place and returns the cache one longer (sharing the
buffers), so a decoding step reads the cache once instead of copying it, as serving KV caches do; a full
buffer doubles. The cache a step started from stays valid (its positions are never rewritten), so stepping
twice from one cache (the decode benchmark times one step at a fixed length) writes the same position twice.
``state_bytes()`` counts the filled positions: what a cache of this length must hold.
"""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of ``length`` positions in buffers of ``capacity`` positions (module docstring)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, length: int | None = None,
                 spare: int | None = None) -> None:
        """From filled keys and values [B, L, H, D] (copied into buffers with ``spare`` free positions, default
        L/8 + 64), or, with ``length``, from buffers that are used as they are."""
        if length is None:
            length = k.shape[1]
            spare = max(64, length // 8) if spare is None else spare
            k, v = _grown(k, length + spare), _grown(v, length + spare)
        self._k, self._v, self.length = k, v, length

    @classmethod
    def empty(cls, batch: int, heads: int, head_dim: int, device=None, dtype=None, capacity: int = 64) -> KVCache:
        shape = (batch, capacity, heads, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                   length=0)

    @property
    def k(self) -> torch.Tensor:
        """The filled keys [B, length, H, D] (a view)."""
        return self._k[:, :self.length]

    @property
    def v(self) -> torch.Tensor:
        """The filled values [B, length, H, D] (a view)."""
        return self._v[:, :self.length]

    @property
    def capacity(self) -> int:
        return self._k.shape[1]

    def append(self, k_t: torch.Tensor, v_t: torch.Tensor) -> KVCache:
        """This cache plus one position (k_t, v_t [B, 1, H, D]); written in place, doubling a full buffer."""
        k_buf, v_buf = self._k, self._v
        if self.length == self.capacity:
            k_buf, v_buf = _grown(self.k, 2 * self.capacity + 1), _grown(self.v, 2 * self.capacity + 1)
        k_buf[:, self.length] = k_t[:, 0].to(k_buf.dtype)
        v_buf[:, self.length] = v_t[:, 0].to(v_buf.dtype)
        return KVCache(k_buf, v_buf, length=self.length + 1)

    def state_bytes(self) -> int:
        """Bytes of the filled keys and values."""
        return 2 * self.k.numel() * self._k.element_size()


def _grown(x: torch.Tensor, capacity: int) -> torch.Tensor:
    """x [B, L, ...] copied into the front of a buffer of ``capacity`` positions."""
    out = x.new_zeros((x.shape[0], capacity, *x.shape[2:]))
    out[:, :x.shape[1]] = x
    return out
