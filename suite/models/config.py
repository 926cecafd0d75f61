"""The models' settings and shapes, without torch: ``LMConfig`` (``lm.DecoderLM``), ``LRAConfig`` (``lra``), and
the ViT presets with the map from a sequence length L to an (image size, patch size) geometry (``vit``).

They live apart from the models so that the families declare their hyperparameters from them (one source for
each default) and the CLI reads every declaration, and plans a night, without importing torch.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

# --- causal LM (suite.models.lm) ---

POS_EMB_KINDS = ("none", "learned")


@dataclass
class LMConfig:
    """Everything needed to rebuild a DecoderLM (stored as JSON beside a checkpoint's weights)."""

    attention: str = "softmax"  # registry spec, e.g. "ea:order=2"
    vocab_size: int = 257       # 256 bytes + <eos>
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    pos_emb: str = "none"       # "none" | "learned"
    max_seq_len: int = 1024     # rows of the learned position table (ignored for "none")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "depth", "heads", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"LMConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.dim % self.heads:
            raise ValueError(f"LMConfig.dim={self.dim} is not divisible by heads={self.heads}")
        if self.pos_emb not in POS_EMB_KINDS:
            raise ValueError(f"LMConfig.pos_emb must be one of {', '.join(POS_EMB_KINDS)}, got {self.pos_emb!r}")
        if not 0.0 <= self.dropout < 1.0 or self.mlp_ratio <= 0:
            raise ValueError(f"bad dropout {self.dropout!r} or mlp_ratio {self.mlp_ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LMConfig keys {unknown}; valid keys: {', '.join(sorted(known))}")
        return cls(**data)


# --- LRA encoder (suite.models.lra) ---

@dataclass
class LRAConfig:
    vocab_size: int
    num_classes: int
    max_len: int
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 128
    dropout: float = 0.1
    pool: str = "cls"             # cls | mean
    pos_emb: str = "learned"      # learned | sinusoidal


# --- ViT (suite.models.vit): A ViT cuts an image of side image_size into patches of side patch_size, plus one class
# token ---

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
