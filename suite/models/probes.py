"""Probe models: small models without attention that check whether a data set's labels can be learned at all.

They use no attention and nothing from the suite, only torch, so a probe's result says something about the data,
not about the models under test. ``PathfinderProbeCNN`` is the one behind ``results/cpu/probes/pathfinder.md``.
The LRA probes (``run_suite.py probe TASK``, ``suite.families.lra``) take the LRA classifiers' inputs:
tokens [B, L] (long), mask [B, L] (bool, True = a real token), and for two-document tasks tokens2, mask2.

- ``BagOfTokens``: mean of token and hashed-bigram embeddings -> MLP (a bag-of-n-grams linear-ish model)
- ``GRUProbe``: a one-layer GRU read to the last real token (order-aware, tree-free)
- ``PixelProbe``: the pixels as a [B, 1, S, S] image (average-pooled to at most 32 px) -> ``PathfinderProbeCNN``
- ``OracleProbe``: a given answer function of the visible tokens (ListOps' own evaluator), one learnable scale
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class _ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (a strided 1x1 conv-BN where the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PathfinderProbeCNN(nn.Module):
    """A small ResNet for Pathfinder / Path-X images.

    Input: float [B, 1, H, W], pixel intensities scaled to [0, 1] (token / 255); any H, W (32 for Pathfinder;
    Path-X's 128 works too, or a downsampled copy). Output: logits [B, 2] (label 1 = the markers are connected).

    Layout: a 3x3 stem at full resolution, then ``len(blocks)`` stages of residual blocks; stage i has
    ``width * 2**i`` channels and halves the resolution on entry (except stage 0), so with the defaults a
    32x32 image is seen at 32, 16 and 8 px. The head is a global average and max pool, concatenated, then a
    linear layer. Defaults (width 16, blocks (2, 2, 2)): 174,578 parameters, about 26M multiply-adds per 32x32
    image; the run in ``results/cpu/probes/pathfinder.md`` trains at about 150-200 images/s on one CPU thread.
    """

    def __init__(self, width: int = 16, blocks: tuple[int, ...] = (2, 2, 2), num_classes: int = 2,
                 in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        layers, channels = [], width
        for stage, count in enumerate(blocks):
            out = width * 2 ** stage
            for i in range(count):
                layers.append(_ResidualBlock(channels, out, 2 if stage > 0 and i == 0 else 1))
                channels = out
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, in_channels, H, W] in [0, 1] -> logits [B, num_classes]."""
        h = self.stages(self.stem(x))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


def _last_real(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """h [B, L, C] at each row's last True position of mask [B, L] (position 0 for an empty row) -> [B, C]."""
    idx = (mask.long().cumsum(1) * mask.long()).argmax(1)
    return h[torch.arange(h.shape[0], device=h.device), idx]


class _PairHead(nn.Module):
    """Logits from one encoding [B, C] or, for two documents, from [u, v, u*v, |u-v|]."""

    def __init__(self, width: int, num_classes: int, dual: bool, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width * (4 if dual else 1), hidden), nn.GELU(), nn.Linear(hidden,
                                                                                                     num_classes))

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(u if v is None else torch.cat([u, v, u * v, (u - v).abs()], dim=-1))


class BagOfTokens(nn.Module):
    """Mean of token embeddings plus mean of hashed bigram embeddings over the real tokens -> MLP -> logits.

    Order is lost beyond adjacent pairs. Input: tokens [B, L] in [0, vocab_size), mask [B, L]; for two
    documents also tokens2, mask2 (then the head reads [u, v, u*v, |u-v|]). Output: logits [B, num_classes].
    """

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64, bigram_buckets: int = 4096,
                 dual: bool = False):
        super().__init__()
        self.vocab_size, self.buckets = vocab_size, bigram_buckets
        self.unigram = nn.Embedding(vocab_size, dim)
        self.bigram = nn.Embedding(bigram_buckets, dim)
        self.head = _PairHead(2 * dim, num_classes, dual)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.float()
        uni = (self.unigram(tokens) * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        pairs = (tokens[:, :-1] * self.vocab_size + tokens[:, 1:]) % self.buckets
        pm = (mask[:, :-1] & mask[:, 1:]).float()
        bi = (self.bigram(pairs) * pm[..., None]).sum(1) / pm.sum(1, keepdim=True).clamp_min(1)
        return torch.cat([uni, bi], dim=-1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, tokens2: torch.Tensor | None = None,
                mask2: torch.Tensor | None = None) -> torch.Tensor:
        u = self.encode(tokens, mask)
        if tokens2 is None:
            return self.head(u, None)
        assert mask2 is not None, "tokens2 comes with mask2"
        return self.head(u, self.encode(tokens2, mask2))


class GRUProbe(nn.Module):
    """Token embeddings -> one GRU layer -> the hidden state at the last real token -> MLP -> logits [B, classes].

    Input as ``BagOfTokens`` (real tokens first, padding after them, as every LRA loader pads)."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64, hidden: int = 128, dual: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = _PairHead(hidden, num_classes, dual)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.embed(tokens))
        return _last_real(h, mask)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, tokens2: torch.Tensor | None = None,
                mask2: torch.Tensor | None = None) -> torch.Tensor:
        u = self.encode(tokens, mask)
        if tokens2 is None:
            return self.head(u, None)
        assert mask2 is not None, "tokens2 comes with mask2"
        return self.head(u, self.encode(tokens2, mask2))


class PixelProbe(nn.Module):
    """Pixel tokens [B, S*S] (intensities 0..255) as an image [B, 1, S, S] / 255, average-pooled to at most 32 px
    (Path-X's 128 px -> 32), then ``PathfinderProbeCNN`` -> logits [B, num_classes]. The mask is ignored (every
    pixel is a real token)."""

    def __init__(self, side: int, num_classes: int, width: int = 16):
        super().__init__()
        self.side, self.pool = side, max(1, side // 32)
        self.cnn = PathfinderProbeCNN(width=width, num_classes=num_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = tokens.view(-1, 1, self.side, self.side).float() / 255.0
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.cnn(x)


class OracleProbe(nn.Module):
    """What the visible tokens determine: ``answer(ids)`` (a list of one row's real token ids -> a class or None)
    per row, as logits scale * one_hot(answer); where the answer is None (e.g. an expression cut off by L) every
    class gets the same logit: no answer, a tie that the evaluation breaks arbitrarily (about 1 in num_classes
    right). The one learnable scale only lets the training loop run; accuracy is the
    answer function's. Output: logits [B, num_classes]."""

    def __init__(self, answer: Callable[[list[int]], int | None], num_classes: int):
        super().__init__()
        self.answer, self.num_classes = answer, num_classes
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(tokens.shape[0], self.num_classes, device=tokens.device)
        for row, (ids, keep) in enumerate(zip(tokens.tolist(), mask.tolist())):
            value = self.answer([i for i, k in zip(ids, keep) if k])
            if value is not None and 0 <= value < self.num_classes:
                logits[row, value] = 1.0
        return logits * self.scale
