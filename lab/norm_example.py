"""Worked example: BN, GN and LN by hand on 2 images x 4 channels x 2x2, printed as Markdown; and a figure of the
cells BN, LN, IN and GN each average over, after Figure 2 of the Group Normalization paper (Wu & He, 2018).

    python -m lab.norm_example                  # prints the tables quoted in the README
    python -m lab.norm_example --figure [PATH]  # draws the figure, by default into images/norm_groups.png
"""
import argparse

import torch

EPS = 1e-5
FIGURE = "images/norm_groups.png"
PAGE = "README.md"
# the worked example's words for what each normalization averages over, for x of shape (N, C, H, W)
AXES = {
    "BN": "over (N, H, W): 4 pairs, one per channel (channels 0-3), shared by both images",
    "GN": "over (C/2, H, W): 4 pairs, one per image and group of 2 channels (image 0's groups 0 and 1, then image 1's)",
    "LN": "over (C, H, W): 2 pairs, one per image (image 0, then image 1)",
}
# the figure's panels, in the paper's order: what each norm averages over, and how many statistics that gives
TITLES = {"BN": "BN: over (N, H, W)\none per channel", "LN": "LN: over (C, H, W)\none per image",
          "IN": "IN: over (H, W)\none per image and channel",
          "GN": "GN: over (C/G, H, W), G = {groups}\none per image and group"}
DEPTH = (0.5, 0.4)  # the figure's oblique projection: one step back along C moves this far right and up
# (unshaded, shaded) colour of a cell on each visible face of the block; the side and top a little darker and lighter
COLORS = {"front": ("#f7f7f7", "#4c72b0"), "top": ("#ffffff", "#7b9bd0"), "side": ("#e6e6e6", "#34507f")}


def stat_layout(name, channels, groups=2):
    """(G, dims): norm `name` views x (N, C, H, W) as (N, G, C/G, H*W) and averages over `dims` of that view.

    The one definition of the four norms: normalize computes them from it, and the figure shades them from it.
    """
    return {"BN": (channels, (0, 2, 3)), "LN": (1, (2, 3)), "IN": (channels, (2, 3)), "GN": (groups, (2, 3))}[name]


def example_input():
    """(2, 4, 2, 2): image n, channel c holds four small integers, so the arithmetic is easy to follow."""
    return torch.tensor([
        [[[1., 2.], [3., 4.]], [[0., 0.], [4., 4.]], [[2., 2.], [2., 6.]], [[1., 3.], [5., 7.]]],
        [[[5., 6.], [7., 8.]], [[2., 2.], [2., 2.]], [[0., 4.], [0., 4.]], [[3., 3.], [3., 7.]]],
    ])


