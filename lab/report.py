"""Write the README's generated blocks from the committed result files, so the text can't drift from them.

    python report.py            # print every generated block
    python report.py --write    # rewrite the blocks in README.md and BENCHMARKS.md in place

Run it from the repo root: like every command here, it reads results/ and the docs relative to the
working folder.

A block is the text between `<!-- BEGIN NAME -->` and `<!-- END NAME -->`; tests/test_report.py
fails when one differs from what this file generates. Each experiment's blocks are written by its module
(lab/experiments.py lists them), the speed blocks by lab/bench_report.py, the model's table here.
"""
import argparse
import re
import sys
from pathlib import Path

from lab import bench_report
from lab.experiments import EXPERIMENTS, sections

# the pages no one experiment owns: the GN family's (study and sweep runs), and two that only link
SHARED_DOCS = ("docs/gn_family.md", "docs/many_runs.md", "docs/tests.md")
DOCS = tuple(dict.fromkeys(("README.md", "BENCHMARKS.md", *(e.PAGE for e in EXPERIMENTS), *SHARED_DOCS)))
BLOCK = re.compile(r"(<!-- BEGIN (\w+) -->\n)(.*?)(<!-- END \2 -->)", re.S)


def model_section(results):
    """The network's blocks, output shapes and parameters, from model.Net itself (BN; GN, LN and IN count the same)."""
    import torch  # the one section that builds the model
    from torch import nn

    from model import Net, count_parameters
    model, x = Net("bn").eval(), torch.zeros(1, 1, 28, 28)
    lines = ["| block | output (C, H, W) | parameters |", "|---|---|---:|"]
    with torch.no_grad():
        for layer in [*model.features, model.head]:
            x = layer(x)
            if isinstance(layer, nn.Sequential):
                k = layer[0].kernel_size[0]
                lines.append(f"| conv {k}x{k} → norm → ReLU | {', '.join(map(str, x.shape[1:]))} | "
                             f"{sum(p.numel() for p in layer.parameters()):,} |")
            elif not isinstance(layer, nn.Conv2d):  # pooling and dropout: no parameters, noted on the row above
                note = {"MaxPool2d": "then max-pool 2x2", "Dropout": "then dropout",
                        "AdaptiveAvgPool2d": "then global average pool"}[type(layer).__name__]
                row = lines[-1].split(" | ")
                lines[-1] = " | ".join([f"{row[0]}, {note}", ", ".join(map(str, x.shape[1:])), row[2]])
    lines.append(f"| head: conv 1x1 with bias | 10 logits | {sum(p.numel() for p in model.head.parameters()):,} |")
    lines.append(f"| **total** | | **{count_parameters(model):,}** |")
    return "\n".join(lines)


# block name -> the function that writes it
SECTIONS = {"MODEL": model_section, **sections(), **bench_report.SECTIONS}


def blocks(text):
    """{name: current body} of every generated block in `text`."""
    return {match[2]: match[3] for match in BLOCK.finditer(text)}


def render(text, results="results"):
    """`text` with every generated block rewritten from the result files in `results`."""
    def body(match):
        if match[2] not in SECTIONS:
            raise KeyError(f"unknown generated block {match[2]!r}; known: {', '.join(SECTIONS)}")
        return f"{match[1]}{SECTIONS[match[2]](results)}\n{match[4]}"
    return BLOCK.sub(body, text)


def write(root=".", results=None):
    """Rewrite the generated blocks of every doc in `root` from root/results; returns the paths that changed."""
    changed = []
    for name in DOCS:
        path = Path(root) / name
        text = path.read_text()
        new = render(text, results or Path(root) / "results")
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv=None):
    p = argparse.ArgumentParser(description="Generated README blocks from the committed result files.")
    p.add_argument("--write", action="store_true", help=f"rewrite the blocks in {' and '.join(DOCS)}")
    args = p.parse_args(argv)
    if args.write:
        for path in write():
            print(f"updated {path}")
        return 0
    for name, section in SECTIONS.items():
        print(f"<!-- BEGIN {name} -->\n{section('results')}\n<!-- END {name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
