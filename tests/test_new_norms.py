"""The norms beyond BN, GN and LN (GN+WS, Batch Renormalization, FRN, EvoNorm-S0) and BN's normalization batch."""
import io
import subprocess
import sys

import pytest
import torch
from timm.layers import StdConv2d
from torch import nn

from plumbing import layers as model_module
from lab.bn_stats import folded, has_batch_norm, with_recomputed_statistics
from conftest import ROOT
from plumbing.config import Config
from plumbing.data import load_mnist
from model import WS_EPS, Net, count_parameters
from plumbing.layers import BRN_D_MAX, BRN_R_MAX, BatchRenorm2d, GhostBatchNorm2d, set_total_steps
from lab.train import build, fit
from utils import l1_weights

NEW_NORMS = ("gnws", "brn", "frn", "evo")
QUIET = {"progress": False, "log": lambda line: None}


def block_outputs(model, x):
    """The output shape of every conv and every block of `model.features` on x."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Sequential))]
    model(x)
    for hook in hooks:
        hook.remove()
    return shapes


def brn_pair(channels=3, total_steps=100, steps_done=0):
    """A BatchRenorm2d at `steps_done` of `total_steps`, and a BatchNorm2d with the same parameters and statistics."""
    torch.manual_seed(0)
    brn, bn = BatchRenorm2d(channels), nn.BatchNorm2d(channels)
    with torch.no_grad():
        for layer in (brn, bn):
            layer.weight.copy_(torch.linspace(0.5, 2.0, channels))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, channels))
    set_total_steps(brn, total_steps)
    brn.num_batches_tracked.fill_(steps_done)
    bn.num_batches_tracked.fill_(steps_done)
    return brn, bn


# ---- GN+WS ------------------------------------------------------------------------------------------------------
def test_gnws_standardizes_every_block_conv_with_explicit_padding_and_keeps_the_shapes():
    ws, gn = Net("gnws"), Net("gn")
    convs = [m for m in ws.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 and all(type(conv) is StdConv2d and conv.eps == WS_EPS for conv in convs)
    plain = [m for m in gn.features.modules() if isinstance(m, nn.Conv2d)]
    assert [conv.padding for conv in convs] == [conv.padding for conv in plain]  # not StdConv2d's 'same'
    assert type(ws.head) is nn.Conv2d
    x = torch.randn(2, 1, 28, 28)
    assert block_outputs(ws, x) == block_outputs(gn, x)
    assert ws(x).shape == (2, 10)


def test_l1_covers_the_weight_standardized_convs():
    model = Net("gnws")
    covered = {id(w) for w in l1_weights(model)}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]  # StdConv2d is an nn.Conv2d
    assert sum(isinstance(m, StdConv2d) for m in convs) == 7 and len(convs) == 8
    assert covered == {id(m.weight) for m in convs}


def test_timm_is_imported_only_for_the_norms_that_need_it():
    code = ("import sys, model; model.Net('bn'); model.Net('gn'); assert 'timm' not in sys.modules; "
            "model.Net('frn'); assert 'timm' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- saved, reloaded, trained at the recipe ----------------------------------------------------------------------
@pytest.mark.parametrize("config", [Config(norm=n) for n in NEW_NORMS] + [Config(norm="bn", bn_batch=2),
                                                                          Config(norm="brn", bn_batch=2)])
def test_state_dict_round_trip(config):
    torch.manual_seed(0)
    trained = Net.from_config(config)
    set_total_steps(trained, 4)
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.01)
    for _ in range(3):  # BRN's 3 of 4 steps: past its warm-up
        optimizer.zero_grad()
        trained(torch.randn(8, 1, 28, 28)).logsumexp(1).sum().backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    loaded = Net.from_config({"norm": config.norm, "bn_batch": config.bn_batch, "gn_groups": 4, "dropout": 0.05})
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(trained.eval()(x), loaded.eval()(x))


@pytest.mark.parametrize("norm", NEW_NORMS)
def test_each_trains_at_the_recipe_and_its_saved_weights_reload(norm, tiny_mnist, tmp_path):
    splits = load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256)
    metrics, trained = fit(Config(norm=norm, epochs=2, train_subset=256), splits, tmp_path, **QUIET)
    assert len(metrics["epochs"]) == 2 and metrics["params"] == count_parameters(trained) < 8000
    loaded = Net.from_config(metrics["config"])
    loaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    x = splits["test"][0][:16]
    assert torch.equal(loaded.eval()(x), trained.eval()(x))


def test_build_gives_brn_the_runs_optimizer_steps(tiny_mnist):
    splits = load_mnist(tiny_mnist, torch.device("cpu"))
    model, train_loader, _, _, scheduler = build(Config(norm="brn", epochs=3, batch_size=512), splits)
    layers = [m for m in model.modules() if isinstance(m, BatchRenorm2d)]
    assert len(layers) == 7 and {m.total_steps for m in layers} == {3 * len(train_loader)} == {scheduler.total_steps}


# ---- Batch Renormalization --------------------------------------------------------------------------------------
def test_brn_in_its_warm_up_is_batch_norm():
    brn, bn = brn_pair()
    for _ in range(4):  # 4 of 100 steps: within the first 5%
        x = torch.randn(6, 3, 5, 5) * 3 + 1
        assert torch.allclose(brn(x), bn(x), atol=1e-6)
    assert torch.allclose(brn.running_mean, bn.running_mean) and torch.allclose(brn.running_var, bn.running_var)
    assert brn.num_batches_tracked == bn.num_batches_tracked == 4


def test_brn_with_r_max_1_and_d_max_0_is_batch_norm_past_its_warm_up(monkeypatch):
    monkeypatch.setattr(model_module, "BRN_R_MAX", 1.0)
    monkeypatch.setattr(model_module, "BRN_D_MAX", 0.0)
    brn, bn = brn_pair(steps_done=90)
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    assert torch.allclose(brn(x), bn(x), atol=1e-6)
    assert torch.allclose(brn.running_mean, bn.running_mean) and torch.allclose(brn.running_var, bn.running_var)


def test_brn_limits_follow_the_schedule():
    brn, _ = brn_pair(total_steps=1000)
    expected = {0: (1, 0), 50: (1, 0), 150: (1 + 2 * 0.1 / 0.35, 5 * 0.1 / 0.2), 250: (1 + 2 * 0.2 / 0.35, 5),
                400: (3, 5), 1000: (3, 5), 1500: (3, 5)}
    for step, (r_max, d_max) in expected.items():
        brn.num_batches_tracked.fill_(step)
        assert [round(float(v), 6) for v in brn.limits()] == [round(r_max, 6), round(d_max, 6)], step
    assert (BRN_R_MAX, BRN_D_MAX) == (3.0, 5.0)


def by_hand(x, brn, r_max, d_max, stop_gradient=True):
    """Batch Renormalization's training output from its definition, r and d without gradient."""
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), correction=0, keepdim=True)
    sigma_b = (var + brn.eps).sqrt()
    sigma = (brn.running_var + brn.eps).sqrt().view(1, -1, 1, 1)
    r = (sigma_b / sigma).clamp(1 / r_max, r_max)
    d = ((mean - brn.running_mean.view(1, -1, 1, 1)) / sigma).clamp(-d_max, d_max)
    r, d = (r.detach(), d.detach()) if stop_gradient else (r, d)
    return ((x - mean) / sigma_b * r + d) * brn.weight.view(1, -1, 1, 1) + brn.bias.view(1, -1, 1, 1)


