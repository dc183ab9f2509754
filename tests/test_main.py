import json
import shutil

import pytest

from conftest import run_main

EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
ALL_FLAGS = {"norm", "epochs", "batch_size", "lr", "l1", "gn_groups", "dropout", "degrees", "shift",
             "seed", "val_split", "train_subset", "data_dir", "device"}


def test_smoke_run_writes_metrics_in_the_schema(tiny_mnist, tmp_path):
    result = run_main("--norm", "gn", "--epochs", "2", "--data-dir", tiny_mnist, "--out", tmp_path,
                      "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch  2/2" in result.stdout
    run_dir = tmp_path / "gn_seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"config", "params", "device", "torch", "cpu", "threads", "epochs"}
    assert ALL_FLAGS <= set(metrics["config"]) and metrics["config"]["norm"] == "gn"
    assert metrics["params"] < 8000 and metrics["device"] == "cpu"
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    assert all(set(row) == EPOCH_KEYS for row in metrics["epochs"])
    assert all(0 <= row["test_acc"] <= 100 for row in metrics["epochs"])
    assert metrics["epochs"][-1]["test_acc"] > 50  # the synthetic classes are easy to learn
    assert (run_dir / "model.pt").stat().st_size > 10_000


def test_help_shows_every_default(tmp_path):
    result = run_main("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--norm", "--epochs", "--l1", "--batch-size", "--lr", "--seed", "--data-dir",
                 "--device", "--out", "--dry-run"):
        assert flag in result.stdout
    assert result.stdout.count("(default:") >= 20


@pytest.mark.parametrize("args,message", [
    (["--norm", "xx"], "invalid choice: 'xx'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--l1", "-0.1"], "--l1 must be >= 0"),
    (["--norm", "gn", "--gn-groups", "3"], "--gn-groups must divide every layer width"),
])
def test_bad_flags_are_refused_before_anything_is_written(args, message, tiny_mnist, tmp_path):
    result = run_main(*args, "--data-dir", tiny_mnist, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_cuda_without_cuda_is_refused(tiny_mnist, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_main("--device", "cuda", "--data-dir", tiny_mnist, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2 and "sees no CUDA device" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_missing_data_and_no_network_says_where_files_go(tmp_path):
    result = run_main("--data-dir", tmp_path / "empty", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train-images-idx3-ubyte.gz" in result.stderr
    assert str(tmp_path / "empty" / "MNIST" / "raw") in result.stderr
    assert not (tmp_path / "runs").exists()


def corrupted_copy(tiny_mnist, tmp_path, name, change):
    root = tmp_path / "data"
    shutil.copytree(tiny_mnist, root)
    path = root / "MNIST" / "raw" / name
    path.write_bytes(change(path.read_bytes()))
    return root, path


@pytest.mark.parametrize("name,change,message", [
    ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2], "truncated or corrupt"),
    ("t10k-labels-idx1-ubyte", lambda b: b[:-1], "truncated or corrupt"),
    ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x09\x99" + b[4:], "magic number is 2457, expected 2049"),
])
def test_corrupt_raw_file_is_named(name, change, message, tiny_mnist, tmp_path):
    root, path = corrupted_copy(tiny_mnist, tmp_path, name, change)
    result = run_main("--data-dir", root, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(path) in result.stderr and message in result.stderr
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
    config = json.loads((tmp_path / "bn_seed0" / "metrics.json").read_text())["config"]
    assert config["data_dir"] == str(tiny_mnist) and config["epochs"] == 1
