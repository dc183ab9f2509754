"""main.py, the command line: one run, several seeds, the study (--norm all), --resume; and nothing lost,
nothing cryptic: bad flags, damaged run folders, unusable output folders, full disks, two processes, signals."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import main
import utils
from conftest import (ROOT, check_figures, finished_epochs, full_disk_after, run_main, snapshot, start_main,
                      wait_until)
from plumbing.config import STUDY_L1, Config, config_from_record, run_name
from plumbing.data import load_mnist
from lab import train
from lab.train import fit

EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
ALL_FLAGS = {"norm", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "l1", "gn_groups", "dropout",
             "degrees", "shift", "seed", "val_split", "train_subset", "data_dir", "device", "compile"}
BASE = ["--norm", "bn", "--device", "cpu", "--no-progress", "--train-subset", "256"]


def base_run(epochs, **settings):
    """The run folder's name of BASE with `epochs` (and other settings)."""
    return run_name(Config(norm="bn", train_subset=256, epochs=epochs, **settings))


def epochs_without_time(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


# ---- one run ---------------------------------------------------------------------------------------------
def test_smoke_run_writes_metrics_in_the_schema(tiny_mnist, tmp_path):
    result = run_main("--norm", "gn", "--epochs", "2", "--data-dir", tiny_mnist, "--out", tmp_path,
                      "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch  2/2" in result.stdout
    run_dir = tmp_path / run_name(Config(norm="gn", epochs=2))
    assert run_dir.name == "gn_e2_seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"config", "params", "device", "node", "torch", "cpu", "threads", "fingerprint", "epochs"}
    assert ALL_FLAGS <= set(metrics["config"]) and metrics["config"]["norm"] == "gn"
    assert metrics["params"] < 8000 and metrics["device"] == "cpu"
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    assert all(set(row) == EPOCH_KEYS for row in metrics["epochs"])
    assert all(0 <= row["test_acc"] <= 100 for row in metrics["epochs"])
    assert metrics["epochs"][-1]["test_acc"] > 50  # the synthetic classes are easy to learn
    assert (run_dir / "model.pt").stat().st_size > 10_000


def test_run_folders_are_named_by_config_run_name(tiny_mnist, tmp_path):
    result = run_main(*BASE, "--l1", "1e-4", "--epochs", "1", "--seeds", "0", "1", "--data-dir", tiny_mnist,
                      "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [base_run(1, l1=1e-4, seed=seed) for seed in (0, 1)]
    assert names == ["bn_l1_0.0001_e1_n256_seed0", "bn_l1_0.0001_e1_n256_seed1"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == names
    assert [json.loads((tmp_path / n / "metrics.json").read_text())["config"]["seed"] for n in names] == [0, 1]


@pytest.mark.parametrize("norm", ["gn", "ln"])
def test_l1_on_group_and_layer_norm_runs(norm, tiny_mnist, tmp_path):
    result = run_main("--norm", norm, "--l1", "1e-4", "--epochs", "1", "--train-subset", "256", "--device", "cpu",
                      "--no-progress", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / run_name(Config(norm=norm, l1=1e-4, epochs=1, train_subset=256)) / "model.pt").exists()


def test_help_shows_every_default(tmp_path):
    result = run_main("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--norm", "--epochs", "--l1", "--batch-size", "--lr", "--optimizer", "--seed", "--data-dir",
                 "--device", "--out", "--dry-run", "--variants", "--workers", "--address", "--gpus-per-run"):
        assert flag in result.stdout
    assert result.stdout.count("(default:") >= 20


@pytest.mark.parametrize("args,message", [
    (["--norm", "xx"], "invalid choice: 'xx'"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--norm", "all", "--variants", "xx"], "invalid choice: 'xx'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--l1", "-0.1"], "--l1 must be >= 0"),
    (["--norm", "gn", "--gn-groups", "3"], "--gn-groups must divide every layer width"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--norm", "all", "--workers", "0"], "--workers must be >= 1"),
    (["--norm", "all", "--gpus-per-run", "2", "--address", "auto"], "--gpus-per-run must be in (0, 1]"),
    (["--norm", "all", "--gpus-per-run", "0.5"], "--gpus-per-run shares a cluster's GPUs between Ray tasks: it needs "
                                                 "--address"),
])
def test_bad_flags_are_refused_before_anything_is_written(args, message, tiny_mnist, tmp_path):
    result = run_main(*args, "--data-dir", tiny_mnist, "--out", tmp_path / "runs", "--results", tmp_path / "results",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_cuda_without_cuda_is_refused(tiny_mnist, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_main("--device", "cuda", "--data-dir", tiny_mnist, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2 and "sees no CUDA device" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_a_new_run_never_overwrites_an_old_one(tiny_mnist, tmp_path):
    name = run_name(Config(epochs=1, train_subset=1000))  # what --dry-run trains
    for _ in range(2):
        assert run_main("--dry-run", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [name, f"{name}-2"]
    (tmp_path / name / "marker").write_text("the old run")
    assert run_main("--dry-run", "--overwrite", "--data-dir", tiny_mnist, "--out", tmp_path,
                    cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [name, f"{name}-2"]
    assert not (tmp_path / name / "marker").exists() and finished_epochs(tmp_path / name) == 1


def test_absurd_lr_stops_with_a_clear_message(tiny_mnist, tmp_path):
    # Adam with a peak lr of 1e30 overflows float32 within the first epoch
    result = run_main("--lr", "1e30", "--epochs", "2", "--data-dir", tiny_mnist, "--out", tmp_path,
                      cwd=tmp_path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "non-finite loss in BN epoch 1, step" in result.stderr and "--lr" in result.stderr
    run_dir = tmp_path / run_name(Config(lr=1e30, epochs=2))
    assert run_dir.is_dir() and not (run_dir / "model.pt").exists()


# ---- --norm all: the study ----------------------------------------------------------------------------------
def test_norm_all_writes_results_weights_and_every_figure(tiny_mnist, tmp_path):
    result = run_main("--norm", "all", "--epochs", "2", "--seeds", "0", "1", "--workers", "1", "--data-dir",
                      tiny_mnist, "--out", tmp_path / "runs", "--results", tmp_path / "results",
                      "--images", tmp_path / "images", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = json.loads((tmp_path / "results" / "study.json").read_text())
    assert [run["variant"] for run in study["runs"]] == ["GN", "LN", "BN+L1"] * 2
    assert [run["config"]["l1"] for run in study["runs"][:3]] == [0.0, 0.0, STUDY_L1]
    assert set(study["summary"]) == {"GN", "LN", "BN+L1"}
    assert study["summary"]["LN"]["seeds"] == [0, 1]
    names = [run_name(config_from_record(run["config"])) for run in study["runs"]]
    assert names[:3] == ["gn_e2_seed0", "ln_e2_seed0", "bn_l1_e2_seed0"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(names)
    assert sorted(p.name for p in (tmp_path / "results" / "models").iterdir()) == sorted(f"{n}.pt" for n in names)
    check_figures(tmp_path / "images")
    assert "| BN+L1 | 7,410 |" in result.stdout


def test_the_study_trains_into_a_fresh_folder_and_says_when_nothing_will_train(tiny_mnist, tmp_path):
    flags = ["--norm", "all", "--epochs", "1", "--train-subset", "256", "--workers", "1", "--device", "cpu",
             "--data-dir", tiny_mnist, "--no-progress"]
    first = run_main(*flags, cwd=tmp_path)  # default folders: runs/study, its figures in runs/study/images
    assert first.returncode == 0, first.stderr
    assert len(json.loads((tmp_path / "runs" / "study" / "study.json").read_text())["runs"]) == 3
    figures = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "study" / "images").iterdir()}
    assert "test_accuracy.png" in figures and not (tmp_path / "results").exists() and not (tmp_path / "images").exists()
    again = run_main(*flags, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Nothing to train: every run of this command is already recorded in runs/study/")
    assert "--results runs/study_new" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "study" / "images").iterdir()} == figures


def small_study(tmp_path, tiny_mnist, *flags):
    return run_main("--norm", "all", *flags, "--epochs", "1", "--train-subset", "256", "--workers", "1",
                    "--device", "cpu", "--data-dir", tiny_mnist, "--out", tmp_path / "runs",
                    "--results", tmp_path / "results", "--images", tmp_path / "images", "--no-progress", cwd=tmp_path)


def test_norm_all_l1_sets_the_lambda_of_bn_l1_only(tiny_mnist, tmp_path):
    result = small_study(tmp_path, tiny_mnist, "--variants", "bn_l1", "bn", "--l1", "1e-4")
    assert result.returncode == 0, result.stderr
    study = json.loads((tmp_path / "results" / "study_bn_l1_bn.json").read_text())
    assert [(run["variant"], run["config"]["l1"]) for run in study["runs"]] == [("BN+L1", 1e-4), ("BN", 0.0)]
    assert sorted(p.name for p in (tmp_path / "results" / "models").iterdir()) == [
        "bn_e1_n256_seed0.pt", "bn_l1_0.0001_e1_n256_seed0.pt"]


def test_norm_all_with_other_variants_and_a_second_call_skips_what_is_recorded(tiny_mnist, tmp_path):
    first = small_study(tmp_path, tiny_mnist, "--variants", "gn", "bn")
    assert first.returncode == 0, first.stderr
    results = tmp_path / "results" / "study_gn_bn.json"
    study = json.loads(results.read_text())
    assert [run["variant"] for run in study["runs"]] == ["GN", "BN"]
    assert sorted(p.name for p in (tmp_path / "results" / "models").iterdir()) == [
        "bn_e1_n256_seed0.pt", "gn_e1_n256_seed0.pt"]
    assert not (tmp_path / "images").exists()  # the study's figures are drawn for its own three variants only
    assert "| GN | 7,410 |" in first.stdout and "| BN | 7,410 |" in first.stdout
    second = small_study(tmp_path, tiny_mnist, "--variants", "gn", "bn")
    assert second.returncode == 0, second.stderr
    assert "2 of 2 runs already in" in second.stdout and "done: " not in second.stdout
    assert json.loads(results.read_text()) == study


def test_norm_all_records_a_diverged_run_as_a_result(tiny_mnist, tmp_path):
    # a run whose loss stops being finite is a finding (e.g. no normalization at a high LR), not a failure;
    # a run that fails for another reason is reported with the command that continues (tests/test_runner.py)
    result = run_main("--norm", "all", "--variants", "gn", "--lr", "1e30", "--epochs", "1", "--workers", "1",
                      "--device", "cpu", "--data-dir", tiny_mnist, "--out", tmp_path / "runs", "--results",
                      tmp_path / "results", "--images", tmp_path / "images", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    [run] = json.loads((tmp_path / "results" / "study_gn.json").read_text())["runs"]
    assert run["diverged"]["epoch"] == 1 and run["epochs"] == []
    assert "| GN | 7,410 | every seed diverged |" in result.stdout
    assert not (tmp_path / "results" / "models").exists()  # a diverged run keeps no weights


# ---- --resume, and signals ----------------------------------------------------------------------------------
def test_interrupted_then_resumed_run_equals_uninterrupted_run(tiny_mnist, tmp_path):
    sig = signal.SIGTERM  # what a scheduler or a closing session sends; Ctrl-C (SIGINT) is test_runner's study case
    common = ["--norm", "bn", "--l1", "1e-4", "--epochs", "6", "--device", "cpu", "--no-progress",
              "--data-dir", tiny_mnist]
    name = run_name(Config(norm="bn", l1=1e-4, epochs=6))
    whole = run_main(*common, "--out", tmp_path / "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    process = start_main(*common, "--out", tmp_path / "cut", cwd=tmp_path)
    run_dir = tmp_path / "cut" / name
    wait_until(lambda: finished_epochs(run_dir) >= 2, timeout=120, what=f"2 finished epochs in {run_dir}",
               process=process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"python main.py --resume {run_dir}" in stderr and "Traceback" not in stderr
    assert 2 <= finished_epochs(run_dir) < 6
    assert not (run_dir / "model.pt").exists()

    resumed = run_main("--resume", run_dir, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs_without_time(run_dir) == epochs_without_time(tmp_path / "whole" / name)
    a = torch.load(run_dir / "model.pt")
    b = torch.load(tmp_path / "whole" / name / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_finished_run_does_nothing(tiny_mnist, tmp_path):
    assert run_main("--epochs", "1", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path).returncode == 0
    run_dir = tmp_path / run_name(Config(epochs=1))
    before = (run_dir / "metrics.json").read_text()
    result = run_main("--resume", run_dir, cwd=tmp_path)
    assert result.returncode == 0 and "nothing to resume" in result.stdout
    assert (run_dir / "metrics.json").read_text() == before


def test_resume_refuses_conflicting_flags(tiny_mnist, tmp_path):
    assert run_main("--epochs", "1", "--data-dir", tiny_mnist, "--out", tmp_path, cwd=tmp_path).returncode == 0
    result = run_main("--resume", tmp_path / run_name(Config(epochs=1)), "--lr", "0.5", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 2 and "--lr 0.5 (run has 0.01)" in result.stderr
    result = run_main("--resume", tmp_path / "missing", cwd=tmp_path)
    assert result.returncode == 2 and "no metrics.json" in result.stderr


# ---- damaged run folders: refused, and left as they were ------------------------------------------------------
def interrupted_run(run_dir, norm, tiny_mnist):
    """A run of 3 epochs stopped after epoch 2, as Ctrl-C leaves it."""
    real, calls = train.train_epoch, []

    def stop_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise utils.Interrupted("step 1")
        return real(*args, **kwargs)

    config = Config(norm=norm, epochs=3, train_subset=256, data_dir=str(tiny_mnist))
    train.train_epoch = stop_in_epoch_3
    try:
        fit(config, load_mnist(tiny_mnist, torch.device("cpu"), train_subset=256), run_dir, progress=False,
            log=lambda line: None)
    except utils.Interrupted:
        pass
    finally:
        train.train_epoch = real


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


# ---- output folders that can't be used, full disks ---------------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--out", "a_file"], "--out a_file is a file, not a folder"),
    (["--out", "a_file/runs"], "--out a_file/runs cannot be created: a_file is a file"),
    (["--norm", "all", "--results", "a_file"], "--results a_file is a file, not a folder"),
    (["--norm", "all", "--images", "a_file/x"], "--images a_file/x cannot be created: a_file is a file"),
])
def test_unusable_output_folder_is_refused_before_training(flags, message, tiny_mnist, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = run_main(*BASE, "--epochs", "1", "--workers", "1", "--data-dir", tiny_mnist, *flags, cwd=tmp_path)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused(tiny_mnist, tmp_path):
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir(mode=0o555)
    result = run_main(*BASE, "--data-dir", tiny_mnist, "--out", locked_dir / "runs", cwd=tmp_path)
    assert result.returncode == 1 and "is not writable" in result.stderr


def test_full_disk_message_from_the_command_line(tiny_mnist, tmp_path, monkeypatch, capsys):
    full_disk_after(monkeypatch, good_writes=1)  # epoch 1's checkpoint, then metrics.json fails
    code = main.main([*BASE, "--epochs", "2", "--data-dir", str(tiny_mnist), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    run_dir = tmp_path / base_run(2)
    assert code == 4 and "Traceback" not in err
    assert f"could not write {run_dir / 'metrics.json'}: No space left on device" in err
    assert f"continue with: python main.py --resume {run_dir}" in err
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def small_filesystem(path, size_kb):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                             capture_output=True, timeout=60)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    return path


def test_a_really_full_disk(tiny_mnist, tmp_path):
    probe = run_main(*BASE, "--epochs", "1", "--data-dir", tiny_mnist, "--out", tmp_path / "probe", cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    checkpoint_kb = (tmp_path / "probe" / base_run(1) / "checkpoint.pt").stat().st_size // 1024
    disk = small_filesystem(tmp_path / "disk", checkpoint_kb * 3 // 2 + 16)  # one checkpoint fits, two don't
    try:
        result = run_main(*BASE, "--epochs", "3", "--data-dir", tiny_mnist, "--out", disk, cwd=tmp_path)
        assert result.returncode == 4 and "No space left on device" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        run_dir = disk / base_run(3)
        assert finished_epochs(run_dir) == 1 and not list(run_dir.glob(".*.tmp"))
        assert len(torch.load(run_dir / "checkpoint.pt", weights_only=False)["metrics"]["epochs"]) == 1
    finally:
        subprocess.run(["umount", str(disk)], check=False, timeout=60)


# ---- two processes, one run folder ---------------------------------------------------------------------------
def lock_holder(run_dir):
    """The pid written in run_dir/.lock, or None."""
    try:
        return (run_dir / ".lock").read_text().strip() or None
    except FileNotFoundError:
        return None


def test_a_second_process_on_a_running_run_is_refused_and_a_dead_ones_lock_is_taken_over(tiny_mnist, tmp_path):
    endless = [*BASE, "--epochs", "1000", "--data-dir", tiny_mnist, "--out", tmp_path]
    first = start_main(*endless, cwd=tmp_path)
    run_dir = tmp_path / base_run(1000)
    try:
        wait_until(lambda: finished_epochs(run_dir) >= 1, timeout=120, what=f"epoch 1 in {run_dir}", process=first)
        second = run_main("--resume", run_dir, "--data-dir", tiny_mnist, cwd=tmp_path)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"run folder {run_dir} is in use by another process (pid {first.pid})" in second.stderr
        overwrite = run_main(*endless, "--overwrite", cwd=tmp_path)
        assert overwrite.returncode == 1 and "is in use by another process" in overwrite.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: its .lock file stays behind
        first.communicate(timeout=60)
    assert lock_holder(run_dir) == str(first.pid)
    again = start_main(*endless, "--overwrite", cwd=tmp_path)  # takes the dead one's lock, starts afresh
    try:
        wait_until(lambda: lock_holder(run_dir) == str(again.pid) and finished_epochs(run_dir) >= 1, timeout=120,
                   what=f"pid {again.pid} to train epoch 1 in {run_dir}", process=again)
    finally:
        again.send_signal(signal.SIGTERM)
        _, stderr = again.communicate(timeout=120)
    assert again.returncode == 130, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name]


@pytest.mark.parametrize("command, flags", [
    ("main", ["--help"]), ("main", ["--epochs", "0"]), ("main", ["--norm", "xx"]), ("main", ["--gn-groups", "3"]),
    ("sweep", ["--help"]), ("sweep", ["--batch-sizes", "0"]), ("sweep", ["--norms", "xx"]),
    ("lr_range", ["--help"]), ("lr_range", ["--lrs", "0"]), ("lr_range", ["--epochs", "0"]),
    ("shift", ["--help"]), ("shift", ["--workers", "0"])])
def test_help_and_bad_flags_are_answered_before_torch_is_imported(command, flags):
    if command == "shift":  # shift.py parses in its __main__ block, before its own imports of torch
        code = ("import runpy, sys\ntry:\n    runpy.run_module('lab.shift', run_name='__main__', alter_sys=True)\nexcept SystemExit as e:\n"
                "    assert e.code in (0, 2), e.code\n")
    else:
        module = "import main" if command == "main" else f"from lab import {command}"
        code = (f"import sys\n{module}\ntry:\n    {command}.main(sys.argv[1:])\nexcept SystemExit as e:\n"
                "    assert e.code in (0, 2), e.code\n")
    code += "assert not {'torch', 'torchvision', 'matplotlib', 'ray'} & set(sys.modules), sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code, *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
