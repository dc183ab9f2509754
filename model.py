"""One small CNN for MNIST whose normalization layers are chosen by name."""
from functools import partial

import torch.nn as nn

from plumbing.config import BN_BATCH_NORMS, GN_GROUPS, NORMS, WIDTHS, config_from_record
from plumbing.layers import BatchRenorm2d, GhostBatchNorm2d

WS_EPS = 1e-6                    # GN+WS: each conv filter standardized as (w - mean) / sqrt(var + eps), timm's default
TIMM_EPS = 1e-5                  # FRN's and EvoNorm-S0's eps, timm's defaults
WITH_ACTIVATION = ("frn", "evo")  # norms that carry their own non-linearity (TLU, a sigmoid gate): no ReLU after


def norm_layer(norm, channels, gn_groups=GN_GROUPS, bn_batch=0):
    """Return the normalization layer for `norm`, one of NORMS.

    'ln' is GroupNorm with one group: each sample is normalized over (C, H, W)
    with one scale and shift per channel, unlike nn.LayerNorm([C, H, W]) whose
    per-element affine parameters would add thousands of parameters. 'in'
    (InstanceNorm) is GroupNorm with one channel per group, with the same
    per-channel affine parameters as GN. 'none' is no layer at all (nn.Identity).
    'gnws' is GroupNorm(GN_GROUPS), its conv weight-standardized (conv_layer);
    'frn' and 'evo' are timm's, each with its activation and a third parameter
    per channel, EvoNorm-S0 with GN_GROUPS groups (timm's 32 divide no width).
    """
    if norm == "bn":
        return GhostBatchNorm2d(channels, bn_batch) if bn_batch else nn.BatchNorm2d(channels)
    if norm == "brn":
        return BatchRenorm2d(channels, bn_batch)
    if norm == "gn":
        if channels % gn_groups:
            raise ValueError(f"gn_groups={gn_groups} must divide every width {WIDTHS}")
        return nn.GroupNorm(gn_groups, channels)
    if norm == "gnws":
        return nn.GroupNorm(GN_GROUPS, channels)
    if norm == "ln":
        return nn.GroupNorm(1, channels)
    if norm == "in":
        return nn.GroupNorm(channels, channels)
    if norm == "frn":
        from timm.layers import FilterResponseNormTlu2d  # timm only for its norms: --help, the notebook go without
        return FilterResponseNormTlu2d(channels, apply_act=True, eps=TIMM_EPS, rms=True)
    if norm == "evo":
        from timm.layers import EvoNorm2dS0
        return EvoNorm2dS0(channels, groups=GN_GROUPS, apply_act=True, eps=TIMM_EPS)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid values are {', '.join(NORMS)}")


def conv_layer(norm, c_in, c_out, kernel_size, padding):
    """The block's conv: weight-standardized for GN+WS; a bias only where no norm follows (its shift replaces it)."""
    if norm == "gnws":
        from timm.layers import StdConv2d          # its padding=None would mean 'same': always given here
        return StdConv2d(c_in, c_out, kernel_size, padding=padding, bias=False, eps=WS_EPS)
    return nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=norm == "none")


def conv_block(c_in, c_out, norm, gn_groups, bn_batch, kernel_size=3, padding=0):
    """Conv -> norm -> ReLU; conv -> norm for the norms that carry their own activation (FRN, EvoNorm-S0)."""
    layers = [conv_layer(norm, c_in, c_out, kernel_size, padding), norm_layer(norm, c_out, gn_groups, bn_batch)]
    return nn.Sequential(*layers, *([] if norm in WITH_ACTIVATION else [nn.ReLU(inplace=True)]))


class Net(nn.Module):
    """7,410 parameters with BN, BRN, GN, LN, IN or GN+WS (a scale and shift per channel); 7,494 with FRN or
    EvoNorm-S0 (a third per channel: TLU's tau, the gate's v); 7,326 without a norm (a bias per conv instead).

    `bn_batch` K > 0 ('bn', 'brn' only) normalizes each slice of K training images by its own statistics.
    """

    def __init__(self, norm="bn", gn_groups=GN_GROUPS, dropout=0.05, bn_batch=0):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid values are {', '.join(NORMS)}")
        if bn_batch < 0 or bn_batch and norm not in BN_BATCH_NORMS:
            raise ValueError(f"bn_batch={bn_batch} with norm {norm!r}: bn_batch slices BatchNorm's batch, so it "
                             f"is >= 0 and only with norm {' or '.join(BN_BATCH_NORMS)} (0: the whole batch)")
        w1, w2, w3, w4, w5, w6, w7 = WIDTHS
        block = partial(conv_block, norm=norm, gn_groups=gn_groups, bn_batch=bn_batch)
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

    @classmethod
    def from_config(cls, config):
        """The Net of a run: a Config, or a recorded config dict (fields added since it was written take defaults)."""
        config = config_from_record(config) if isinstance(config, dict) else config
        return cls(config.norm, config.gn_groups, config.dropout, config.bn_batch)

    def forward(self, x):                     # x: (N, 1, 28, 28)
        x = self.features(x)                  # (N, 12, 1, 1)
        return self.head(x).flatten(1)        # (N, 10) logits


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
