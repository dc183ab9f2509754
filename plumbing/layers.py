"""The normalization layers that neither torch nor timm has: BatchNorm over slices of the batch (as on several
devices without SyncBatchNorm) and Batch Renormalization. model.py builds them by name like the others.
"""
import torch
import torch.nn as nn

# Batch Renormalization's schedule, in fractions of the run's optimizer steps. The paper (Ioffe 2017) counts
# steps of a ~100k+-step run: plain BN for the first 5k, then r_max 1 -> 3 reached at 40k and d_max 0 -> 5
# reached at 25k. In steps a 351-step run would never leave BN; in fractions every run gets the same shape.
BRN_R_MAX, BRN_D_MAX = 3.0, 5.0  # the final limits: r in [1/3, 3], d in [-5, 5]
BRN_WARMUP = 0.05                # plain BN (r_max 1, d_max 0) for the first 5% of the steps
BRN_D_FULL = 0.25                # then d_max grows linearly, reaching BRN_D_MAX at 25% of the steps
BRN_R_FULL = 0.40                # and r_max, reaching BRN_R_MAX at 40%
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
                               "plumbing.layers.set_total_steps(net, steps) before training")
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
