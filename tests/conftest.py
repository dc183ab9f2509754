"""Fixtures: tiny synthetic MNIST in torchvision's raw file format, and the real copy if present."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_MNIST = Path(os.environ.get("REAL_MNIST_DIR", ROOT.parent / "shared" / "mnist"))
# urllib honours these: any download attempt is refused at once instead of reaching a network
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


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


def run_main(*args, cwd, timeout=300):
    """python main.py ARGS in a subprocess, offline; returns the CompletedProcess."""
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def start_main(*args, cwd):
    """python main.py ARGS started in the background, offline; returns the Popen."""
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_epochs(run_dir):
    """Epochs recorded in run_dir/metrics.json (0 if there is none yet)."""
    try:
        return len(json.loads((Path(run_dir) / "metrics.json").read_text())["epochs"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
