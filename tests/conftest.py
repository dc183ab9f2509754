"""Fixtures and helpers shared by the test files: tiny synthetic MNIST in torchvision's raw file format,
the real copy if present, main.py in this process or in a subprocess, waiting on a condition, a disk that fills up, figures."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_MNIST = Path(os.environ.get("REAL_MNIST_DIR", ROOT.parent / "shared" / "mnist"))
# urllib honours these: any download attempt is refused at once instead of reaching a network
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
# Ray on loopback only, in this process and the ones the tests start: without this, Ray (on Linux) turns
# 127.0.0.1 into the machine's network address when a driver joins a cluster (ray._private.services)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


# One torch thread in this process and in every process the tests start (torch reads it when imported, after
# this file): on a 2-core machine an op on 2 threads runs many times slower whenever the other core is busy (a
# tiny 2,048-image epoch: 9-15 s on 2 threads beside a busy core, 0.8 s on one). The tests check what the code
# does, not its speed, and every committed run trained on one thread too.
TEST_THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)


def write_idx(path, array, magic):
    """One raw MNIST (IDX) file: big-endian magic, dimensions, then uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def synthetic_digits(n, seed):
    """Images where class k is a bright 6x6 square at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28))
    for i, k in enumerate(labels):
        row, col = 4 + 7 * (k // 4), 4 + 5 * (k % 4)
        images[i, row:row + 6, col:col + 6] = 255
    return images, labels


def write_mnist(root, n_train=2048, n_test=512):
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
    return Path(root)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    """Read-only tiny MNIST root; copy it before corrupting anything."""
    return write_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture
def real_mnist():
    if not (REAL_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {REAL_MNIST}")
    return REAL_MNIST


def run_main(*args, cwd):
    """`python main.py ARGS` in `cwd`, offline, but in this process: main.main(ARGS) with sys.argv, the working
    folder and torch's threads as a process the tests start has them; returns a CompletedProcess (exit code, stdout,
    stderr; an uncaught exception's traceback on stderr with exit code 1). No interpreter start-up per call,
    and a Ray started by one call serves the next. `start_main` starts a real process, for what needs one
    (signals, a lock held by another process)."""
    import contextlib
    import io
    import traceback

    import torch

    import main
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ), sys.argv, os.getcwd(), torch.get_num_threads()
    os.environ.update(OFFLINE)
    sys.argv = [str(ROOT / "main.py"), *argv]
    os.chdir(cwd)
    torch.set_num_threads(TEST_THREADS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main.main(argv)
            except SystemExit as exit_:
                code = exit_.code
            except Exception:  # as the interpreter would end on it
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved[0])
        sys.argv = saved[1]
        os.chdir(saved[2])
        torch.set_num_threads(saved[3])
    return subprocess.CompletedProcess(["main.py", *argv], code or 0, out.getvalue(), err.getvalue())


def start_main(*args, cwd, session=False):
    """python main.py ARGS started in the background, offline; returns the Popen. With `session`, in a process group
    of its own, as a shell starts a command: a terminal's Ctrl-C reaches the whole group (os.killpg)."""
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=session,
                            preexec_fn=default_sigint)


def default_sigint():
    """In the child before exec: Ctrl-C as a shell gives it. An ignored SIGINT survives exec, and Python then installs
    no KeyboardInterrupt handler: a SIG_IGN left in the test process would make every Ctrl-C test pass the signal to
    a command that ignores it (a full CI run saw main.py finish every run and exit 0 after SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(predicate, timeout, what, process=None, interval=0.01):
    """Poll `predicate()` until it is true; AssertionError naming `what` after `timeout` seconds.

    With `process` (a Popen), also fail at once, with its stderr, if it ends before the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        ended = process is not None and process.poll() is not None  # looked at before the predicate
        if predicate():
            return
        if ended:
            _, stderr = process.communicate(timeout=60)
            raise AssertionError(f"gave up waiting for {what}: the process ended first "
                                 f"(exit code {process.returncode}); its stderr:\n{stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(interval)


def finished_epochs(run_dir):
    """Epochs recorded in run_dir/metrics.json (0 if there is none yet)."""
    try:
        return len(json.loads((Path(run_dir) / "metrics.json").read_text())["epochs"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def full_disk_after(monkeypatch, good_writes):
    """Make system.atomic_write's files fail with ENOSPC half-way through, after `good_writes` good ones."""
    from plumbing import system
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
    return calls


# the study's figures: file stem -> (width, height) in pixels
STUDY_FIGURES = {
    "test_loss": (960, 720), "test_accuracy": (1680, 780), "train_vs_test": (1320, 960),
    "misclassified_gn": (600, 1440), "misclassified_ln": (600, 1440), "misclassified_bn_l1": (600, 1440),
}


def check_figures(images_dir, figures=None):
    """Every figure is a PNG of its size in `images_dir`, and not one flat colour."""
    import matplotlib.image as mpimg
    for stem, size in (figures or STUDY_FIGURES).items():
        pixels = mpimg.imread(Path(images_dir) / f"{stem}.png")
        assert pixels.shape[1::-1] == size, stem
        assert pixels[..., :3].std() > 0.02, f"{stem} is nearly one flat colour"
