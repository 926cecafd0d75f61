"""Attentions behind one registry: ``build_attention(spec, dim, num_heads, causal)``, ``available()``.

Every attention lives in its own module here (EA and exact EA in ``ea/``), with its PyTorch reference beside
any fast kernel. Importing this package imports every built-in attention, so each registers itself (timm's
habit); ``registry`` imports none of them.
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
    validate_spec,
)

from suite.attention import aft, based, linear, mamba, retention, softmax  # noqa: E402,F401  (registration)
from suite.attention.ea import exact  # noqa: E402,F401  (registers ea, then ea_exact)

__all__ = [
    "AttentionModule",
    "available",
    "build_attention",
    "canonical_spec",
    "get_entry",
    "parse_spec",
    "register_attention",
    "timm_attn_layer",
    "validate_spec",
]