def test_past_its_warm_up_brn_corrects_the_batch_towards_its_running_statistics():
    brn, bn = brn_pair(steps_done=50)  # half way: r_max 3, d_max 5
    with torch.no_grad():
        for layer in (brn, bn):
            layer.running_mean.copy_(torch.tensor([0.5, -0.5, 4.0]))  # the batch's: mean ~1, variance ~9
            layer.running_var.copy_(torch.tensor([4.0, 0.25, 0.01]))  # r, d: within; r clipped; both clipped
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    expected = by_hand(x, brn, 3.0, 5.0)
    running = brn.running_mean.clone(), brn.running_var.clone()
    out = brn(x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, bn(x), atol=1e-2)
    assert torch.allclose(brn.running_mean, bn.running_mean) and torch.allclose(brn.running_var, bn.running_var)
    assert not torch.equal(brn.running_mean, running[0])  # updated as BN's, after the output used the old ones


def test_brn_gradients_reach_gamma_beta_and_the_input_but_not_through_r_and_d():
    brn, _ = brn_pair(steps_done=50)
    with torch.no_grad():  # running statistics near the batch's: r and d within their limits, not clipped
        brn.running_mean.fill_(0.8)
        brn.running_var.fill_(7.0)
    x = (torch.randn(6, 3, 5, 5) * 3 + 1).requires_grad_()
    weights = torch.randn(6, 3, 5, 5)
    grad_x = {stop: torch.autograd.grad((by_hand(x, brn, 3.0, 5.0, stop) * weights).sum(), x)[0]
              for stop in (True, False)}
    (brn(x) * weights).sum().backward()
    assert brn.weight.grad.abs().min() > 0 and brn.bias.grad.abs().min() > 0
    assert torch.allclose(x.grad, grad_x[True], atol=1e-5)
    assert not torch.allclose(x.grad, grad_x[False], atol=1e-3)  # r and d would carry gradient if not stopped


def test_brn_without_the_runs_steps_refuses_to_train_but_evaluates():
    layer = BatchRenorm2d(3)
    with pytest.raises(RuntimeError, match="set_total_steps"):
        layer(torch.randn(4, 3, 2, 2))
    layer.eval()
    x = torch.randn(4, 3, 2, 2)
    assert torch.allclose(layer(x), nn.BatchNorm2d(3).eval()(x))


