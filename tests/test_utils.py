import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT
from data import MNIST_MEAN, MNIST_STD, DeviceLoader, load_mnist, random_affine
from model import Net
from plots import collect_misclassified
from utils import Config, build, evaluate, fit, l1_penalty, l1_weights, set_seed, train_epoch


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


def test_test_loader_is_in_order_and_unaugmented():
    x, y = torch.randn(10, 1, 28, 28), torch.arange(10)
    batches = list(DeviceLoader(x, y, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.equal(torch.cat([b[0] for b in batches]), x)


def test_train_loader_permutation_and_augmentation_follow_the_seed():
    x, y = torch.randn(100, 1, 28, 28), torch.arange(100)
    epoch = lambda seed: list(DeviceLoader(x, y, 32, shuffle=True, degrees=10, shift=2, seed=seed))  # noqa: E731
    a, b, c = epoch(0), epoch(0), epoch(1)
    assert len(a) == 3  # the last incomplete batch is dropped
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    assert sorted(torch.cat([t[1] for t in a]).tolist()) != list(range(96))  # shuffled, not in order


def test_augmentation_keeps_background_black_and_moves_pixels():
    black = (0 - MNIST_MEAN) / MNIST_STD
    x = torch.full((8, 1, 28, 28), black)
    x[:, :, 10:18, 10:18] = (1 - MNIST_MEAN) / MNIST_STD
    out = random_affine(x, 15, 3, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, :, :3, :], torch.tensor(black), atol=1e-5)  # no grey border
    assert not torch.allclose(out, x)
    assert torch.allclose(random_affine(x, 0, 0, torch.Generator()), x, atol=1e-5)


def test_collect_misclassified_returns_only_wrong_predictions():
    set_seed(0)
    model = Net("bn").eval()
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))
    found = collect_misclassified(model, DeviceLoader(x, y, 16), limit=10)
    assert len(found["true"]) == 10 and found["images"].shape == (10, 1, 28, 28)
    assert (found["true"] != found["pred"]).all()
    assert ((found["confidence"] > 0) & (found["confidence"] <= 1)).all()


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
    runs = {flag: fit(replace(config, compile=flag), splits, tmp_path / str(flag), progress=False,
                      log=lambda line: None) for flag in (False, True)}
    assert [type(m) for m in compiled] == [Net]
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in runs[flag][0]["epochs"]]
             for flag in (False, True)]
    assert strip[0] == strip[1]
    plain, with_compile = (torch.load(tmp_path / str(flag) / "model.pt") for flag in (False, True))
    assert plain.keys() == with_compile.keys()
    assert all(torch.equal(plain[k], with_compile[k]) for k in plain)


FAULTS_OF_20_EVAL_PASSES = """
import resource, sys, torch
from model import Net
from system import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("unsupported")
    sys.exit()
model, x = Net("bn").eval(), torch.randn(256, 1, 28, 28)
with torch.no_grad():
    for _ in range(3):
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        model(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_keep_freed_memory_stops_the_page_faults_of_repeated_passes():
    # a fresh process each: the allocator setting is process-wide and cannot be undone
    faults = {how: subprocess.run([sys.executable, "-c", FAULTS_OF_20_EVAL_PASSES, how], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip() for how in ("default", "keep")}
    if faults["keep"] == "unsupported":
        pytest.skip("not Linux with glibc")
    assert 20 * int(faults["keep"]) < int(faults["default"]), faults  # measured: 0 to 1,700 vs ~165,000
