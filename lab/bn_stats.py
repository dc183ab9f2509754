"""BatchNorm with statistics other than its running averages: each batch's own, or recomputed ones.

Every function returns a copy; the model passed in, and its running statistics, stay as they were.
Used by the batch-size sweep (BN's train/test gap) and the shift study (statistics of shifted images).
"""
import copy

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval
import torch.nn as nn

from plumbing.data import DeviceLoader, eval_batch_size
from utils import evaluate

PRECISE_IMAGES, PRECISE_BATCH = 10_000, 500  # BN statistics recomputed over this many training images


def has_batch_norm(model):
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def with_batch_statistics(model):
    """A copy of `model` whose BatchNorm layers normalize with each batch's own statistics, even in eval mode."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # no running statistics: BN falls back on the batch's
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    return model


@torch.no_grad()
def with_recomputed_statistics(model, batches):
    """A copy of `model` whose BN running statistics are a plain average over `batches` of images.

    Each batch's mean and variance are averaged with equal weight (momentum=None), as in
    Wu & Johnson (2021), "precise BN"; dropout stays off, as at test time. The images need no labels.
    """
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    for x in batches:
        model(x)
    return model.eval()


def with_precise_statistics(model, images, labels, degrees, shift, seed=0):
    """Running statistics recomputed after training over PRECISE_IMAGES augmented training images."""
    loader = DeviceLoader(images, labels, PRECISE_BATCH, shuffle=True, degrees=degrees, shift=shift, seed=seed)
    return with_recomputed_statistics(model, (x for _, (x, _) in zip(range(PRECISE_IMAGES // PRECISE_BATCH), loader)))


def evaluate_with_batch_statistics(model, images, labels, batch_size):
    """evaluate() with each test batch normalized by its own statistics: batches of `batch_size`, fixed random order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).to(labels.device)
    return evaluate(with_batch_statistics(model), DeviceLoader(images[order], labels[order], batch_size))


def evaluate_adapted(model, images, labels, batch_size=PRECISE_BATCH):
    """evaluate() after BN's statistics were re-estimated on `images` themselves (Schneider et al., 2020).

    The labels are used only to score: the statistics need a set of unlabeled test images, here
    all of them, in batches of `batch_size` in their given order.
    """
    adapted = with_recomputed_statistics(model, (images[i:i + batch_size] for i in range(0, len(images), batch_size)))
    return evaluate(adapted, DeviceLoader(images, labels, eval_batch_size(images.device)))


def bn_statistics_metrics(model, splits, config):
    """Test loss and accuracy of a BN model with batch statistics and with recomputed running statistics.

    Batch statistics: test batches of the training batch size, drawn in a fixed random order, as
    in training. Returns {} for a model without BatchNorm (a hook for `utils.fit`'s final_metrics).
    """
    if not has_batch_norm(model):
        return {}
    test_x, test_y = splits["test"]
    batch = evaluate_with_batch_statistics(model, test_x, test_y, config.batch_size)
    precise_model = with_precise_statistics(model, *splits["train"], config.degrees, config.shift, config.seed)
    precise = evaluate(precise_model, DeviceLoader(test_x, test_y, eval_batch_size(test_y.device)))
    return {"test_loss_batch_stats": batch["loss"], "test_acc_batch_stats": batch["acc"],
            "test_loss_precise_stats": precise["loss"], "test_acc_precise_stats": precise["acc"]}


@torch.no_grad()
def folded(model):
    """A copy of `model` in eval mode with every BatchNorm folded into the conv before it.

    BN at test time is a fixed per-channel affine map, y = (x - mean) / sqrt(var + eps) * gamma + beta,
    so conv followed by BN is one conv with scaled weights and a bias (torch's
    `fuse_conv_bn_eval`): the BN layer disappears. GN and LN can't be folded: their statistics
    depend on each image.
    """
    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                conv, bn = block[i], block[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    block[i], block[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model
