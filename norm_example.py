"""Worked example: BN, GN and LN by hand on 2 images x 4 channels x 2x2, printed as Markdown.

    python norm_example.py      # prints the tables quoted in the README
"""
import torch

EPS = 1e-5
# which axes each normalization averages over, for x of shape (N, C, H, W)
AXES = {
    "BN": "each channel, over (N, H, W): 4, channels 0-3, shared by both images",
    "GN": "each image and group of 2 channels, over (C/2, H, W): 4, image 0 groups 0-1, then image 1",
    "LN": "each image, over (C, H, W): 2, image 0 then image 1",
}


def example_input():
    """(2, 4, 2, 2): image n, channel c holds four small integers, so the arithmetic is easy to follow."""
    return torch.tensor([
        [[[1., 2.], [3., 4.]], [[0., 0.], [4., 4.]], [[2., 2.], [2., 6.]], [[1., 3.], [5., 7.]]],
        [[[5., 6.], [7., 8.]], [[2., 2.], [2., 2.]], [[0., 4.], [0., 4.]], [[3., 3.], [3., 7.]]],
    ])


def normalize(x, groups=None):
    """(output, means, variances) of BN (groups=None) or GN with `groups` groups; LN is groups=1.

    Variances are biased (divide by the count), as BatchNorm2d and GroupNorm use them in training.
    """
    n, c, h, w = x.shape
    if groups is None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (x - mean) / (var + EPS).sqrt(), mean.flatten(), var.flatten()
    grouped = x.reshape(n, groups, -1)
    mean = grouped.mean(dim=2, keepdim=True)
    var = grouped.var(dim=2, unbiased=False, keepdim=True)
    out = ((grouped - mean) / (var + EPS).sqrt()).reshape(n, c, h, w)
    return out, mean.reshape(n, groups), var.reshape(n, groups)


def worked_example():
    """{name: (output, means, variances)} for BN, GN (2 groups) and LN on example_input()."""
    x = example_input()
    return {"BN": normalize(x), "GN": normalize(x, groups=2), "LN": normalize(x, groups=1)}


def fmt(values):
    return ", ".join(f"{v:.3g}" for v in values.flatten().tolist())


def markdown():
    """The input, then one row per norm: its statistics, and two channels after normalizing (gamma 1, beta 0)."""
    x = example_input()
    lines = ["Input x, shape (2, 4, 2, 2), each channel's 2x2 pixels read row by row:", "",
             "| image | channel 0 | channel 1 | channel 2 | channel 3 |", "|---|---|---|---|---|"]
    lines += [f"| {n} | " + " | ".join(fmt(x[n, c]) for c in range(4)) + " |" for n in range(2)]
    lines += ["", "| norm | statistics: over what, how many | means | variances | image 0, channel 0 becomes "
              "| image 1, channel 1 becomes |", "|---|---|---|---|---|---|"]
    for name, (out, mean, var) in worked_example().items():
        lines.append(f"| **{name}** | {AXES[name]} | {fmt(mean)} | {fmt(var)} | {fmt(out[0, 0])} | {fmt(out[1, 1])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
