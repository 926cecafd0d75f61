"""Probe models: small plain CNNs that check whether a data set's labels can be learned at all.

They use no attention and nothing from the suite, only torch, so a probe's result says something about the data,
not about the models under test. ``PathfinderProbeCNN`` is the one behind ``results/cpu/probes/pathfinder.md``.
"""
from __future__ import annotations

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
        self.shortcut = nn.Identity()
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
