"""MNIST as tensors on the training device: loading, checks, batched augmentation (its affine warp also makes the
test-time rotations, translations and zooms of lab/input_shifts.py), batching."""
import hashlib
import math
import socket
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from plumbing.config import DATA_DIR_ENV, default_data_dir  # noqa: F401  (callers import default_data_dir from here too)

try:
    import fcntl
except ImportError:  # Windows: no lock; each worker checks on its own
    fcntl = None

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# kind -> (file suffix, magic number, header bytes, bytes per item) of the raw MNIST files
RAW_FILES = {
    "images": ("images-idx3-ubyte", 2051, 16, 28 * 28),
    "labels": ("labels-idx1-ubyte", 2049, 8, 1),
}


class DataError(Exception):
    """MNIST could not be found, downloaded or read; the message says what to do."""


def eval_batch_size(device):
    """Test batch size: 1,000 on a GPU; 256 on a CPU, which the committed CPU results used.

    (256 was chosen because 1,000 ran slower on a CPU; that gap was page faults, which
    system.keep_freed_memory removes, so 256 stays only to keep those results reproducible.)
    """
    return 256 if device.type == "cpu" else 1000


def raw_dir(root):
    return Path(root) / "MNIST" / "raw"


def raw_kind(path):
    """'images' or 'labels': which RAW_FILES entry a raw MNIST file is."""
    return "labels" if "labels" in path.name else "images"


def check_raw_file(path):
    """Raise DataError unless `path` is a complete raw MNIST file: right magic number and size."""
    kind = raw_kind(path)
    _, magic, header, item_bytes = RAW_FILES[kind]
    with open(path, "rb") as file:
        data = file.read(header)
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise DataError(f"{path} is corrupt: its magic number is {found}, expected {magic} "
                        f"for an MNIST {kind} file. Delete it (and its .gz) and load again.")
    count = int.from_bytes(data[4:8], "big")
    expected, size = header + count * item_bytes, path.stat().st_size
    if size != expected:
        raise DataError(f"{path} is truncated or corrupt: {size} bytes, expected {expected} "
                        f"({count} {kind}). Delete it (and its .gz) and load again.")


def read_raw_file(path):
    """The items of a checked raw MNIST file, read as torchvision reads them: uint8 images (N, 28, 28) or
    int64 labels (N,)."""
    kind = raw_kind(path)
    _, _, header, _ = RAW_FILES[kind]
    values = torch.frombuffer(bytearray(path.read_bytes()[header:]), dtype=torch.uint8)
    return values.view(-1, 28, 28) if kind == "images" else values.long()


def raw_paths(root, train):
    """The unpacked images and labels files of one split."""
    prefix = "train" if train else "t10k"
    return [raw_dir(root) / f"{prefix}-{suffix}" for suffix, *_ in RAW_FILES.values()]


def _bad_archives(folder):
    """Names of .gz files present in `folder` whose md5 differs from torchvision's list."""
    from torchvision import datasets
    bad = []
    for name, md5 in datasets.MNIST.resources:
        path = folder / name
        if path.exists() and hashlib.md5(path.read_bytes()).hexdigest() != md5:
            bad.append(f"{path} (md5 differs from the official {md5})")
    return bad


def _not_found_message(root, error):
    from torchvision import datasets
    folder = raw_dir(root)
    names = ", ".join(name for name, _ in datasets.MNIST.resources)
    bad = _bad_archives(folder)
    cause = f"Corrupt archive(s): {'; '.join(bad)}. " if bad else ""
    lines = str(error).strip().splitlines()  # torchvision lists each mirror's error; keep the last
    last = lines[-1].strip() if lines else type(error).__name__
    return (f"MNIST could not be loaded from {folder} (last error: {last}). {cause}"
            f"torchvision tried its mirrors ({', '.join(datasets.MNIST.mirrors)}). "
            f"Without a network, place the four files {names} in {folder} "
            f"(torchvision checks their md5 and unpacks them), or point --data-dir / "
            f"${DATA_DIR_ENV} at a folder that holds MNIST/raw/.")


def load_mnist_split(root, train):
    """Raw (uint8 images (N, 28, 28), int64 labels (N,)) of one split, downloaded if needed.

    Unpacked files are checked and read here; torchvision (imported only then) downloads, md5-checks and
    unpacks what is missing.
    """
    paths = raw_paths(root, train)
    for path in paths:
        if path.exists():  # unpacked earlier: check it before it is read
            check_raw_file(path)
    if all(path.exists() for path in paths):
        images, labels = map(read_raw_file, paths)
        return images, labels
    from torchvision import datasets
    try:  # downloads (md5-checked) and unpacks only what is missing
        dataset = datasets.MNIST(root, train=train, download=True)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
        raise DataError(_not_found_message(root, error)) from error
    return dataset.data, dataset.targets


