"""model.py: the CNN, its normalization layers, its parameter budget."""
import pytest
import torch
from torch import nn

from model import NORMS, Net, count_parameters, norm_layer

LAYER_TYPE = {"bn": nn.BatchNorm2d, "gn": nn.GroupNorm, "ln": nn.GroupNorm}


@pytest.mark.parametrize("norm", NORMS)
def test_output_shape_and_finite(norm):
    model = Net(norm)
    out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("norm", NORMS)
def test_every_parameter_gets_a_gradient(norm):
    model = Net(norm)
    model(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("norm", NORMS)
def test_under_8k_parameters(norm):
    assert count_parameters(Net(norm)) < 8000


@pytest.mark.parametrize("norm", NORMS)
def test_right_normalization_layers(norm):
    model = Net(norm)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))]
    assert len(norms) == 7
    assert all(type(m) is LAYER_TYPE[norm] for m in norms)
    if norm == "ln":  # one group: statistics over (C, H, W) of each sample, per-channel affine
        assert all(m.num_groups == 1 and m.weight.shape == (m.num_channels,) for m in norms)
    if norm == "gn":
        assert all(m.num_groups == 4 for m in norms)


def test_ln_is_layer_norm_over_chw_with_channel_affine():
    layer = norm_layer("ln", 4)
    x = torch.randn(2, 4, 3, 3)
    expected = nn.functional.layer_norm(x, (4, 3, 3), eps=layer.eps)
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_unknown_norm_names_valid_values():
    with pytest.raises(ValueError, match="bn, gn, ln"):
        Net("xx")


def test_gn_groups_must_divide_widths():
    with pytest.raises(ValueError, match="gn_groups=3"):
        Net("gn", gn_groups=3)


def test_layernorm_over_chw_would_blow_the_budget():
    """The README's counts: 7,410 with GroupNorm(1, C); 53,994 with nn.LayerNorm([C, H, W])."""
    model = Net("ln")
    sizes = iter([26, 24, 22, 11, 9, 7, 7])  # output size of each normalized conv
    for block in model.features:
        if isinstance(block, nn.Sequential):
            size = next(sizes)
            block[1] = nn.LayerNorm([block[1].num_channels, size, size])
    assert count_parameters(Net("ln")) == 7410
    assert count_parameters(model) == 53994
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)

