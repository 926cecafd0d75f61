"""One registry for every attention: ``@register_attention`` on a module class, ``build_attention(spec)``.

A spec is ``"name"`` or ``"name:key=value,key=value"`` (e.g. ``"ea:order=2"``). Option values are parsed
as int, float, bool (true/false), None (none/null) or left as strings; the allowed keys are the keyword arguments of the
class's ``__init__`` beyond ``dim``, ``num_heads`` and ``causal``.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from suite.attention.base import AttentionModule

_FIXED_ARGS = ("self", "dim", "num_heads", "causal")


@dataclass(frozen=True)
class AttentionEntry:
    name: str
    cls: type
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default value


_REGISTRY: dict[str, AttentionEntry] = {}


def register_attention(name: str, description: str = "") -> Callable[[type[AttentionModule]], type[AttentionModule]]:
    """Class decorator: make ``cls`` buildable as ``build_attention(name, ...)``."""

    def wrap(cls: type[AttentionModule]) -> type[AttentionModule]:
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
    """Names of every registered attention, sorted (``suite.attention`` imports every built-in one)."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> AttentionEntry:
    """The registry entry of ``name``; ValueError listing the valid names (and the closest one)."""
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
        if key in options:
            raise ValueError(f"attention spec {spec!r}: option {key!r} is given twice")
        options[key] = _check_type(entry, key, _parse_value(value.strip()))
    return entry.name, options


def _check_type(entry: AttentionEntry, key: str, value: Any) -> Any:
    """``value`` if it has the type of the option's default (an int is accepted for a float); else ValueError."""
    default = entry.options[key]
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a word"
    else:
        ok, expected = True, ""
    if not ok:
        raise ValueError(f"attention {entry.name!r}: option {key}={value!r} must be {expected}")
    return float(value) if isinstance(default, float) else value


def validate_spec(spec: str) -> str:
    """The canonical spec after checking it completely, as the first job would: names, option types, and every
    check of the attention's constructor (even ``order``, a known ``backend``, positive sizes ...), by building
    one small instance. ValueError naming the problem; used before any job runs."""
    name, options = parse_spec(spec)
    try:
        _REGISTRY[name].cls(16, 2, causal=False, **options)
    except ValueError as err:
        raise ValueError(f"attention spec {spec!r}: {err}") from None
    return canonical_spec(spec)


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


#: timm's Attention arguments that a registry option of the same name carries, and their value when an
#: attention has no such option (it builds no q/k/v bias and no q/k norm)
_TIMM_OPTIONS = {"qkv_bias": False, "qk_norm": False, "proj_bias": True}


def _norm_class(norm_layer: Any) -> Any:
    """The class behind a norm_layer (a ``functools.partial`` of a class gives that class)."""
    return norm_layer.func if isinstance(norm_layer, functools.partial) else norm_layer


def _qk_norm_stand_ins() -> tuple[type, ...]:
    """The norm_layer classes a q/k-normalising attention accepts from timm in place of its own RMSNorm: timm's
    default LayerNorm and RMSNorm, torch's and timm's of each."""
    norms: list[type] = [nn.LayerNorm, nn.RMSNorm]
    try:
        from timm.layers import LayerNorm, RmsNorm
    except ImportError:  # without timm there is no timm default to accept
        return tuple(norms)
    return (*norms, LayerNorm, RmsNorm)


