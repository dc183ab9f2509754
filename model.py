"""One small CNN for MNIST whose normalization layers are chosen by name."""
from functools import partial

import torch.nn as nn

from config import GN_GROUPS, NORMS, WIDTHS  # noqa: F401  (the names live in config.py, without torch)


def norm_layer(norm, channels, gn_groups=GN_GROUPS):
    """Return the normalization layer for `norm`: 'bn', 'gn', 'ln', 'in' or 'none'.

    'ln' is GroupNorm with one group: each sample is normalized over (C, H, W)
    with one scale and shift per channel, unlike nn.LayerNorm([C, H, W]) whose
    per-element affine parameters would add thousands of parameters. 'in'
    (InstanceNorm) is GroupNorm with one channel per group, with the same
    per-channel affine parameters as GN. 'none' is no layer at all (nn.Identity).
    """
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        if channels % gn_groups:
            raise ValueError(f"gn_groups={gn_groups} must divide every width {WIDTHS}")
        return nn.GroupNorm(gn_groups, channels)
    if norm == "ln":
        return nn.GroupNorm(1, channels)
    if norm == "in":
        return nn.GroupNorm(channels, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid values are {', '.join(NORMS)}")


def conv_block(c_in, c_out, norm, gn_groups, kernel_size=3, padding=0):
    """Conv -> norm -> ReLU. The conv has no bias where a norm follows (its shift replaces it), one without."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=norm == "none"),
        norm_layer(norm, c_out, gn_groups),
        nn.ReLU(inplace=True),
    )


class Net(nn.Module):
    """About 7.4k parameters; `norm` picks BatchNorm, GroupNorm, LayerNorm-style GroupNorm(1),
    InstanceNorm-style GroupNorm(C) or no normalization (7.3k: a bias per conv instead of a scale and shift)."""

    def __init__(self, norm="bn", gn_groups=GN_GROUPS, dropout=0.05):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid values are {', '.join(NORMS)}")
        w1, w2, w3, w4, w5, w6, w7 = WIDTHS
        block = partial(conv_block, norm=norm, gn_groups=gn_groups)
        self.features = nn.Sequential(
            block(1, w1),                     # 28 -> 26, receptive field 3
            block(w1, w2),                    # 26 -> 24, rf 5
            block(w2, w3),                    # 24 -> 22, rf 7
            nn.MaxPool2d(2),                  # 22 -> 11, rf 8
            block(w3, w4, kernel_size=1),     # 11 -> 11, 1x1 transition
            nn.Dropout(dropout),
            block(w4, w5),                    # 11 -> 9, rf 12
            block(w5, w6),                    # 9 -> 7, rf 16
            nn.Dropout(dropout),
            block(w6, w7, padding=1),         # 7 -> 7, rf 20
            nn.AdaptiveAvgPool2d(1),          # 7 -> 1
        )
        self.head = nn.Conv2d(w7, 10, kernel_size=1)

    def forward(self, x):                     # x: (N, 1, 28, 28)
        x = self.features(x)                  # (N, 12, 1, 1)
        return self.head(x).flatten(1)        # (N, 10) logits


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
