"""system.py: crash-safe writes, run folders and their locks, stop signals, the CPU allocator setting."""
import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from plumbing import system
from conftest import ROOT, wait_until
from plumbing.system import (RunFolderError, RunInUse, WriteError, atomic_write, check_output_dir, exclusive, new_run_dir,
                    run_lock, save_json, save_torch, stop_requests)

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---- atomic writes ----------------------------------------------------------------------------------
def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics.json"
    save_json({"epochs": [1]}, path)
    save_json({"epochs": [1, 2]}, path)
    assert json.loads(path.read_text()) == {"epochs": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    # the disk fills up after the new checkpoint's bytes were written, before they are on disk:
    # atomic_write itself meets the error, so only a write into a temp file keeps the old checkpoint
    path = tmp_path / "checkpoint.pt"
    save_torch({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def no_space(fd):
        raise NO_SPACE

    monkeypatch.setattr(system.os, "fsync", no_space)
    with pytest.raises(WriteError, match=f"could not write {path}: No space left on device"):
        save_torch({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and torch.load(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_write_that_fails_half_way_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"runs": []}\n')

    def half_then_full(file):
        file.write(b'{"runs": [{"half a')
        raise NO_SPACE

    with pytest.raises(WriteError, match="its previous version, if any, is unchanged") as error:
        atomic_write(path, half_then_full)
    assert isinstance(error.value.__cause__, OSError) and error.value.__cause__.errno == errno.ENOSPC
    assert path.read_text() == '{"runs": []}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_write_that_fails_half_way_leaves_no_file_where_there_was_none(tmp_path):
    def half_then_full(file):
        file.write(b"half")
        raise NO_SPACE

    with pytest.raises(WriteError):
        atomic_write(tmp_path / "new.json", half_then_full)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_and_ctrl_c_pass_through_unchanged_and_keep_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    for error in (ValueError("not serializable"), KeyboardInterrupt()):
        def half_then_stop(file, error=error):
            file.write(b"new, half")
            raise error

        with pytest.raises(type(error)):
            atomic_write(path, half_then_stop)
        assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


# ---- output and run folders, locks --------------------------------------------------------------------
def test_check_output_dir_names_what_is_wrong_and_creates_nothing(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    check_output_dir(tmp_path / "new" / "deeper", "--out")
    assert not (tmp_path / "new").exists()
    with pytest.raises(RunFolderError, match="--out .*a_file is a file, not a folder"):
        check_output_dir(tmp_path / "a_file", "--out")
    with pytest.raises(RunFolderError, match="--images .*a_file/x cannot be created: .*a_file is a file"):
        check_output_dir(tmp_path / "a_file" / "x", "--images")


def test_new_run_dir_never_reuses_a_name_unless_asked(tmp_path):
    assert new_run_dir(tmp_path, "gn_seed0") == tmp_path / "gn_seed0"
    (tmp_path / "gn_seed0" / "metrics.json").write_text("{}")
    assert new_run_dir(tmp_path, "gn_seed0") == tmp_path / "gn_seed0-2"
    assert new_run_dir(tmp_path, "gn_seed0") == tmp_path / "gn_seed0-3"
    assert new_run_dir(tmp_path, "gn_seed0", overwrite=True) == tmp_path / "gn_seed0"
    assert list((tmp_path / "gn_seed0").iterdir()) == []


def test_run_lock_in_process(tmp_path):
    (tmp_path / ".lock").write_text("999999999\n")  # left by a process that is gone: taken over
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunInUse, match=f"pid {os.getpid()}"), run_lock(tmp_path):
            pass
        with pytest.raises(RunInUse):
            new_run_dir(tmp_path.parent, tmp_path.name, overwrite=True)
    assert tmp_path.exists()


def test_a_lock_held_by_another_process_is_refused_and_freed_when_it_ends(tmp_path):
    lock = tmp_path / ".results.json.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys\n"
        "from plumbing.system import exclusive\n"
        f"with exclusive({str(lock)!r}, 'the results file'):\n"
        "    sys.stdin.readline()\n")], cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: lock.exists() and lock.read_text().strip() == str(holder.pid), timeout=120,
                   what=f"pid {holder.pid} to take {lock}", process=holder)
        with pytest.raises(RunInUse, match=f"the results file is in use by another process \\(pid {holder.pid}\\)"):
            with exclusive(lock, "the results file"):
                pass
    finally:
        holder.communicate("\n", timeout=60)
    with exclusive(lock, "the results file"):
        assert lock.read_text() == f"{os.getpid()}\n"


# ---- stop signals ----------------------------------------------------------------------------------------
def test_stop_requests_turn_signals_into_a_flag_within_the_block():
    before = signal.getsignal(signal.SIGINT)
    with stop_requests() as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(should_stop, timeout=10, what="SIGTERM to set the stop flag")
    assert signal.getsignal(signal.SIGINT) is before


# ---- the allocator setting ----------------------------------------------------------------------------------
FAULTS_OF_20_EVAL_PASSES = """
import resource, sys, torch
from model import Net
from plumbing.system import keep_freed_memory
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
                                  capture_output=True, text=True, timeout=300).stdout.strip()
              for how in ("default", "keep")}
    if faults["keep"] == "unsupported":
        pytest.skip("not Linux with glibc")
    assert 20 * int(faults["keep"]) < int(faults["default"]), faults  # measured: 0 to 1,700 vs ~165,000
