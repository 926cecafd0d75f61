"""Vision Transformers (timm) with a registry attention, and the map from a sequence length L to a geometry.

A ViT cuts an image of side ``image_size`` into square patches of side ``patch_size`` and adds one class
token, so its attention sees ``L = (image_size // patch_size) ** 2 + 1`` tokens. A task lists the image sizes
and patch sizes it allows; ``nearest_geometry`` picks the combination whose L is nearest the requested one.

``create_vit`` builds ``timm.models.vision_transformer.VisionTransformer`` with
``attn_layer=suite.attention.timm_attn_layer(spec)`` (non-causal). Shapes come from a preset
(``vit_tiny``: ViT-Ti/16, ``vit_small``: ViT-S/16, as in DeiT) or from explicit width/depth/heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn

#: DeiT / timm shapes (embed_dim, depth, num_heads); mlp_ratio 4 and qkv_bias True in both
PRESETS: dict[str, dict[str, int]] = {
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
}


def token_count(image_size: int, patch_size: int) -> int:
    """Tokens the attention sees: (image_size / patch_size)^2 patches + 1 class token."""
    if image_size <= 0 or patch_size <= 0 or image_size % patch_size:
        raise ValueError(f"patch size {patch_size} does not tile image size {image_size}")
    return (image_size // patch_size) ** 2 + 1


@dataclass(frozen=True)
class Geometry:
    """One valid (image size, patch size) combination and its token count L (pixels, pixels, tokens)."""

    image_size: int
    patch_size: int

    @property
    def seq_len(self) -> int:
        return token_count(self.image_size, self.patch_size)


def valid_geometries(image_sizes: Iterable[int], patch_sizes: Iterable[int]) -> list[Geometry]:
    """Every (image, patch) pair whose patch tiles the image, ordered by L then image size."""
    out = {Geometry(int(i), int(p)) for i in image_sizes for p in patch_sizes
           if int(i) > 0 and int(p) > 0 and int(i) % int(p) == 0}
    return sorted(out, key=lambda g: (g.seq_len, g.image_size))


def nearest_geometry(seq_len: int, image_sizes: Iterable[int], patch_sizes: Iterable[int],
                     native_size: int | None = None) -> Geometry:
    """The valid geometry whose L is nearest ``seq_len``.

    Ties (same distance in L) go to the image size nearest ``native_size`` (the least resampling), then to
    the smaller image. ValueError when no patch size tiles any image size.
    """
    image_sizes, patch_sizes = list(image_sizes), list(patch_sizes)
    candidates = valid_geometries(image_sizes, patch_sizes)
    if not candidates:
        raise ValueError(f"no patch size in {patch_sizes} tiles an image size in {image_sizes}")
    native = candidates[0].image_size if native_size is None else native_size
    return min(candidates, key=lambda g: (abs(g.seq_len - seq_len), abs(g.image_size - native), g.image_size))


def create_vit(attention: str, *, num_classes: int, in_chans: int, image_size: int, patch_size: int,
               embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
               drop_path_rate: float = 0.0, drop_rate: float = 0.0, pool: str = "token") -> nn.Module:
    """A timm VisionTransformer with ``attention`` (a registry spec) in every block.

    Input: images [B, in_chans, image_size, image_size] (float, normalised). Output: logits [B, num_classes].
    Learned position embeddings, pre-norm blocks (timm's defaults, as DeiT); q/k/v bias and q/k norm as the
    attention's spec builds them (``ea``: both; ``linear``: no bias). The class token is
    always there (it is one of the L tokens); ``pool`` ``token`` classifies from it (DeiT), ``avg`` from the
    mean of the patch tokens.
    """
    from timm.models.vision_transformer import VisionTransformer

    from suite.attention import timm_attn_layer

    token_count(image_size, patch_size)  # validates the geometry
    if pool not in ("token", "avg"):
        raise ValueError(f"unknown pool {pool!r}; valid: token, avg")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    layer = timm_attn_layer(attention)  # q/k/v bias and q/k norm as the attention's own spec builds them
    return VisionTransformer(img_size=image_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                             embed_dim=int(embed_dim), depth=int(depth), num_heads=int(num_heads),
                             mlp_ratio=float(mlp_ratio), qkv_bias=layer.timm_args["qkv_bias"],
                             qk_norm=layer.timm_args["qk_norm"], global_pool=pool, class_token=True,
                             drop_rate=float(drop_rate), drop_path_rate=float(drop_path_rate), attn_layer=layer)
