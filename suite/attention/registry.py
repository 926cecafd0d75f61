"""One registry for every attention: ``@register_attention`` on a module class, ``build_attention(spec)``.

A spec is ``"name"`` or ``"name:key=value,key=value"`` (e.g. ``"ea:order=2"``). Option values are parsed
as int, float, bool (true/false) or left as strings; the allowed keys are the keyword arguments of the
class's ``__init__`` beyond ``dim``, ``num_heads`` and ``causal``.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

_FIXED_ARGS = ("self", "dim", "num_heads", "causal")


@dataclass(frozen=True)
class AttentionEntry:
    name: str
    cls: type
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default value


_REGISTRY: dict[str, AttentionEntry] = {}


def register_attention(name: str, description: str = "") -> Callable[[type], type]:
    """Class decorator: make ``cls`` buildable as ``build_attention(name, ...)``."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is registered twice")
        params = inspect.signature(cls.__init__).parameters
        options = {
            p.name: p.default
            for p in params.values()
            if p.name not in _FIXED_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
        _REGISTRY[name] = AttentionEntry(name, cls, doc, options)
        cls.registry_name = name
        return cls

    return wrap


def available() -> list[str]:
    """Names of every registered attention, sorted."""
    _load_builtin_modules()
    return sorted(_REGISTRY)


def get_entry(name: str) -> AttentionEntry:
    _load_builtin_modules()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown attention {name!r}{hint}; valid names: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"ea:order=2,backend=torch"`` -> ``("ea", {"order": 2, "backend": "torch"})``, validated."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"attention spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    entry = get_entry(name.strip())
    options: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"attention spec {spec!r}: option {item!r} is not key=value")
        if key not in entry.options:
            valid = ", ".join(sorted(entry.options)) or "none"
            raise ValueError(f"attention {entry.name!r} has no option {key!r}; valid options: {valid}")
        options[key] = _parse_value(value.strip())
    return entry.name, options


def canonical_spec(spec: str) -> str:
    """A normalised spec string (sorted options), stable for record keys."""
    name, options = parse_spec(spec)
    if not options:
        return name
    return name + ":" + ",".join(f"{k}={options[k]}" for k in sorted(options))


def build_attention(spec: str, dim: int, num_heads: int, causal: bool = False) -> nn.Module:
    """Build a registered attention module; ``forward(x [B, L, dim], key_padding_mask=None) -> [B, L, dim]``."""
    name, options = parse_spec(spec)
    if dim % num_heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
    module = _REGISTRY[name].cls(dim, num_heads, causal=causal, **options)
    module.spec = canonical_spec(spec)
    return module


def timm_attn_layer(spec: str) -> type:
    """A class (not a partial) that ``timm.models.vision_transformer.VisionTransformer(attn_layer=...)`` accepts.

    timm calls ``attn_layer(dim, num_heads=..., qkv_bias=..., qk_norm=..., ..., device=..., dtype=...)`` and
    then ``attn(x, attn_mask=None, is_causal=False)``; the wrapper builds the non-causal registry module.
    """
    parse_spec(spec)  # fail early on a bad spec

    def __init__(self, dim: int, num_heads: int = 8, device=None, dtype=None, **_timm_kwargs: Any) -> None:
        nn.Module.__init__(self)
        self.inner = build_attention(spec, dim, num_heads, causal=False)
        if device is not None or dtype is not None:
            self.inner.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("timm_attn_layer modules are non-causal and take no attn_mask")
        return self.inner(x)

    safe = "".join(c if c.isalnum() else "_" for c in spec)
    return type(f"TimmAttn_{safe}", (nn.Module,), {"__init__": __init__, "forward": forward, "spec": spec})


_LOADED = False


def _load_builtin_modules() -> None:
    """Import the modules that register the built-in attentions (once, lazily, to avoid import cycles)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from suite.attention import _builtin  # noqa: F401
