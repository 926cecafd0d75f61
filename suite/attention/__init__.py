"""Attentions behind one registry: ``build_attention(spec, dim, num_heads, causal)``, ``available()``.

Every attention lives in its own module here (EA in ``ea/``), with its PyTorch reference beside any fast kernel.
"""
from suite.attention.base import AttentionModule
from suite.attention.registry import (
    available,
    build_attention,
    canonical_spec,
    get_entry,
    parse_spec,
    register_attention,
    timm_attn_layer,
)

__all__ = [
    "AttentionModule",
    "available",
    "build_attention",
    "canonical_spec",
    "get_entry",
    "parse_spec",
    "register_attention",
    "timm_attn_layer",
]
