import json
import signal
import time

import pytest
import torch

import utils
from conftest import finished_epochs, run_main, start_main
from data import load_mnist
from system import save_torch
from utils import Config, NonFiniteLoss, train_epoch

ARGS = ["--norm", "bn", "--l1", "1e-4", "--epochs", "6", "--device", "cpu", "--no-progress"]


def epochs_without_time(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_then_resumed_run_equals_uninterrupted_run(sig, tiny_mnist, tmp_path):
    common = [*ARGS, "--data-dir", tiny_mnist]
    whole = run_main(*common, "--out", tmp_path / "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    process = start_main(*common, "--out", tmp_path / "cut", cwd=tmp_path)
    run_dir = tmp_path / "cut" / "bn_l1_seed0"
    deadline = time.time() + 120
    while finished_epochs(run_dir) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"python main.py --resume {run_dir}" in stderr and "Traceback" not in stderr
    assert 2 <= finished_epochs(run_dir) < 6
    assert not (run_dir / "model.pt").exists()

    resumed = run_main("--resume", run_dir, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs_without_time(run_dir) == epochs_without_time(tmp_path / "whole" / "bn_l1_seed0")
    a = torch.load(run_dir / "model.pt")
    b = torch.load(tmp_path / "whole" / "bn_l1_seed0" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_finished_run_does_nothing(tiny_mnist, tmp_path):
    assert run_main("--epochs", "1", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path).returncode == 0
    before = (tmp_path / "bn_seed0" / "metrics.json").read_text()
    result = run_main("--resume", tmp_path / "bn_seed0", cwd=tmp_path)
    assert result.returncode == 0 and "nothing to resume" in result.stdout
    assert (tmp_path / "bn_seed0" / "metrics.json").read_text() == before


def test_resume_refuses_conflicting_flags(tiny_mnist, tmp_path):
    assert run_main("--epochs", "1", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path).returncode == 0
    result = run_main("--resume", tmp_path / "bn_seed0", "--lr", "0.5", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 2 and "--lr 0.5 (run has 0.01)" in result.stderr
    result = run_main("--resume", tmp_path / "missing", cwd=tmp_path)
    assert result.returncode == 2 and "no metrics.json" in result.stderr


def test_a_new_run_never_overwrites_an_old_one(tiny_mnist, tmp_path):
    for _ in range(2):
        assert run_main("--dry-run", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["bn_seed0", "bn_seed0-2"]
    assert run_main("--dry-run", "--overwrite", "--data-dir", tiny_mnist, "--out", tmp_path,
                    cwd=tmp_path).returncode == 0
    assert not (tmp_path / "bn_seed0-3").exists()


def test_absurd_lr_stops_with_a_clear_message(tiny_mnist, tmp_path):
    # Adam with a peak lr of 1e30 overflows float32 within the first epoch
    result = run_main("--lr", "1e30", "--epochs", "2", "--data-dir", tiny_mnist, "--out", tmp_path,
                      cwd=tmp_path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "non-finite loss in BN epoch 1, step" in result.stderr and "--lr" in result.stderr
    assert not (tmp_path / "bn_seed0" / "model.pt").exists()


def test_non_finite_loss_keeps_the_good_epochs(tiny_mnist, tmp_path, monkeypatch):
    splits = load_mnist(tiny_mnist, torch.device("cpu"))
    calls = []

    def train_that_breaks_in_epoch_2(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return train_epoch(model, *args, **kwargs)

    monkeypatch.setattr(utils, "train_epoch", train_that_breaks_in_epoch_2)
    with pytest.raises(NonFiniteLoss, match="BN epoch 2, step 1"):
        utils.fit(Config(epochs=3), splits, tmp_path, progress=False, log=lambda line: None)
    assert finished_epochs(tmp_path) == 1
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len(state["metrics"]["epochs"]) == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_torch({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_torch({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path)["epoch"] == 1