def test_a_resumed_brn_keeps_its_step_count():
    torch.manual_seed(0)
    model = Net("brn", dropout=0.0)
    set_total_steps(model, 20)
    for _ in range(6):
        model(torch.randn(4, 1, 28, 28))
    resumed = Net("brn", dropout=0.0)
    set_total_steps(resumed, 20)  # as utils.build does before the checkpoint is loaded
    resumed.load_state_dict(model.state_dict())
    assert [int(m.num_batches_tracked) for m in resumed.modules() if isinstance(m, BatchRenorm2d)] == [6] * 7
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), resumed(x))  # the same step of the schedule, past the warm-up


def test_brn_is_batch_norm_to_the_bn_specific_code_and_folds_exactly():
    model = Net("brn")
    set_total_steps(model, 10)
    for _ in range(5):
        model(torch.randn(8, 1, 28, 28))
    x = torch.randn(8, 1, 28, 28)
    assert has_batch_norm(model)
    fused = folded(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert torch.allclose(fused(x), model.eval()(x), atol=1e-5)


def test_recomputed_statistics_treat_brn_as_bn():
    # bn_stats resets the running statistics, num_batches_tracked included: BRN's schedule restarts in its warm-up
    torch.manual_seed(0)
    model = Net("brn")
    set_total_steps(model, 1000)  # a warm-up of 50 steps, more than the batches below
    for _ in range(3):
        model(torch.randn(8, 1, 28, 28))
    bn = Net("bn")
    bn.load_state_dict(model.state_dict())
    batches = [torch.randn(8, 1, 28, 28) for _ in range(4)]
    recomputed = [with_recomputed_statistics(m, batches).state_dict() for m in (model, bn)]
    assert all(torch.allclose(recomputed[0][k].float(), recomputed[1][k].float(), atol=1e-6) for k in recomputed[1])


# ---- BN's normalization batch -------------------------------------------------------------------------------------
def per_slice_bn(x, sizes, channels):
    """BatchNorm2d applied to each slice of `sizes` images on its own: outputs, and each BN's running statistics."""
    layers = [nn.BatchNorm2d(channels) for _ in sizes]
    out = torch.cat([bn(part) for bn, part in zip(layers, x.split(sizes))])
    return out, layers


def test_a_normalization_batch_of_the_whole_batch_is_plain_bn():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(1)
    plain = Net("bn", dropout=0.0)
    torch.manual_seed(1)
    whole = Net("bn", dropout=0.0, bn_batch=8)
    assert torch.equal(plain(x), whole(x))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), whole.state_dict().values()))


@pytest.mark.parametrize("batch,sizes", [(8, [2, 2, 2, 2]), (7, [2, 2, 2, 1])])  # 7: the rest is a smaller slice
def test_bn_batch_2_normalizes_each_pair_by_its_own_statistics(batch, sizes):
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 5, 5) * 2 + 1
    ghost = GhostBatchNorm2d(3, bn_batch=2)
    expected, layers = per_slice_bn(x, sizes, 3)
    assert torch.allclose(ghost(x), expected, atol=1e-5)
    # once per step, the slices' BN running statistics averaged (weighted by their images)
    weights = torch.tensor(sizes, dtype=torch.float) / batch
    for name in ("running_mean", "running_var"):
        average = sum(w * getattr(bn, name) for w, bn in zip(weights, layers))
        assert torch.allclose(getattr(ghost, name), average, atol=1e-6), name
    assert ghost.num_batches_tracked == 1
    ghost.eval()  # eval: the running statistics, no slicing
    reference = nn.BatchNorm2d(3).eval()
    reference.load_state_dict(ghost.state_dict())
    assert torch.allclose(ghost(x), reference(x))


def test_brn_in_its_warm_up_with_a_normalization_batch_is_ghost_bn():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    brn, ghost = BatchRenorm2d(3, bn_batch=2), GhostBatchNorm2d(3, bn_batch=2)
    set_total_steps(brn, 100)
    assert torch.allclose(brn(x), ghost(x), atol=1e-6)
    assert torch.allclose(brn.running_var, ghost.running_var)


def test_a_normalization_batch_needs_a_batch_norm():
    for norm in ("gn", "ln", "in", "none", "gnws", "frn", "evo"):
        with pytest.raises(ValueError, match=f"bn_batch=2 with norm '{norm}'.*only with norm bn or brn"):
            Net(norm, bn_batch=2)
    with pytest.raises(ValueError, match="bn_batch=-1"):
        Net("bn", bn_batch=-1)
    assert type(Net("bn", bn_batch=4).features[0][1]) is GhostBatchNorm2d
    assert type(Net("brn", bn_batch=4).features[0][1]) is BatchRenorm2d


def test_net_from_config_reads_configs_and_old_records():
    assert Net.from_config(Config(norm="bn", bn_batch=4)).features[0][1].bn_batch == 4
    old = {"norm": "gn", "gn_groups": 2, "dropout": 0.1, "seed": 0}  # written before bn_batch existed
    model = Net.from_config(old)
    assert model.features[0][1].num_groups == 2 and model.features[5].p == 0.1
