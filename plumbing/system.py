"""Process and file plumbing: crash-safe writes, run folders, stop signals, the CPU allocator setting."""
import ctypes
import hashlib
import io
import json
import os
import platform
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no OS file locks here; runs still work, two processes must not share a run
    fcntl = None


# ---- errors ---------------------------------------------------------------------
class RunFolderError(Exception):
    """A run or output folder can't be used as asked; the message says why and what to do."""


class RunInUse(RunFolderError):
    """Another live process holds the folder's lock."""


class WriteError(Exception):
    """A file could not be written (a full disk, a read-only folder, ...); the old file is unchanged."""


# ---- files ------------------------------------------------------------------------
def atomic_write(path, write):
    """Write via `write(file)` into a temp file beside `path`, fsync, then rename over `path`.

    Whatever goes wrong, the temp file is removed and `path` keeps its previous content;
    an OSError (ENOSPC, EACCES, ...) comes out as a WriteError that names the path.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteError(f"could not write {path}: {error.strerror or error}; "
                             f"its previous version, if any, is unchanged") from error
        raise


def save_json(obj, path):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode() + b"\n"))


def save_torch(obj, path):
    buffer = io.BytesIO()  # serialized first, so a failing disk is met by one plain write
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def check_output_dir(path, flag):
    """RunFolderError unless `path` is, or can be made, a writable folder; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{flag} {path} is a file, not a folder; pass a folder (it is created if missing)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise RunFolderError(f"{flag} {path} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {path}: {existing} is not writable for this user; pass another folder")


@contextmanager
def exclusive(lock_path, what):
    """Hold `lock_path` (an OS file lock holding our pid) for the block; RunInUse if a live process has it.

    The OS drops a lock when its process dies, so the lock of a crashed run is simply taken over.
    """
    with open(lock_path, "a+") as file:
        if fcntl:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                pid = file.read().strip() or "unknown"
                raise RunInUse(f"{what} is in use by another process (pid {pid}); two processes must not "
                               f"write one run. Wait for that one to end (or stop it), then try again.") from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        try:
            yield
        finally:
            if fcntl:
                fcntl.flock(file, fcntl.LOCK_UN)


def run_lock(run_dir):
    """The lock of one run folder: held by whoever trains into it."""
    return exclusive(Path(run_dir) / ".lock", f"run folder {run_dir}")


def new_run_dir(out, name, overwrite=False):
    """An empty OUT/name; an existing one is replaced with `overwrite`, else name-2, name-3, ..."""
    path, n = Path(out) / name, 1
    if overwrite and path.exists():
        with run_lock(path):  # never delete a run another process is training
            pass
        shutil.rmtree(path)
    while path.exists():
        n += 1
        path = Path(out) / f"{name}-{n}"
    path.mkdir(parents=True)
    return path


# ---- signals ------------------------------------------------------------------------
@contextmanager
def stop_requests():
    """Within the block, SIGINT/SIGTERM only set a flag; yields a function that reads it."""
    requested = []
    handler = lambda signum, frame: requested.append(signum)  # noqa: E731
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---- the machine ------------------------------------------------------------------------
def cpu_name():
    """The CPU's model name (results reproduce bit for bit only on the same CPU, torch and threads)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}


def _cache_sizes():
    """'L1d 48K, L1i 32K, L2 2048K, L3 307200K' of CPU 0 (Linux), else ''."""
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        caches.append(f"L{level}{ {'Data': 'd', 'Instruction': 'i'}.get(kind, '')} {size}")
    return ", ".join(caches)


def fingerprint(threads=None):
    """What decides this process's CPU arithmetic, as far as it can be read: the CPU's exact model
    (vendor, family, model, stepping, a hash of its feature flags, its caches), the instruction set
    torch's kernels use, torch's version and the thread count (`threads`: default, torch's now).

    VMs of one CPU name ("AMD EPYC") span CPU generations whose float rounding differs, so the name
    alone is not enough; two processes with equal fingerprints computed the committed runs bit for
    bit in every test so far, two with different ones need not.
    """
    info = _cpuinfo()
    flags = " ".join(sorted(info.get("flags", info.get("Features", "")).split()))
    return {"cpu": cpu_name(), "vendor": info.get("vendor_id", platform.machine()),
            "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "flags_sha1": hashlib.sha1(flags.encode()).hexdigest()[:12], "caches": _cache_sizes(),
            "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads() if threads is None else threads}


def keep_freed_memory():
    """Make glibc keep freed memory for reuse instead of handing it back to the OS (CPU speed).

    Every step allocates and frees activations of 2-8 MB. Whether glibc returns such blocks
    to the OS, so that the next step page-faults on fresh pages, depends on the heap's history:
    measured here, a CPU test pass went from 0.4 s to 0.8-1.1 s with about 300,000 page faults,
    and some training runs took ~700 faults per step. Fixed mmap and trim thresholds make it
    never happen. The arithmetic is untouched, so results stay bit for bit the same. It changes
    the whole process, so programs call it once at start (main.py, bench.py, the notebook).
    Returns True where it applied (Linux with glibc); elsewhere it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # macOS, Windows, musl
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))
