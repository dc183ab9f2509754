"""model.py: the CNN, its normalization layers, its parameter budget."""
import re

import pytest
import torch
from timm.layers import EvoNorm2dS0, FilterResponseNormTlu2d, StdConv2d
from torch import nn

from model import NORMS, WITH_ACTIVATION, Net, count_parameters, norm_layer
from plumbing.layers import BatchRenorm2d, set_total_steps

LAYER_TYPE = {"bn": nn.BatchNorm2d, "brn": BatchRenorm2d, "gn": nn.GroupNorm, "gnws": nn.GroupNorm,
              "ln": nn.GroupNorm, "in": nn.GroupNorm, "frn": FilterResponseNormTlu2d, "evo": EvoNorm2dS0,
              "none": nn.Identity}
# conv(c w) -> norm is norm(conv(w)) in training (up to eps): the statistics, or WS's, divide the scale out.
# Not for EvoNorm-S0, whose gate sigmoid(v x) sees x's scale, nor for BRN past its warm-up, whose r and d compare
# the batch with running statistics that do not scale: "brn" here is BRN in its warm-up (plain BN)
SCALE_INVARIANT = ("bn", "brn", "gn", "gnws", "ln", "in", "frn")


def trainable(norm, **settings):
    """Net(norm) ready for training-mode calls: BRN needs the run's steps (1,000: its first 50 calls are BN's)."""
    model = Net(norm, **settings)
    set_total_steps(model, 1000)
    return model


@pytest.mark.parametrize("norm", NORMS)
def test_output_shape_and_finite(norm):
    model = trainable(norm)
    out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("norm", NORMS)
def test_every_parameter_gets_a_gradient(norm):
    model = trainable(norm)
    model(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("norm", NORMS)
def test_under_8k_parameters(norm):
    assert count_parameters(Net(norm)) < 8000


@pytest.mark.parametrize("norm", NORMS)
def test_right_normalization_layers(norm):
    model = Net(norm)
    norms = [block[1] for block in model.features if isinstance(block, nn.Sequential)]
    assert len(norms) == 7
    assert all(type(m) is LAYER_TYPE[norm] for m in norms)
    convs = [block[0] for block in model.features if isinstance(block, nn.Sequential)]
    assert all((conv.bias is not None) == (norm == "none") for conv in convs)  # a bias only where no norm follows
    assert all(type(conv) is (StdConv2d if norm == "gnws" else nn.Conv2d) for conv in convs)
    assert type(model.head) is nn.Conv2d
    blocks = [block for block in model.features if isinstance(block, nn.Sequential)]
    assert all(len(block) == 2 if norm in WITH_ACTIVATION else type(block[2]) is nn.ReLU for block in blocks)
    if norm == "in":  # one channel per group, per-channel affine
        assert all(m.num_groups == m.num_channels and m.weight.shape == (m.num_channels,) for m in norms)
    if norm == "ln":  # one group: statistics over (C, H, W) of each sample, per-channel affine
        assert all(m.num_groups == 1 and m.weight.shape == (m.num_channels,) for m in norms)
    if norm in ("gn", "gnws"):
        assert all(m.num_groups == 4 for m in norms)
    if norm == "evo":  # timm's default 32 groups divide none of the widths 8, 12, 16
        assert all(m.groups == 4 for m in norms)


def test_ln_is_layer_norm_over_chw_with_channel_affine():
    layer = norm_layer("ln", 4)
    x = torch.randn(2, 4, 3, 3)
    expected = nn.functional.layer_norm(x, (4, 3, 3), eps=layer.eps)
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_parameter_counts():
    # each normalized conv has a scale and shift per channel (2 x 84) and no bias; without a norm, a bias (84);
    # FRN and EvoNorm-S0 have a third parameter per channel (TLU's tau, the gate's v): 84 more
    counts = {norm: count_parameters(Net(norm)) for norm in NORMS}
    assert counts == {"bn": 7410, "brn": 7410, "gn": 7410, "gnws": 7410, "ln": 7410, "in": 7410,
                      "frn": 7410 + 84, "evo": 7410 + 84, "none": 7410 - 84}
    assert count_parameters(Net("gn", gn_groups=2)) == 7410


def test_in_is_instance_norm_with_channel_affine():
    layer = norm_layer("in", 4)
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(layer(x), nn.functional.instance_norm(x, eps=layer.eps), atol=1e-5)


def normalized_convs(model):
    return [block[0] for block in model.features if isinstance(block, nn.Sequential)]


def scaled(model, conv, c):
    with torch.no_grad():
        conv.weight.mul_(c)
    return model


@pytest.mark.parametrize("norm", SCALE_INVARIANT)
@pytest.mark.parametrize("c", [0.5, 3.0])
def test_a_norm_makes_its_conv_blind_to_the_scale_of_its_weights(norm, c):
    # why L1 on these weights cannot shrink what the network computes: conv(c w) -> norm gives norm(conv(w)),
    # up to eps (BN with the batch's statistics: its running statistics would have to scale with them).
    # eps is made tiny here: torch's 1e-5 against IN's small per-channel variances at 7x7 moves the logits
    # by about 2e-4 relative, which is eps at work, not a scale the network sees
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    model = trainable(norm, dropout=0.0).train()  # train(): BN normalizes with the batch's statistics
    for layer in model.modules():
        if hasattr(layer, "eps"):
            layer.eps = 1e-10
    with torch.no_grad():
        reference = model(x)
        for i, conv in enumerate(normalized_convs(model)):
            changed = scaled(model, conv, c)(x)
            scaled(model, conv, 1 / c)
            assert torch.allclose(changed, reference, rtol=1e-4, atol=1e-4 * reference.abs().max()), (norm, i)
        head = scaled(model, model.head, c)(x)
    assert not torch.allclose(head, reference, rtol=1e-2)  # the head, which no norm follows, is scaled


@pytest.mark.parametrize("c", [0.5, 3.0])
def test_without_a_norm_the_scale_of_a_conv_changes_the_output(c):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    model = Net("none", dropout=0.0).eval()
    with torch.no_grad():
        reference = model(x)
        assert not torch.allclose(scaled(model, normalized_convs(model)[0], c)(x), reference, rtol=1e-2)


def test_unknown_norm_names_valid_values():
    with pytest.raises(ValueError, match=re.escape(", ".join(NORMS))):
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

