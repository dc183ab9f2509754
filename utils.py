"""The loops a student expects: the L1 penalty, one epoch of training, evaluation.

A whole run (seeding, loaders, the optimizer and its schedule, checkpoints, resume) is lab/train.py's `fit`; this
file imports nothing of the repo: the model comes in as an argument.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


# ---- the L1 penalty ---------------------------------------------------------
def l1_weights(model):
    """The tensors L1 covers: the weights of every conv and linear layer.

    Normalization scales/shifts and biases are left out: shrinking a BN scale
    towards 0 switches a channel off rather than making the model simpler.
    """
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def l1_penalty(model):
    """Sum of |w| over l1_weights(model)."""
    return sum(w.abs().sum() for w in l1_weights(model))


# ---- one epoch, and evaluation ---------------------------------------------------
class TrainingStopped(Exception):
    """Training stopped before the end; the last finished epoch is kept in `run_dir`."""

    def __init__(self, message, run_dir=None, epoch=None, step=None):
        super().__init__(message)
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


class NonFiniteLoss(TrainingStopped):
    """The loss was NaN or infinite at `step` of `epoch`."""


class Interrupted(TrainingStopped):
    pass


def _check(step, loss_sum, loss, should_stop):
    """Stop on a non-finite loss in any step since the last check, or on a stop request."""
    if not torch.isfinite(loss_sum + loss.detach()):
        raise NonFiniteLoss(f"step {step}: the loss is {loss.item()}", step=step)
    if should_stop():
        raise Interrupted(f"step {step}", step=step)


def train_epoch(model, loader, optimizer, scheduler=None, l1_lambda=0.0, progress=False,
                should_stop=lambda: False, check_every=1):
    """Train for one epoch; return {'loss', 'acc'} (cross-entropy without the L1 term, percent).

    `loader` is any iterable of (images, labels) batches: a DeviceLoader or a plain DataLoader.
    Losses are summed on the device; the host looks at them every `check_every` steps (each
    look waits for the device) to stop on a non-finite loss or a signal.
    """
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = step = 0
    with tqdm(loader, desc="train", leave=False, disable=not progress, mininterval=0.5) as bar:
        for step, (x, y) in enumerate(bar, start=1):  # `with` clears the bar on an exception too
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            data_loss = F.cross_entropy(logits, y)
            loss = (data_loss + l1_lambda * l1_penalty(model)) if l1_lambda else data_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += data_loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if step % check_every == 0:
                _check(step, loss_sum, loss, should_stop)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
    if not seen:
        raise ValueError("the training loader yielded no batches")
    if step % check_every:
        _check(step, loss_sum, loss, should_stop)
    return {"loss": loss_sum.item() / seen, "acc": 100.0 * correct.item() / seen}


@torch.no_grad()
def evaluate(model, loader):
    """{'loss', 'acc'}: mean cross-entropy over every sample of `loader`, accuracy in percent."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    if not seen:
        raise ValueError("the evaluation loader yielded no batches")
    return {"loss": loss_sum.item() / seen, "acc": 100.0 * correct.item() / seen}
