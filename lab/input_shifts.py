"""Test images that differ from the training images: nine shifts of MNIST, each at severity 0 (none) to 3.

Every shift takes raw images in [0, 1], shape (N, 1, 28, 28), and returns images of the same shape in
[0, 1]; severity 0 returns the input unchanged. Random shifts draw from a generator seeded by the
shift's name and severity, so the same call gives the same images on every run.
"""
import math
import zlib

import torch
import torch.nn.functional as F

from plumbing.data import affine_warp

SEVERITIES = (1, 2, 3)


def contrast(x, severity):
    """Lower contrast: each image's pixels pulled towards its own mean, to 50%, 25% and 10% of their spread."""
    keep = (1.0, 0.5, 0.25, 0.1)[severity]
    mean = x.mean((1, 2, 3), keepdim=True)
    return mean + (x - mean) * keep


def brightness(x, severity):
    """A brighter background: 0.2, 0.4 or 0.6 added to every pixel, clipped at white."""
    return (x + (0.0, 0.2, 0.4, 0.6)[severity]).clamp(0, 1)


def gaussian_noise(x, severity):
    """Gaussian noise of standard deviation 0.1, 0.2 or 0.4 on every pixel, clipped to [0, 1]."""
    sigma = (0.0, 0.1, 0.2, 0.4)[severity]
    return (x + sigma * torch.randn(x.shape, generator=generator("gaussian_noise", severity))).clamp(0, 1)


def salt_and_pepper(x, severity):
    """2%, 5% or 10% of the pixels set to black or white (half each), chosen at random."""
    fraction = (0.0, 0.02, 0.05, 0.1)[severity]
    draw = torch.rand(x.shape, generator=generator("salt_and_pepper", severity))
    x = torch.where(draw < fraction / 2, torch.zeros_like(x), x)
    return torch.where(draw > 1 - fraction / 2, torch.ones_like(x), x)


def inversion(x, severity):
    """White digits on black become black digits on white (one level: every severity > 0 is the same)."""
    return 1 - x if severity else x


def rotation(x, severity):
    """Every image rotated by 15, 30 or 45 degrees, in a random direction per image."""
    degrees = (0, 15, 30, 45)[severity]
    sign = torch.randint(0, 2, (len(x),), generator=generator("rotation", severity)) * 2 - 1
    return affine_warp(x, angle=torch.deg2rad(sign * float(degrees)))


def translation(x, severity):
    """Every image moved by 3, 5 or 7 pixels in a random direction per image (the training shifts are <= 2)."""
    pixels = (0, 3, 5, 7)[severity]
    direction = torch.rand(len(x), generator=generator("translation", severity)) * 2 * math.pi
    return affine_warp(x, offset=torch.stack([direction.cos(), direction.sin()], 1) * pixels)


def scale(x, severity):
    """Every digit shrunk about the image centre, to 75%, 60% or 45% of its size."""
    factor = (1.0, 0.75, 0.6, 0.45)[severity]
    return affine_warp(x, zoom=factor)


def blur(x, severity):
    """Gaussian blur of standard deviation 0.75, 1.25 or 2 pixels."""
    sigma = (0.0, 0.75, 1.25, 2.0)[severity]
    if not sigma:
        return x
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))


SHIFTS = {f.__name__: f for f in (contrast, brightness, gaussian_noise, salt_and_pepper, inversion, rotation,
                                  translation, scale, blur)}
LEVELS = {name: (1,) if name == "inversion" else SEVERITIES for name in SHIFTS}


def generator(name, severity):
    """A CPU generator seeded by the shift's name and severity: the same images every time."""
    return torch.Generator().manual_seed(zlib.crc32(f"{name}/{severity}".encode()))


def shifted(images, name, severity):
    """`images` (uint8 (N, 28, 28) or float (N, 1, 28, 28) in [0, 1]) under shift `name` at `severity`, in [0, 1]."""
    x = images.float().div(255).unsqueeze(1) if images.dtype == torch.uint8 else images
    return SHIFTS[name](x, severity) if severity else x