def ensure_mnist(root):
    """Check (and, where missing, download) both splits of MNIST at `root`; DataError if that fails.
    Files already unpacked are checked (magic number, size), not read."""
    for train in (True, False):
        paths = raw_paths(root, train)
        if all(path.exists() for path in paths):
            for path in paths:
                check_raw_file(path)
        else:
            load_mnist_split(root, train)


def ensure_mnist_on_this_node(root):
    """ensure_mnist(root) on the machine running this process, one process at a time (a lock in the node's
    temp folder), so the workers of one node download at most once; the DataError names the node."""
    key = hashlib.sha1(str(Path(root).absolute()).encode()).hexdigest()[:12]
    lock = Path(tempfile.gettempdir()) / f"mnist-{key}.lock"
    with open(lock, "a") as file:
        if fcntl:
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        try:
            ensure_mnist(root)
        except DataError as error:
            raise DataError(f"on node {socket.gethostname()}: {error}") from None


def normalize(x):
    """Images in [0, 1] -> the network's input scale (zero mean, unit variance over MNIST's training set)."""
    return (x - MNIST_MEAN) / MNIST_STD


def to_device(images, labels, device):
    """uint8 (N, 28, 28) -> normalized float (N, 1, 28, 28) on `device`.

    The uint8 images travel to the device and are converted there, in place: one float copy
    of the split ever exists, a quarter of the transfer to a GPU.
    """
    x = images.to(device).float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)
    return x, labels.to(device)


def load_mnist(root, device, val_split=0, train_subset=0):
    """Dict of (images, labels) on `device` for 'train', 'test' and, if val_split > 0, 'val'.

    The validation images are held out of the training set by a fixed permutation
    (the same for every run seed), so the recipe can be tuned without the test set.
    """
    train_x, train_y = load_mnist_split(root, train=True)
    test_x, test_y = load_mnist_split(root, train=False)
    splits = {}
    if val_split:
        if not 0 < val_split < len(train_x):
            raise DataError(f"--val-split must be between 1 and {len(train_x) - 1}, got {val_split}")
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(1234))
        train_x, train_y = train_x[order], train_y[order]
        splits["val"] = to_device(train_x[-val_split:], train_y[-val_split:], device)
        train_x, train_y = train_x[:-val_split], train_y[:-val_split]
    if train_subset:
        train_x, train_y = train_x[:train_subset], train_y[:train_subset]
    splits["train"] = to_device(train_x, train_y, device)
    splits["test"] = to_device(test_x, test_y, device)
    return splits


def affine_warp(x, angle=None, offset=None, zoom=1.0, background=0.0):
    """Rotate each image by `angle` (radians), move it by `offset` (pixels, (N, 2)) and zoom it about its centre, on
    `background`: one batched grid_sample, the one warp of the training augmentation and of the test-time shifts."""
    n, _, h, w = x.shape
    angle = torch.zeros(n, device=x.device) if angle is None else angle
    offset = torch.zeros(n, 2, device=x.device) if offset is None else offset
    cos, sin = angle.cos() / zoom, angle.sin() / zoom  # the grid samples the input: 1/zoom makes the digit smaller
    shift = -offset * 2 / torch.tensor([w, h], device=x.device)  # pixels -> grid units, against the image's move
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - background, grid, align_corners=False) + background


def random_affine(x, degrees, shift, generator):
    """Rotate each image by U(-degrees, degrees) and shift it by U(-shift, shift) pixels, in one batch."""
    uniform = torch.rand(len(x), 3, generator=generator, device=x.device) * 2 - 1  # U(-1, 1)
    black = (0 - MNIST_MEAN) / MNIST_STD  # a black pixel after normalization
    # -shift: the draws move each image the way the committed runs' augmentation did (bit for bit)
    return affine_warp(x, uniform[:, 0] * math.radians(degrees), uniform[:, 1:] * -shift, background=black)


class DeviceLoader:
    """Batches sliced from tensors already on the device; drops in where a DataLoader would.

    With shuffle=True each epoch draws a fresh permutation (and augmentation) from
    its own seeded generator, whose state a checkpoint can save and restore. A
    shuffled loader drops the last incomplete batch so every step has one shape.
    """

    def __init__(self, images, labels, batch_size, shuffle=False, degrees=0.0, shift=0.0, seed=0):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.degrees, self.shift = shuffle, degrees, shift
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self):
        n = len(self.labels)
        return max(1, n // self.batch_size) if self.shuffle else math.ceil(n / self.batch_size)

    def __iter__(self):
        device = self.images.device
        order = (torch.randperm(len(self.labels), generator=self.generator, device=device)
                 if self.shuffle else None)
        for i in range(len(self)):
            window = slice(i * self.batch_size, (i + 1) * self.batch_size)
            index = order[window] if order is not None else window
            x, y = self.images[index], self.labels[index]
            if self.degrees or self.shift:
                x = random_affine(x, self.degrees, self.shift, self.generator)
            yield x, y
