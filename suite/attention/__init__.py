"""Attentions behind one registry: ``build_attention(spec, dim, num_heads, causal)``, ``available()``.

Every attention lives in its own module here (EA and exact EA in ``ea/``), with its PyTorch reference beside
any fast kernel. The first use of a name below (``from suite.attention import build_attention``) imports every
built-in attention, so each registers itself (timm's habit); ``registry`` imports none of them. Importing the
package or one submodule loads nothing else, so a plan reads the attentions without torch
(``suite.tasks.attention_specs``).
"""
from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    """The package's names, after importing the registry, the base class and every built-in attention (which
    also makes the built-in modules attributes of the package, as an eager import did)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from suite.attention import aft, base, based, linear, mamba, registry, retention, softmax  # noqa: F401
    from suite.attention.ea import exact  # noqa: F401  (registers ea, then ea_exact)

    value = getattr(base if name == "AttentionModule" else registry, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
