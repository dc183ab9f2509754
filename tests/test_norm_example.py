"""norm_example.py: the worked example of BN, GN and LN statistics, against PyTorch's layers."""
import torch
from torch import nn

from norm_example import EPS, example_input, worked_example


def test_worked_example_matches_pytorch_layers():
    x = example_input()
    results = worked_example()
    bn = nn.BatchNorm2d(4, eps=EPS, affine=False).train()  # training mode: batch statistics
    assert torch.allclose(results["BN"][0], bn(x), atol=1e-5)
    assert torch.allclose(results["GN"][0], nn.GroupNorm(2, 4, eps=EPS, affine=False)(x), atol=1e-5)
    assert torch.allclose(results["LN"][0], nn.GroupNorm(1, 4, eps=EPS, affine=False)(x), atol=1e-5)
    assert torch.allclose(results["LN"][0], nn.functional.layer_norm(x, (4, 2, 2), eps=EPS), atol=1e-5)


def test_worked_example_statistics_by_hand():
    _, bn_mean, bn_var = worked_example()["BN"]
    assert bn_mean.tolist() == [4.5, 2.0, 2.5, 4.0]  # channel 0: (1+...+8) / 8
    assert bn_var[0].item() == 5.25                 # channel 0: mean of (v - 4.5)^2
    _, ln_mean, _ = worked_example()["LN"]
    assert ln_mean.flatten().tolist() == [46 / 16, 58 / 16]    # image 0 sums to 46, image 1 to 58
