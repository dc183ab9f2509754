"""One small CNN for MNIST whose normalization layers are chosen by name."""
from functools import partial

import torch
import torch.nn as nn

from plumbing.config import BN_BATCH_NORMS, GN_GROUPS, NORMS, WIDTHS, config_from_record  # noqa: F401  (no torch there)

# Batch Renormalization's schedule, in fractions of the run's optimizer steps. The paper (Ioffe 2017) counts
# steps of a ~100k+-step run: plain BN for the first 5k, then r_max 1 -> 3 reached at 40k and d_max 0 -> 5
# reached at 25k. In steps a 351-step run would never leave BN; in fractions every run gets the same shape.
BRN_R_MAX, BRN_D_MAX = 3.0, 5.0  # the final limits: r in [1/3, 3], d in [-5, 5]
BRN_WARMUP = 0.05                # plain BN (r_max 1, d_max 0) for the first 5% of the steps
BRN_D_FULL = 0.25                # then d_max grows linearly, reaching BRN_D_MAX at 25% of the steps
BRN_R_FULL = 0.40                # and r_max, reaching BRN_R_MAX at 40%
WS_EPS = 1e-6                    # GN+WS: each conv filter standardized as (w - mean) / sqrt(var + eps), timm's default
TIMM_EPS = 1e-5                  # FRN's and EvoNorm-S0's eps, timm's defaults
WITH_ACTIVATION = ("frn", "evo")  # norms that carry their own non-linearity (TLU, a sigmoid gate): no ReLU after


def batch_slices(x, k):
    """x: (N, C, H, W) as (N // k, k, C, H, W) and, when k does not divide N, the rest as (1, N % k, C, H, W)."""
    cut = len(x) - len(x) % k
    return [part for part in (x[:cut].unflatten(0, (-1, k)), x[cut:].unsqueeze(0)) if part.numel()]


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that in training normalizes each slice of `bn_batch` images by its own statistics: BN on
    N / bn_batch devices without SyncBatchNorm (ghost batch norm, Hoffer et al. 2017); 0 is plain BN.

    The running statistics are updated once per step, with BN's momentum, from the slices' means and unbiased
    variances averaged over the slices (weighted by their images): the average of what each device's BN would
    track, with BN's time scale whatever the slice size (updating once per slice would make the momentum
    depend on N / bn_batch). A batch that bn_batch does not divide (a training set smaller than the batch:
    the shuffled DeviceLoader drops the last incomplete batch) has the rest as a smaller last slice.
    Eval: the running statistics, unsliced, as BN.
    """

    def __init__(self, channels, bn_batch=0):
        super().__init__(channels)
        self.bn_batch = bn_batch

    def forward(self, x):                          # x: (N, C, H, W)
        if not self.training or self.running_mean is None or len(x) <= (self.bn_batch or len(x)):
            return super().forward(x)              # eval, or one slice: BN itself
        return self.normalize_slices(x, self.bn_batch)

    def renorm(self, mean, std):
        """Batch Renormalization's r and d for slices of these statistics; plain BN corrects nothing."""
        return 1.0, 0.0

    def normalize_slices(self, x, k):
        """Each slice of k images by its own mean and variance, then r and d; the running statistics updated once."""
        outputs, variance_sum = [], 0.0
        for part in batch_slices(x, k):            # (S, k, C, H, W): S slices of k images
            mean = part.mean((1, 3, 4), keepdim=True)                  # (S, 1, C, 1, 1)
            var = part.var((1, 3, 4), correction=0, keepdim=True)
            std = (var + self.eps).sqrt()
            r, d = self.renorm(mean, std)
            outputs.append(((part - mean) / std * r + d).flatten(0, 1))
            n = part[0, :, 0].numel()              # values per slice and channel
            variance_sum = variance_sum + var.detach().sum(0).flatten() * n / (n - 1) * part.shape[1]
        self.update_running_stats(x.detach().mean((0, 2, 3)), variance_sum / len(x))
        return torch.cat(outputs) * self.weight[:, None, None] + self.bias[:, None, None]

    def update_running_stats(self, mean, var):
        """As BN: with `momentum`, or a cumulative average where momentum is None (bn_stats' recomputed statistics)."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var, factor)


class BatchRenorm2d(GhostBatchNorm2d):
    """Batch Renormalization (Ioffe 2017): BN whose training output is corrected towards its running statistics, so
    that training computes what eval will.

    Training: y = ((x - mu_B) / sigma_B * r + d) * gamma + beta, r = clip(sigma_B / sigma, 1/r_max, r_max),
    d = clip((mu_B - mu) / sigma, -d_max, d_max), with mu the running mean, sigma = sqrt(running_var + eps) and
    r, d without gradient; the running statistics are updated as BN's. r_max and d_max follow the BRN_ schedule
    over the run's steps, counted in num_batches_tracked (a buffer: checkpoints keep it) out of `total_steps`,
    which set_total_steps sets. Eval: the running statistics, as BN (it folds into its conv as BN does).
    With bn_batch, each slice is normalized and corrected by its own statistics (GhostBatchNorm2d).
    """

    def __init__(self, channels, bn_batch=0):
        super().__init__(channels, bn_batch)
        self.total_steps = None                    # the run's optimizer steps, from set_total_steps

    def forward(self, x):                          # x: (N, C, H, W)
        if not self.training or self.running_mean is None:
            return super().forward(x)
        if self.total_steps is None:
            raise RuntimeError("BatchRenorm2d's r_max/d_max schedule is in fractions of the run's steps: call "
                               "model.set_total_steps(net, steps) before training")
        return self.normalize_slices(x, self.bn_batch or len(x))

    def renorm(self, mean, std):
        """r and d within this step's limits, without gradient."""
        r_max, d_max = self.limits()
        sigma = (self.running_var + self.eps).sqrt()[:, None, None]    # (C, 1, 1)
        r = (std / sigma).clamp(1 / r_max, r_max)
        d = ((mean - self.running_mean[:, None, None]) / sigma).clamp(-d_max, d_max)
        return r.detach(), d.detach()

    def limits(self):
        """(r_max, d_max) at this step, tensors (no wait for the device): (1, 0) in the warm-up, then linear ramps."""
        done = self.num_batches_tracked / self.total_steps

        def ramp(full):
            return ((done - BRN_WARMUP) / (full - BRN_WARMUP)).clamp(0, 1)
        return 1 + (BRN_R_MAX - 1) * ramp(BRN_R_FULL), BRN_D_MAX * ramp(BRN_D_FULL)


def set_total_steps(model, steps):
    """Give every BatchRenorm2d of `model` the run's number of optimizer steps: its schedule is in fractions of it."""
    if steps < 1:
        raise ValueError(f"a run has at least one step, not {steps}")
    for m in model.modules():
        if isinstance(m, BatchRenorm2d):
            m.total_steps = steps


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
