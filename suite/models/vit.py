"""Vision Transformers (timm) with a registry attention.

A ViT cuts an image of side ``image_size`` into square patches of side ``patch_size`` and adds one class
token, so its attention sees ``L = (image_size // patch_size) ** 2 + 1`` tokens. A task lists the image sizes
and patch sizes it allows; ``suite.models.config.nearest_geometry`` picks the combination whose L is nearest
the requested one (the presets and geometry live there, without torch).

``create_vit`` builds ``timm.models.vision_transformer.VisionTransformer`` with
``attn_layer=suite.attention.timm_attn_layer(spec)`` (non-causal). Shapes come from a preset
(``vit_tiny``: ViT-Ti/16, ``vit_small``: ViT-S/16, as in DeiT) or from explicit width/depth/heads.
"""
from __future__ import annotations

from typing import Literal, cast

from torch import nn

from suite.models.config import token_count


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
                             qk_norm=layer.timm_args["qk_norm"],
                             global_pool=cast(Literal["token", "avg"], pool), class_token=True,  # checked above
                             drop_rate=float(drop_rate), drop_path_rate=float(drop_path_rate), attn_layer=layer)
