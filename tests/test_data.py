"""data.py: loading MNIST (and saying clearly why it can't be), the splits, DeviceLoader, augmentation."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_main
from plumbing.config import Config, run_name
from plumbing.data import (MNIST_MEAN, MNIST_STD, DataError, DeviceLoader, affine_warp, ensure_mnist, load_mnist,
                           load_mnist_split, random_affine)


# ---- the splits ---------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_unpacked_files_are_read_exactly_as_torchvision_reads_them(tiny_mnist, train):
    from torchvision import datasets
    images, labels = load_mnist_split(tiny_mnist, train)
    dataset = datasets.MNIST(tiny_mnist, train=train, download=False)
    assert images.dtype == dataset.data.dtype and labels.dtype == dataset.targets.dtype
    assert torch.equal(images, dataset.data) and torch.equal(labels, dataset.targets)


def test_checking_and_loading_unpacked_mnist_import_no_torchvision(tiny_mnist):
    code = (f"import sys, torch\nfrom plumbing import data\ndata.ensure_mnist({str(tiny_mnist)!r})\n"
            f"data.load_mnist({str(tiny_mnist)!r}, torch.device('cpu'))\nassert 'torchvision' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_splits_on_the_device_normalized(tiny_mnist):
    splits = load_mnist(tiny_mnist, torch.device("cpu"))
    assert set(splits) == {"train", "test"}
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    assert train_x.shape == (2048, 1, 28, 28) and test_x.shape == (512, 1, 28, 28)
    assert train_x.dtype == torch.float32 and train_y.dtype == test_y.dtype == torch.int64
    assert train_x.min().item() == pytest.approx((0 - MNIST_MEAN) / MNIST_STD)
    assert train_x.max().item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD)


def test_validation_split_is_held_out_of_training_by_a_fixed_permutation(tiny_mnist):
    cpu = torch.device("cpu")
    a, b = load_mnist(tiny_mnist, cpu, val_split=500), load_mnist(tiny_mnist, cpu, val_split=500, train_subset=100)
    assert len(a["val"][1]) == 500 and len(a["train"][1]) == 2048 - 500
    assert torch.equal(a["val"][0], b["val"][0])  # the same images whatever else is asked
    assert torch.equal(a["train"][0][:100], b["train"][0]) and len(b["train"][1]) == 100
    with pytest.raises(DataError, match="--val-split must be between 1 and 2047"):
        load_mnist(tiny_mnist, cpu, val_split=2048)


# ---- DeviceLoader and augmentation ----------------------------------------------------------------
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


def test_affine_warp_moves_each_image_by_its_offset_on_the_background():
    x = torch.full((2, 1, 28, 28), -1.0)
    x[:, :, 12:16, 12:16] = 1.0
    moved = affine_warp(x, offset=torch.tensor([[3.0, 0.0], [0.0, -2.0]]), background=-1.0)  # right 3; up 2
    assert torch.allclose(moved[0, :, 12:16, 15:19], torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(moved[1, :, 10:14, 12:16], torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(moved.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-3)  # the whole square, no grey border


# ---- MNIST that can't be loaded: a clear message, and nothing written ----------------------------
def corrupted_copy(tiny_mnist, tmp_path, name, change):
    root = tmp_path / "data"
    shutil.copytree(tiny_mnist, root)
    path = root / "MNIST" / "raw" / name
    path.write_bytes(change(path.read_bytes()))
    return root, path


CORRUPTIONS = [
    ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2], "truncated or corrupt"),
    ("t10k-labels-idx1-ubyte", lambda b: b[:-1], "truncated or corrupt"),
    ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x09\x99" + b[4:], "magic number is 2457, expected 2049"),
]


@pytest.mark.parametrize("name,change,message", CORRUPTIONS)
def test_corrupt_raw_file_is_named(name, change, message, tiny_mnist, tmp_path):
    root, path = corrupted_copy(tiny_mnist, tmp_path, name, change)
    result = run_main("--data-dir", root, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and message in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name,change,message", CORRUPTIONS)
def test_ensure_mnist_checks_both_splits(name, change, message, tiny_mnist, tmp_path):
    ensure_mnist(tiny_mnist)  # complete: nothing to say
    root, path = corrupted_copy(tiny_mnist, tmp_path, name, change)
    with pytest.raises(DataError, match=message) as error:
        ensure_mnist(root)
    assert str(path) in str(error.value)


def test_missing_data_and_no_network_says_where_files_go(tmp_path):
    result = run_main("--data-dir", tmp_path / "empty", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train-images-idx3-ubyte.gz" in result.stderr
    assert str(tmp_path / "empty" / "MNIST" / "raw") in result.stderr
    assert not (tmp_path / "runs").exists()


def test_corrupt_archive_is_named(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not a gzip file")
    result = run_main("--data-dir", tmp_path / "data", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train-images-idx3-ubyte.gz (md5 differs" in result.stderr


def test_data_dir_from_environment_variable(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_mnist))
    result = run_main("--dry-run", "--out", tmp_path, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / run_name(Config(epochs=1, train_subset=1000))  # what --dry-run trains
    config = json.loads((run_dir / "metrics.json").read_text())["config"]
    assert config["data_dir"] == str(tiny_mnist) and config["epochs"] == 1


def test_data_missing_on_a_node_names_the_node_and_the_path(tmp_path, monkeypatch):
    import socket
    from conftest import OFFLINE
    from plumbing.data import DataError, ensure_mnist_on_this_node
    for name, value in OFFLINE.items():  # no download reaches a network
        monkeypatch.setenv(name, value)
    with pytest.raises(DataError) as error:
        ensure_mnist_on_this_node(tmp_path / "nothing")
    assert str(error.value).startswith(f"on node {socket.gethostname()}: ")
    assert str(tmp_path / "nothing" / "MNIST" / "raw") in str(error.value)


def test_data_on_a_node_is_checked_under_a_lock(tiny_mnist):
    from plumbing.data import ensure_mnist_on_this_node
    ensure_mnist_on_this_node(tiny_mnist)  # present: checked, nothing downloaded, the lock released
    ensure_mnist_on_this_node(tiny_mnist)
