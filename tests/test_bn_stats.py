"""bn_stats.py: BatchNorm tested with each batch's own statistics, or with recomputed running statistics."""
import pytest
import torch
from torch import nn

from lab.bn_stats import (PRECISE_IMAGES, bn_statistics_metrics, has_batch_norm, with_batch_statistics,
                      with_precise_statistics, with_recomputed_statistics)
from plumbing.config import Config
from plumbing.data import DeviceLoader
from model import Net
from lab.train import set_seed
from utils import evaluate


def running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_batch_statistics_evaluation_matches_hand_computation_and_keeps_running_stats():
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.3]))
        bn.running_mean.copy_(torch.tensor([5.0, -5.0]))
        bn.running_var.copy_(torch.tensor([9.0, 0.1]))
    model = nn.Sequential(bn).eval()
    before = running_stats(model)
    x = torch.arange(36.0).reshape(2, 2, 3, 3) ** 1.5
    mean = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)  # BN normalizes with the biased variance
    by_hand = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, 2, 1, 1) + bn.bias.view(1, 2, 1, 1)
    assert torch.allclose(with_batch_statistics(model).eval()(x), by_hand, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in running_stats(model).items())
    assert not torch.allclose(model(x), by_hand)  # the original still uses its running statistics


def test_recomputed_statistics_weigh_every_batch_equally():
    model = nn.Sequential(nn.BatchNorm2d(1)).eval()
    batches = [torch.full((4, 1, 2, 2), 1.0), torch.full((4, 1, 2, 2), 3.0), torch.full((4, 1, 2, 2), 8.0)]
    for x in batches:
        x += torch.tensor([[-1.0, 1.0], [-1.0, 1.0]])  # variance 1 within each batch
    recomputed = with_recomputed_statistics(model, batches)
    assert recomputed[0].running_mean.item() == pytest.approx(4.0)  # (1 + 3 + 8) / 3, not a moving average
    assert recomputed[0].running_var.item() == pytest.approx(16 / 15)  # each batch's unbiased variance
    assert not recomputed.training and model[0].running_mean.item() == 0.0


def test_recomputed_statistics_average_the_batches_and_keep_the_original():
    model = nn.Sequential(nn.BatchNorm2d(1)).eval()
    before = running_stats(model)
    images = torch.randn(PRECISE_IMAGES, 1, 4, 4) * 3 + 2
    precise = with_precise_statistics(model, images, torch.zeros(len(images), dtype=torch.long), 0, 0)
    assert precise[0].running_mean.item() == pytest.approx(images.mean().item(), abs=1e-4)
    assert precise[0].running_var.item() == pytest.approx(images.var().item(), rel=1e-2)
    assert all(torch.equal(before[k], v) for k, v in running_stats(model).items())


def test_bn_statistics_metrics_on_a_net_leave_its_state_untouched():
    set_seed(0)
    model = Net("bn").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    metrics = bn_statistics_metrics(model, {"train": (x, y), "test": (x, y)}, Config(batch_size=8))
    assert set(metrics) == {"test_loss_batch_stats", "test_acc_batch_stats",
                            "test_loss_precise_stats", "test_acc_precise_stats"}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert evaluate(model, DeviceLoader(x, y, 64))["loss"] != pytest.approx(metrics["test_loss_batch_stats"])


@pytest.mark.parametrize("norm", ["gn", "ln"])
def test_bn_statistics_metrics_are_empty_without_batch_norm(norm):
    model = Net(norm)
    assert not has_batch_norm(model) and has_batch_norm(Net("bn"))
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    assert bn_statistics_metrics(model, {"train": (x, y), "test": (x, y)}, Config(norm=norm)) == {}