def normalize(x, name, groups=2):
    """(output, means, variances) of norm `name` ("BN", "LN", "IN", or "GN" with `groups` groups) on x (N, C, H, W).

    Variances are biased (divide by the count), as BatchNorm2d and GroupNorm use them in training.
    """
    n, c, h, w = x.shape
    g, dims = stat_layout(name, c, groups)
    grouped = x.reshape(n, g, c // g, h * w)
    mean = grouped.mean(dim=dims, keepdim=True)
    var = grouped.var(dim=dims, unbiased=False, keepdim=True)
    out = ((grouped - mean) / (var + EPS).sqrt()).reshape(n, c, h, w)
    return out, mean.squeeze(dims), var.squeeze(dims)


def worked_example():
    """{name: (output, means, variances)} for BN, GN (2 groups) and LN on example_input()."""
    x = example_input()
    return {"BN": normalize(x, "BN"), "GN": normalize(x, "GN", groups=2), "LN": normalize(x, "LN")}


def fmt(values):
    return ", ".join(f"{v:.3g}" for v in values.flatten().tolist())


def markdown():
    """The input, then one row per norm: its statistics, and two channels after normalizing (gamma 1, beta 0)."""
    x = example_input()
    lines = ["Input x, shape (2, 4, 2, 2), each channel's 2x2 pixels read row by row:", "",
             "| image | channel 0 | channel 1 | channel 2 | channel 3 |", "|---|---|---|---|---|"]
    lines += [f"| {n} | " + " | ".join(fmt(x[n, c]) for c in range(4)) + " |" for n in range(2)]
    lines += ["", "| norm | statistics (a mean and a variance): over what, how many | means | variances "
              "| image 0, channel 0 becomes | image 1, channel 1 becomes |", "|---|---|---|---|---|---|"]
    for name, (out, mean, var) in worked_example().items():
        lines.append(f"| **{name}** | {AXES[name]} | {fmt(mean)} | {fmt(var)} | {fmt(out[0, 0])} | {fmt(out[1, 1])} |")
    return "\n".join(lines)


def norm_example_section(results):
    """The README's worked example: computed here, so it reads no results file."""
    return markdown()


SECTIONS = {"NORM_EXAMPLE": norm_example_section}  # block name -> the function that writes it


def shared_stats_mask(name, n, c, hw, groups=2):
    """(N, C, H*W) bools: the cells normalized with the same mean and variance as image 0, channel 0, pixel 0."""
    g, dims = stat_layout(name, c, groups)
    mask = torch.zeros(n, g, c // g, hw, dtype=torch.bool)
    mask[tuple(slice(None) if d in dims else 0 for d in range(4))] = True
    return mask.reshape(n, c, hw)


def visible_cells(mask):
    """(corners (n, c, s), shaded, face) of each cell seen on the block: front (channel 0), top, right (last image)."""
    n, c, hw = mask.shape
    cells = [([(i, 0, s), (i + 1, 0, s), (i + 1, 0, s + 1), (i, 0, s + 1)], mask[i, 0, s], "front")
             for i in range(n) for s in range(hw)]
    cells += [([(i, k, hw), (i + 1, k, hw), (i + 1, k + 1, hw), (i, k + 1, hw)], mask[i, k, hw - 1], "top")
              for i in range(n) for k in range(c)]
    cells += [([(n, k, s), (n, k + 1, s), (n, k + 1, s + 1), (n, k, s + 1)], mask[n - 1, k, s], "side")
              for k in range(c) for s in range(hw)]
    return cells


def draw_block(ax, mask, title):
    """The (N, C, H*W) block as in the paper: N to the right, C going back, H, W up; `mask`'s cells shaded."""
    n, c, hw = mask.shape
    for corners, shaded, face in visible_cells(mask):
        xs, ys = zip(*[(i + k * DEPTH[0], s + k * DEPTH[1]) for i, k, s in corners])
        ax.fill(xs, ys, facecolor=COLORS[face][int(shaded)], edgecolor="#555555", linewidth=0.6)
    ax.text(n / 2, -0.5, "N", ha="center", va="top")
    ax.text(-0.4, hw / 2, "H, W", ha="right", va="center", rotation=90)
    ax.text(n + c * DEPTH[0] / 2 + 0.4, c * DEPTH[1] / 2 - 0.2, "C", ha="left", va="top")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-1.2, n + c * DEPTH[0] + 1)
    ax.set_ylim(-1.1, hw + c * DEPTH[1] + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")


def draw_norm_groups(n=6, c=6, hw=5, groups=2):
    """Four panels, BN, LN, IN and GN: the block of n images x c channels x hw pixels, its shared statistics shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only where the figure is drawn
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 2.5), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (name, title) in zip(fig.subplots(1, 4), TITLES.items()):
        draw_block(ax, shared_stats_mask(name, n, c, hw, groups), title.format(groups=groups))
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print the worked example as Markdown, or draw the figure.")
    parser.add_argument("--figure", nargs="?", const=FIGURE, metavar="PATH",
                        help=f"draw what each norm averages over into PATH (default {FIGURE}) instead of printing")
    path = parser.parse_args(argv).figure
    if path is None:
        print(markdown())
    else:
        draw_norm_groups().savefig(path, dpi=150)


if __name__ == "__main__":
    main()
