"""norm_example.py: the worked example of BN, GN and LN statistics, and the figure's shaded cells, against PyTorch's
layers."""
import pytest
import torch
from torch import nn

from lab.norm_example import EPS, draw_norm_groups, example_input, main, normalize, shared_stats_mask, worked_example


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


N, C, H, W, GROUPS = 3, 6, 2, 3, 2
# each norm as PyTorch's layer, without gamma and beta; BN in training mode, so it uses the batch's statistics
LAYERS = {"BN": lambda: nn.BatchNorm2d(C, eps=EPS, affine=False).train(),
          "LN": lambda: nn.GroupNorm(1, C, eps=EPS, affine=False),
          "IN": lambda: nn.GroupNorm(C, C, eps=EPS, affine=False),
          "GN": lambda: nn.GroupNorm(GROUPS, C, eps=EPS, affine=False)}


@pytest.mark.parametrize("name", LAYERS)
def test_shaded_cells_are_what_the_layer_normalizes_over(name):
    """The cells the figure shades are those whose gradient moves the layer's output at image 0, channel 0, pixel 0:
    exactly the cells its mean and variance are taken over (with affine off, each has a non-zero gradient)."""
    x = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = LAYERS[name]()(x)
    y[0, 0, 0, 0].backward()
    assert torch.equal(x.grad.reshape(N, C, H * W) != 0, shared_stats_mask(name, N, C, H * W, GROUPS))
    assert torch.allclose(normalize(x.detach(), name, GROUPS)[0], y.detach(), atol=1e-5)


def test_figure_has_four_panels_and_the_command_writes_it(tmp_path):
    assert len(draw_norm_groups().axes) == 4
    main(["--figure", str(tmp_path / "norm_groups.png")])
    assert (tmp_path / "norm_groups.png").stat().st_size > 0