def timm_attn_layer(spec: str) -> type:
    """A class (not a partial) that ``timm.models.vision_transformer.VisionTransformer(attn_layer=...)`` accepts.

    timm builds ``attn_layer(dim, num_heads=..., qkv_bias=..., qk_norm=..., scale_norm=..., proj_bias=...,
    attn_drop=..., proj_drop=..., norm_layer=..., depth=..., device=..., dtype=...)`` and calls
    ``attn(x, attn_mask=None, is_causal=False)``; the class builds the non-causal registry module. Each timm
    argument is honoured or refused with a ValueError that names it:

    - ``qkv_bias``, ``qk_norm``, ``proj_bias``: set the attention's option of that name (every attention has
      ``qkv_bias`` and ``proj_bias``; ``qk_norm``: ``ea`` and ``ea_exact``, on by default, and ``softmax``,
      ``linear``, ``based``, ``retention``, off by default: the same per-head RMSNorm with a learnable gain;
      timm's default ``qk_norm=False`` turns it off, so the suite's ViT passes the value the spec builds). A
      value the spec sets explicitly must agree, and ``qk_norm=True`` for an attention without a q/k norm is
      refused. ``timm_args`` on the class holds the values the spec builds by itself.
    - ``proj_drop``: dropout on the layer's output. ``attn_drop`` > 0 and ``scale_norm=True`` are refused
      (no attention here has attention-weight dropout or a norm before its output projection).
    - ``norm_layer``: timm builds it only for qk_norm and scale_norm. With ``qk_norm=False`` it is unused, as in
      timm. With ``qk_norm=True`` the attention normalises q/k with its own ``nn.RMSNorm(head_dim)``: timm's
      default LayerNorm (which ``VisionTransformer`` hands every block), an RMSNorm (torch's or timm's) or None
      is accepted in its place (a ``functools.partial`` of one too, its arguments unused); any other norm_layer
      is refused with a ValueError that names it. ``depth``, ``device``, ``dtype``: accepted (device/dtype
      applied).
    """
    name, explicit = parse_spec(spec)
    options = get_entry(name).options
    built = {key: explicit.get(key, options.get(key, absent)) for key, absent in _TIMM_OPTIONS.items()}

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = built["qkv_bias"],
                 qk_norm: bool = built["qk_norm"], scale_norm: bool = False, proj_bias: bool = built["proj_bias"],
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_layer: Any = None, depth: int = 0,
                 device=None, dtype=None, **unknown: Any) -> None:
        nn.Module.__init__(self)
        if unknown:
            raise ValueError(f"timm_attn_layer({spec!r}): unsupported timm argument(s) {', '.join(sorted(unknown))}")
        if scale_norm:
            raise ValueError(f"timm_attn_layer({spec!r}): scale_norm=True is not supported (refused, not ignored)")
        if attn_drop:
            raise ValueError(f"timm_attn_layer({spec!r}): attn_drop={attn_drop} is not supported: the suite's "
                             "attentions have no attention-weight dropout (use proj_drop)")
        requested = {"qkv_bias": bool(qkv_bias), "qk_norm": bool(qk_norm), "proj_bias": bool(proj_bias)}
        spec_options = dict(explicit)
        for key, value in requested.items():
            if key in explicit and explicit[key] != value:
                raise ValueError(f"timm_attn_layer({spec!r}): timm asks for {key}={value} but the spec sets "
                                 f"{key}={explicit[key]}")
            if key in options:
                spec_options[key] = value
            elif value != _TIMM_OPTIONS[key]:
                raise ValueError(f"timm_attn_layer({spec!r}): {key}={value} is not supported by {name!r} "
                                 f"(it has no {key} option)")
        if requested["qk_norm"] and norm_layer is not None and _norm_class(norm_layer) not in _qk_norm_stand_ins():
            label = getattr(_norm_class(norm_layer), "__name__", repr(norm_layer))
            raise ValueError(f"timm_attn_layer({spec!r}): norm_layer={label} is not supported: {name!r} normalises q "
                             "and k with its own RMSNorm (accepted: timm's default LayerNorm, an RMSNorm or None; "
                             "or pass qk_norm=False)")
        full = name + ("" if not spec_options else ":" + ",".join(f"{k}={v}" for k, v in spec_options.items()))
        self.inner = build_attention(full, dim, num_heads, causal=False)
        self.inner.spec = canonical_spec(spec)  # records name the attention as the task asked for it
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop else nn.Identity()
        if device is not None or dtype is not None:
            self.inner.to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("timm_attn_layer modules are non-causal and take no attn_mask")
        return self.proj_drop(self.inner(x))

    safe = "".join(c if c.isalnum() else "_" for c in spec)
    return type(f"TimmAttn_{safe}", (nn.Module,), {"__init__": __init__, "forward": forward, "spec": spec,
                                                   "timm_args": dict(built)})
