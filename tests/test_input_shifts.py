"""input_shifts.py: every shift is the identity at severity 0, stays in [0, 1], and is deterministic."""
import pytest
import torch

from lab.input_shifts import LEVELS, SEVERITIES, SHIFTS, shifted


def digits(n=16):
    """Bright strokes on black, like MNIST, as uint8 (N, 28, 28)."""
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i in range(n):
        images[i, 6 + i % 5:22, 12 + i % 3:16] = 255
        images[i, 6:9, 8:20] = 200
    return images


@pytest.mark.parametrize("name", SHIFTS)
def test_severity_0_is_the_identity_and_every_level_stays_in_range(name):
    images = digits()
    clean = images.float().div(255).unsqueeze(1)
    assert torch.equal(shifted(images, name, 0), clean)
    for severity in LEVELS[name]:
        x = shifted(images, name, severity)
        assert x.shape == clean.shape and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1, (name, severity)
        assert not torch.equal(x, clean), f"{name} at severity {severity} changed nothing"


@pytest.mark.parametrize("name", SHIFTS)
def test_shifts_are_deterministic(name):
    images = digits()
    for severity in LEVELS[name]:
        assert torch.equal(shifted(images, name, severity), shifted(images, name, severity))


def test_levels_get_stronger_and_inversion_has_one():
    assert LEVELS["inversion"] == (1,) and all(LEVELS[n] == SEVERITIES for n in SHIFTS if n != "inversion")
    clean = shifted(digits(), "contrast", 0)
    for name in ("contrast", "brightness", "gaussian_noise", "salt_and_pepper", "blur"):
        distance = [(shifted(digits(), name, s) - clean).abs().mean().item() for s in SEVERITIES]
        assert distance == sorted(distance) and distance[0] > 0, name


def test_geometric_shifts_keep_the_ink_of_a_centred_digit():
    images = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images[0, 10:18, 12:16] = 255  # a small centred bar: rotation and translation keep it inside the frame
    ink = images.float().div(255).sum()
    for name in ("rotation", "translation"):
        for severity in SEVERITIES:
            assert shifted(images, name, severity).sum() == pytest.approx(ink.item(), rel=0.1), (name, severity)
    assert 0 < shifted(images, "scale", 3).sum() < ink * 0.5  # shrunk to 45% of its size: about a fifth of the ink
