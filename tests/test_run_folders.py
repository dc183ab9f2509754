"""Nothing lost, nothing cryptic: damaged run folders, unusable output folders, full disks, two processes."""
import errno
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

import main
import system
import utils
from conftest import finished_epochs, run_main, start_main
from data import load_mnist
from system import RunInUse, new_run_dir, run_lock
from utils import Config, WriteFailed, fit

BASE = ["--norm", "bn", "--device", "cpu", "--no-progress", "--train-subset", "256"]


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupted_run(run_dir, norm, tiny_mnist):
    """A run of 3 epochs stopped after epoch 2, as Ctrl-C leaves it."""
    real, calls = utils.train_epoch, []

    def stop_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise utils.Interrupted("step 1")
        return real(*args, **kwargs)

    config = Config(norm=norm, epochs=3, train_subset=256, data_dir=str(tiny_mnist))
    utils.train_epoch = stop_in_epoch_3
    try:
        fit(config, load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256), run_dir, progress=False,
            log=lambda line: None)
    except utils.Interrupted:
        pass
    finally:
        utils.train_epoch = real


@pytest.fixture(scope="module")
def finished_run(tiny_mnist, tmp_path_factory):
    """Read-only originals: runs/bn_seed0 and runs/gn_seed0, each 2 of 3 epochs done."""
    out = tmp_path_factory.mktemp("runs")
    for norm in ("bn", "gn"):
        interrupted_run(out / f"{norm}_seed0", norm, tiny_mnist)
        assert finished_epochs(out / f"{norm}_seed0") == 2
    return out


def damaged_copy(finished_run, tmp_path, damage):
    run_dir = tmp_path / "bn_seed0"
    shutil.copytree(finished_run / "bn_seed0", run_dir)
    damage(run_dir)
    return run_dir


