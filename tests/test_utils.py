"""utils.py: the L1 term, one epoch of training, evaluation, a whole run (fit), NaN handling, the optimizer."""
import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import utils
from lab import train as lab_train
from conftest import finished_epochs, full_disk_after
from plumbing.config import SGD_MOMENTUM, Config
from plumbing.data import DeviceLoader, load_mnist
from model import Net
from lab.train import WriteFailed, build, fit, make_optimizer, set_seed
from utils import NonFiniteLoss, evaluate, l1_penalty, l1_weights, train_epoch

QUIET = {"progress": False, "log": lambda line: None}


def test_l1_covers_conv_weights_only_and_equals_hand_sum():
    model = Net("bn")
    covered = l1_weights(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(covered) == len(convs) == 8
    by_hand = 0.0
    for m in convs:
        by_hand += sum(abs(float(w)) for w in m.weight.detach().flatten())
    assert math.isclose(l1_penalty(model).item(), by_hand, rel_tol=1e-5)
    not_covered = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert not not_covered & {id(w) for w in covered}
    assert sum(w.numel() for w in covered) == 7232


def test_l1_term_enters_the_gradient_but_not_the_reported_loss():
    # one plain SGD step with and without L1 from the same weights and batch: the data gradient is the
    # same, so the weights differ by lr * lambda * sign(w) exactly where L1 applies, and nowhere else
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    lr, lam = 0.1, 0.01
    steps = {}
    for l1 in (0.0, lam):
        set_seed(0)
        model = Net("bn", dropout=0.0)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        result = train_epoch(model, DeviceLoader(x, y, 16), torch.optim.SGD(model.parameters(), lr=lr), l1_lambda=l1)
        steps[l1] = result, dict(model.named_parameters())
    (plain_result, plain), (l1_result, with_l1) = steps[0.0], steps[lam]
    assert l1_result == plain_result  # the reported loss is the cross-entropy alone
    model = Net("bn")
    covered = {id(w) for w in l1_weights(model)}
    names = {name for name, p in model.named_parameters() if id(p) in covered}
    assert len(names) == 8 and not any(name.endswith(".1.weight") for name in names)  # no norm scales
    for name in plain:
        difference = with_l1[name].detach() - plain[name].detach()
        expected = -lr * lam * before[name].sign() if name in names else torch.zeros_like(difference)
        assert torch.allclose(difference, expected, atol=1e-6), name


@pytest.mark.parametrize("norm,l1", [("bn", 0.0), ("bn", 1e-4), ("gn", 0.0), ("ln", 1e-4)])
def test_overfits_one_fixed_batch(norm, l1):
    set_seed(0)
    x, y = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    model = Net(norm, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = DeviceLoader(x, y, batch_size=32)
    first = evaluate(model, loader)["loss"]
    for _ in range(300):
        train_epoch(model, loader, optimizer, l1_lambda=l1)
    assert evaluate(model, loader)["loss"] < 0.05 * first
    assert evaluate(model, loader)["acc"] == 100.0


def test_test_loss_is_mean_over_all_samples_whatever_the_batch_size():
    set_seed(0)
    model = Net("gn")
    x, y = torch.randn(103, 1, 28, 28), torch.randint(0, 10, (103,))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model.eval()(x), y).item()
    for batch_size in (1, 10, 64, 103, 500):
        assert math.isclose(evaluate(model, DeviceLoader(x, y, batch_size))["loss"], expected, rel_tol=1e-5)


def test_loops_take_a_plain_dataloader_and_count_every_sample():
    x, y = torch.randn(103, 1, 28, 28), torch.randint(0, 10, (103,))
    plain = DataLoader(TensorDataset(x, y), batch_size=25)  # the last batch holds 3 images
    ours = DeviceLoader(x, y, batch_size=25)
    model = Net("bn").eval()
    assert evaluate(model, plain) == pytest.approx(evaluate(model, ours))
    trained = []
    for loader in (plain, ours):
        set_seed(0)
        model = Net("gn", dropout=0.0)
        result = train_epoch(model, loader, torch.optim.Adam(model.parameters()), l1_lambda=1e-4)
        trained.append((result, model.state_dict()))
    (plain_result, plain_state), (ours_result, ours_state) = trained
    assert plain_result == pytest.approx(ours_result)
    assert all(torch.allclose(plain_state[k], ours_state[k]) for k in plain_state)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, [])


def test_one_epoch_on_10k_real_images_reaches_95_percent(real_mnist):
    """Only a working pipeline (data, normalization, model, optimizer) gets here in one epoch."""
    splits = load_mnist(real_mnist, torch.device("cpu"), train_subset=10_000)
    assert splits["test"][0].shape == (10_000, 1, 28, 28)
    model, train_loader, eval_loaders, optimizer, scheduler = build(Config(norm="bn", epochs=1, lr=0.03), splits)
    train_epoch(model, train_loader, optimizer, scheduler)
    assert evaluate(model, eval_loaders["test"])["acc"] >= 95.0


def test_compile_flag_trains_the_same_model_and_saves_plain_names(tiny_mnist, tmp_path, monkeypatch):
    # The 'eager' backend runs the captured graph op for op, so only the plumbing can differ:
    # the compiled wrapper must train the very model, optimizer and checkpoint of a plain run.
    compiled, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or real_compile(m, backend="eager"))
    splits = load_mnist(tiny_mnist, torch.device("cpu"))
    config = Config(norm="bn", l1=1e-4, epochs=2)
    runs = {flag: fit(replace(config, compile=flag), splits, tmp_path / str(flag), **QUIET) for flag in (False, True)}
    assert [type(m) for m in compiled] == [Net]
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in runs[flag][0]["epochs"]]
             for flag in (False, True)]
    assert strip[0] == strip[1]
    plain, with_compile = (torch.load(tmp_path / str(flag) / "model.pt") for flag in (False, True))
    assert plain.keys() == with_compile.keys()
    assert all(torch.equal(plain[k], with_compile[k]) for k in plain)


