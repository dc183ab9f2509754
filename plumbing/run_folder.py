"""Run folders: what a run writes after every epoch to continue exactly where it stopped, and the checks
that a folder is the run it claims to be before anything resumes from it or trains into it.

    RUN/metrics.json    the record: the run's config, where it runs, every finished epoch
    RUN/checkpoint.pt   the state after the last finished epoch (model, optimizer, schedule, every RNG)
    RUN/model.pt        the final weights, written at the end

`utils.fit` writes them; `main.py --resume` and the runner read them through this module.
"""
import json
import random
from pathlib import Path

import numpy as np
import torch

from plumbing.config import Config, same_run
from plumbing.system import RunFolderError, new_run_dir


def checkpoint_state(model, optimizer, scheduler, train_loader, metrics):
    """Everything needed to continue exactly where the last finished epoch ended."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "loader_rng": train_loader.generator.get_state(),
        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(), "metrics": metrics,
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore(state, model, optimizer, scheduler, train_loader):
    """Load a checkpoint_state() into the objects; returns its metrics."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    train_loader.generator.set_state(state["loader_rng"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["metrics"]


def continue_or_new_run_dir(out, name, config, overwrite=False):
    """OUT/name if it holds a run of this very config (to continue or reload), else a new run folder.

    A run folder is reused only when its metrics.json records the same config, so a finished
    run loads instead of training again and an interrupted one resumes.
    """
    path = Path(out) / name
    try:
        stored = json.loads((path / "metrics.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        stored = None
    if stored is not None and same_run(stored, config):
        return path
    return new_run_dir(out, name, overwrite)


def _damaged(run_dir, what):
    return RunFolderError(f"{run_dir} cannot be resumed: {what}. Nothing in it was changed. Restore the "
                          f"file from a copy, or start the run again in a new folder (same flags, without --resume).")


def read_run_folder(run_dir, device="cpu"):
    """(metrics, checkpoint state or None) of a run folder, checked; RunFolderError says what is wrong.

    metrics.json is the record, checkpoint.pt the state to continue from; both are written after
    every epoch, checkpoint first, so the checkpoint may be one epoch ahead, never behind.
    """
    run_dir = Path(run_dir)
    metrics_path, checkpoint_path = run_dir / "metrics.json", run_dir / "checkpoint.pt"
    try:
        metrics = json.loads(metrics_path.read_text())
        config = Config(**metrics["config"])  # not config_from_record: a field this code lacks is refused, not dropped
        done = len(metrics["epochs"])
    except FileNotFoundError:
        if checkpoint_path.exists():
            raise _damaged(run_dir, f"it holds {checkpoint_path} but no metrics.json, the run's record") from None
        raise RunFolderError(f"{run_dir} holds no metrics.json, so there is no run to resume") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _damaged(run_dir, f"{metrics_path} is damaged or not from this code ({type(error).__name__}: "
                                f"{error})") from None
    if not checkpoint_path.exists():
        if done:
            raise _damaged(run_dir, f"metrics.json records {done} finished epochs but {checkpoint_path} is "
                                    f"missing, and training again from epoch 1 would overwrite that record")
        return metrics, None
    try:
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        ahead = len(state["metrics"]["epochs"]) - done
        stored = state["metrics"]["config"]
    except Exception as error:  # torch.load raises many kinds on a truncated or foreign file
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise _damaged(run_dir, f"{checkpoint_path} ({checkpoint_path.stat().st_size:,} bytes) is truncated or "
                                f"corrupt; it should hold the state after epoch {done}, as metrics.json records "
                                f"({type(error).__name__}: {first})") from None
    same = same_run(stored, config)
    if ahead not in (0, 1) or not same:
        raise _damaged(run_dir, f"{checkpoint_path} and metrics.json do not belong together (the checkpoint "
                                f"holds {done + ahead} epochs of {'the same' if same else 'another'} config, "
                                f"metrics.json {done})")
    return metrics, state


def resume(run_dir, model, optimizer, scheduler, train_loader, device, log, label):
    """The metrics so far; the objects restored from run_dir's checkpoint if it has one."""
    metrics, state = read_run_folder(run_dir, device)
    if state is None:
        return None
    try:
        metrics = restore(state, model, optimizer, scheduler, train_loader)
    except (KeyError, RuntimeError, ValueError) as error:
        raise _damaged(run_dir, f"its checkpoint.pt does not fit this run's model or optimizer "
                                f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    done = len(metrics["epochs"])
    log(f"{label}: {run_dir} holds {done} of {metrics['config']['epochs']} epochs; "
        + ("continuing" if done < metrics["config"]["epochs"] else "loaded, nothing to train"))
    return metrics