def truncate(name, keep=None):
    def cut(run_dir):
        data = (run_dir / name).read_bytes()
        (run_dir / name).write_bytes(data[:keep or len(data) // 2])
    return cut


def add_epoch(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["epochs"].append({**metrics["epochs"][-1], "epoch": 3})
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize("damage,message", [
    (truncate("checkpoint.pt", keep=1000), "checkpoint.pt (1,000 bytes) is truncated or corrupt; it should hold the state "
                                "after epoch 2"),
    (lambda d: (d / "checkpoint.pt").write_bytes(b""), "is truncated or corrupt"),
    (lambda d: (d / "checkpoint.pt").unlink(), "metrics.json records 2 finished epochs but"),
    (truncate("metrics.json"), "metrics.json is damaged or not from this code (JSONDecodeError"),
    (lambda d: (d / "metrics.json").write_text('{"epochs": []}'), "metrics.json is damaged or not from this code"),
    (lambda d: (d / "metrics.json").write_text('{"config": {"norm": "bn", "colour": 1}, "epochs": []}'),
     "unexpected keyword argument 'colour'"),
    (lambda d: (d / "metrics.json").unlink(), "but no metrics.json, the run's record"),
    (add_epoch, "do not belong together (the checkpoint holds 2 epochs of the same config, metrics.json 3)"),
])
def test_damaged_run_folder_is_refused_and_left_as_it_was(damage, message, finished_run, tmp_path):
    run_dir = damaged_copy(finished_run, tmp_path, damage)
    before = snapshot(run_dir)
    result = run_main("--resume", run_dir, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "Nothing in it was changed" in result.stderr or "no metrics.json" in result.stderr
    assert snapshot(run_dir) == before


def test_checkpoint_of_another_run_is_refused(finished_run, tmp_path):
    run_dir = damaged_copy(finished_run, tmp_path, lambda d: shutil.copy(finished_run / "gn_seed0" / "checkpoint.pt", d))
    before = snapshot(run_dir)
    result = run_main("--resume", run_dir, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "do not belong together (the checkpoint holds 2 epochs of another config" in result.stderr
    assert snapshot(run_dir) == before


def test_checkpoint_one_epoch_ahead_of_metrics_resumes(finished_run, tiny_mnist, tmp_path):
    # a crash between the two writes of an epoch end leaves the checkpoint one epoch ahead: that is fine
    def drop_last_epoch(run_dir):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["epochs"].pop()
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    run_dir = damaged_copy(finished_run, tmp_path, drop_last_epoch)
    result = run_main("--resume", run_dir, "--data-dir", tiny_mnist, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "holds 2 of 3 epochs; continuing" in result.stdout and "epoch  3/3" in result.stdout
    assert [row["epoch"] for row in json.loads((run_dir / "metrics.json").read_text())["epochs"]] == [1, 2, 3]


@pytest.mark.parametrize("flags,message", [
    (["--out", "a_file"], "--out a_file is a file, not a folder"),
    (["--out", "a_file/runs"], "--out a_file/runs cannot be created: a_file is a file"),
    (["--norm", "all", "--results", "a_file"], "--results a_file is a file, not a folder"),
    (["--norm", "all", "--images", "a_file/x"], "--images a_file/x cannot be created: a_file is a file"),
])
def test_unusable_output_folder_is_refused_before_training(flags, message, tiny_mnist, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = run_main(*BASE, "--epochs", "1", "--data-dir", tiny_mnist, *flags, cwd=tmp_path)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused(tiny_mnist, tmp_path):
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir(mode=0o555)
    result = run_main(*BASE, "--data-dir", tiny_mnist, "--out", locked_dir / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "is not writable" in result.stderr


def full_disk_after(monkeypatch, good_writes):
    """Make system.atomic_write's files fail with ENOSPC half-way through, after `good_writes` good ones."""
    real_open, calls = open, []

    class HalfFull:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            self.file.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def fake_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".tmp"):
            calls.append(path)
            if len(calls) > good_writes:
                return HalfFull(file)
        return file

    monkeypatch.setattr(system, "open", fake_open, raising=False)


def test_full_disk_during_a_checkpoint_keeps_the_last_good_epoch(tiny_mnist, tmp_path, monkeypatch):
    splits = load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256)
    full_disk_after(monkeypatch, good_writes=2)  # epoch 1: checkpoint.pt and metrics.json
    with pytest.raises(WriteFailed, match=r"BN epoch 2: could not write .*checkpoint.pt: No space left on device"):
        fit(Config(epochs=3, train_subset=256), splits, tmp_path, progress=False, log=lambda line: None)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert finished_epochs(tmp_path) == 1
    assert len(torch.load(tmp_path / "checkpoint.pt", weights_only=False)["metrics"]["epochs"]) == 1
    monkeypatch.undo()
    metrics, _ = fit(Config(epochs=3, train_subset=256), splits, tmp_path, progress=False, log=lambda line: None)
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]


def test_full_disk_message_from_the_command_line(tiny_mnist, tmp_path, monkeypatch, capsys):
    full_disk_after(monkeypatch, good_writes=1)  # epoch 1's checkpoint, then metrics.json fails
    code = main.main([*BASE, "--epochs", "2", "--data-dir", str(tiny_mnist), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 4 and "Traceback" not in err
    assert f"could not write {tmp_path / 'bn_seed0' / 'metrics.json'}: No space left on device" in err
    assert f"continue with: python main.py --resume {tmp_path / 'bn_seed0'}" in err
    assert not [p for p in (tmp_path / "bn_seed0").iterdir() if p.name.endswith(".tmp")]


def small_filesystem(path, size_kb):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    return path


def test_a_really_full_disk(tiny_mnist, tmp_path):
    probe = run_main(*BASE, "--epochs", "1", "--data-dir", tiny_mnist, "--out", tmp_path / "probe", cwd=tmp_path)
    checkpoint_kb = (tmp_path / "probe" / "bn_seed0" / "checkpoint.pt").stat().st_size // 1024
    disk = small_filesystem(tmp_path / "disk", checkpoint_kb * 3 // 2 + 16)  # one checkpoint fits, two don't
    try:
        result = run_main(*BASE, "--epochs", "3", "--data-dir", tiny_mnist, "--out", disk, cwd=tmp_path)
        assert result.returncode == 4 and "No space left on device" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        run_dir = disk / "bn_seed0"
        assert finished_epochs(run_dir) == 1 and not list(run_dir.glob(".*.tmp"))
        assert len(torch.load(run_dir / "checkpoint.pt", weights_only=False)["metrics"]["epochs"]) == 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert probe.returncode == 0


def test_a_second_process_on_a_running_run_is_refused_and_a_dead_ones_lock_is_taken_over(tiny_mnist, tmp_path):
    first = start_main(*BASE, "--epochs", "1000", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path)
    run_dir = tmp_path / "bn_seed0"
    deadline = time.time() + 120
    while finished_epochs(run_dir) < 1 and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    try:
        second = run_main("--resume", run_dir, "--data-dir", tiny_mnist, cwd=tmp_path)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"run folder {run_dir} is in use by another process (pid {first.pid})" in second.stderr
        overwrite = run_main(*BASE, "--epochs", "1", "--overwrite", "--data-dir", tiny_mnist, "--out", tmp_path,
                             cwd=tmp_path)
        assert overwrite.returncode == 1 and "is in use by another process" in overwrite.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: its .lock file stays behind
        first.communicate(timeout=60)
    assert (run_dir / ".lock").read_text().strip() == str(first.pid)
    again = run_main(*BASE, "--epochs", "1", "--overwrite", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert finished_epochs(run_dir) == 1


def test_run_lock_in_process(tmp_path):
    (tmp_path / ".lock").write_text("999999999\n")  # left by a process that is gone: taken over
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunInUse, match=f"pid {os.getpid()}"), run_lock(tmp_path):
            pass
        with pytest.raises(RunInUse):
            new_run_dir(tmp_path.parent, tmp_path.name, overwrite=True)
    assert tmp_path.exists()