# ---- the optimizer ---------------------------------------------------------------------------------
def test_optimizer_choice():
    params = list(Net("bn").parameters())
    adam = make_optimizer(Config(lr=0.02, weight_decay=1e-4), params)
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["lr"] == 0.02 and adam.defaults["weight_decay"] == 1e-4
    sgd = make_optimizer(Config(optimizer="sgd", lr=0.5), params)
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["momentum"] == SGD_MOMENTUM and sgd.defaults["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="valid values are adam, sgd"):
        make_optimizer(Config(optimizer="rmsprop"), params)


def test_build_uses_the_configs_optimizer_under_the_one_cycle_schedule(tiny_mnist):
    splits = load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256)
    _, train_loader, _, optimizer, scheduler = build(Config(optimizer="sgd", lr=0.5, epochs=2), splits)
    assert type(optimizer) is torch.optim.SGD
    assert type(scheduler) is torch.optim.lr_scheduler.OneCycleLR
    assert scheduler.total_steps == 2 * len(train_loader) == 2 * (256 // 64)
    assert max(group["max_lr"] for group in optimizer.param_groups) == 0.5


# ---- fit ---------------------------------------------------------------------------------------------
def test_fit_adds_final_metrics_to_the_last_epoch_before_the_last_write(tiny_mnist, tmp_path):
    splits = load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256)
    calls = []

    def final_metrics(model, splits_, config):
        calls.append((type(model), splits_ is splits, config.epochs))
        return {"extra_acc": 12.5}

    metrics, model = fit(Config(epochs=2, train_subset=256), splits, tmp_path, final_metrics=final_metrics, **QUIET)
    assert calls == [(Net, True, 2)]
    assert "extra_acc" not in metrics["epochs"][0] and metrics["epochs"][-1]["extra_acc"] == 12.5
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]["extra_acc"] == 12.5
    assert (tmp_path / "model.pt").exists() and isinstance(model, Net)


def test_fit_with_sgd_trains_and_records_the_optimizer(tiny_mnist, tmp_path):
    splits = load_mnist(tiny_mnist, torch.device("cpu"))
    metrics, _ = fit(Config(optimizer="sgd", lr=0.05, epochs=2), splits, tmp_path, **QUIET)
    assert metrics["config"]["optimizer"] == "sgd"
    assert metrics["epochs"][-1]["test_acc"] > 50  # the synthetic classes are easy to learn


# ---- NaN and a full disk: the good epochs are kept --------------------------------------------------
def test_non_finite_loss_keeps_the_good_epochs(tiny_mnist, tmp_path, monkeypatch):
    splits = load_mnist(tiny_mnist, torch.device("cpu"))
    calls = []

    def train_that_breaks_in_epoch_2(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return train_epoch(model, *args, **kwargs)

    monkeypatch.setattr(lab_train, "train_epoch", train_that_breaks_in_epoch_2)
    with pytest.raises(NonFiniteLoss, match="BN epoch 2, step 1") as stopped:
        fit(Config(epochs=3), splits, tmp_path, **QUIET)
    assert (stopped.value.epoch, stopped.value.step, stopped.value.run_dir) == (2, 1, tmp_path)
    assert finished_epochs(tmp_path) == 1
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len(state["metrics"]["epochs"]) == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_non_finite_loss_names_its_step():
    model = Net("bn")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    x, y = torch.randn(20, 1, 28, 28), torch.arange(20) % 10
    with pytest.raises(NonFiniteLoss, match="step 1: the loss is nan") as stopped:
        train_epoch(model, DeviceLoader(x, y, 4), torch.optim.Adam(model.parameters()))
    assert stopped.value.step == 1
    with pytest.raises(NonFiniteLoss) as stopped:  # a check every 5 steps still names the step it saw
        train_epoch(model, DeviceLoader(x, y, 4), torch.optim.Adam(model.parameters()), check_every=5)
    assert stopped.value.step == 5


def test_stop_request_interrupts_at_the_next_check():
    model = Net("gn")
    x, y = torch.randn(20, 1, 28, 28), torch.arange(20) % 10
    with pytest.raises(utils.Interrupted) as stopped:
        train_epoch(model, DeviceLoader(x, y, 4), torch.optim.Adam(model.parameters()), should_stop=lambda: True,
                    check_every=2)
    assert stopped.value.step == 2


def test_full_disk_during_a_checkpoint_keeps_the_last_good_epoch(tiny_mnist, tmp_path, monkeypatch):
    splits = load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256)
    full_disk_after(monkeypatch, good_writes=2)  # epoch 1: checkpoint.pt and metrics.json
    with pytest.raises(WriteFailed, match=r"BN epoch 2: could not write .*checkpoint.pt: No space left on device"):
        fit(Config(epochs=3, train_subset=256), splits, tmp_path, **QUIET)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert finished_epochs(tmp_path) == 1
    assert len(torch.load(tmp_path / "checkpoint.pt", weights_only=False)["metrics"]["epochs"]) == 1
    monkeypatch.undo()
    metrics, _ = fit(Config(epochs=3, train_subset=256), splits, tmp_path, **QUIET)
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
