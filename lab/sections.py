"""What the report sections share: reading a results file, and saying where and with which seeds its runs were made.

Each experiment's sections live in its module (its SECTIONS) and the speed sections in bench_report.py; this module
imports none of them, so they can all import it without a cycle through report.py.
"""
import functools
import json
from pathlib import Path


def read(results, name):
    """The results file `name` in the folder `results`, parsed."""
    return json.loads((Path(results) / name).read_text())


def needs(name, command):
    """A section that reads the results file `name`: called as section(results, that file), or, without the file,
    the line that says which command writes it."""
    def wrap(section):
        @functools.wraps(section)
        def run(results):
            if not (Path(results) / name).exists():
                return f"Not run yet: `{command}` writes `results/{name}`."
            return section(results, read(results, name))
        return run
    return wrap


def hardware_line(metrics):
    """Where a run was made: device, torch, and (recorded since the CPU mattered) CPU and torch threads."""
    where = f"device `{metrics['device']}`, torch {metrics['torch']}"
    if "cpu" in metrics:
        where += f", {metrics['cpu']}, {metrics['threads']} torch thread(s)"
    return where


def machines(runs):
    """'AMD EPYC' or 'AMD EPYC (9 runs), Intel(R) Xeon(R) Processor, family/model 6/207 (15 runs)': where the runs
    were made; a run with a fingerprint names its CPU family and model, so two CPUs of one name stay apart."""
    counts = {}
    for run in runs:
        cpu = run.get("cpu", "an unrecorded CPU")
        family_model = (run.get("fingerprint") or {}).get("family_model_stepping", "").rsplit("/", 1)[0]
        where = f"{cpu}, family/model {family_model}" if family_model else cpu
        counts[where] = counts.get(where, 0) + 1
    return counts.popitem()[0] if len(counts) == 1 else ", ".join(f"{c} ({n} runs)" for c, n in counts.items())


def where_line(runs):
    """'device `cpu`, torch 2.14.1, 1 torch thread per run, on AMD EPYC': where a results file's runs trained."""
    return f"device `{runs[0]['device']}`, torch {runs[0]['torch']}, 1 torch thread per run, on {machines(runs)}"


def seeds_line(runs):
    """'seeds 0, 1, 2' (or 'seed 0'): the seeds of these runs, each once, so a reader can tell which seeds a number
    averages."""
    seeds = sorted({r["config"]["seed"] for r in runs})
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"


def welch_table(pairs, family=None, unit="points"):
    """Markdown rows comparing groups of seeds that are not paired on one machine (docs/protocol.md, rule 7): for each
    (name_a, values_a, name_b, values_b) in `pairs`, the difference of means (A − B, in `unit`), Welch's interval at
    the level that a Bonferroni adjustment over `family` comparisons gives (default: the pairs given), and the verdict:
    "separated" when that interval excludes 0, else "not told apart" with the smallest difference these seeds
    would detect (80% power at that level). Values are lists, or {seed: value}. A pair with a fifth item True holds
    one set of models tested two ways, both sides {seed: value}: its interval is paired by seed, over each model's
    own difference, and its seeds column says "3 paired"."""
    from plumbing.stats import ALPHA, paired, welch
    family = family or len(pairs)
    level = f"{100 * (1 - ALPHA / family):.4g}%"
    method = "Welch; paired: one model tested two ways" if any(pair[4:] == (True,) for pair in pairs) else "Welch"
    lines = [f"| A − B | seeds | A | B | A − B ({unit}) | {level} interval ({method}) | verdict |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name_a, a, name_b, b, *same_models in pairs:
        if same_models == [True]:
            common = sorted(a.keys() & b.keys())  # each seed's model against itself
            a, b = [a[seed] for seed in common], [b[seed] for seed in common]
            result, seeds = paired(a, b, family=family), f"{len(a)} paired"
        else:
            a, b = (list(x.values()) if isinstance(x, dict) else x for x in (a, b))
            result, seeds = welch(a, b, alpha=ALPHA / family), f"{len(a)} + {len(b)}"
        verdict = ("**separated**" if result["separated"]
                   else f"not told apart (would detect {result['detectable']:.2f})")
        lines.append(f"| {name_a} − {name_b} | {seeds} | {sum(a) / len(a):.2f} | {sum(b) / len(b):.2f} | "
                     f"{result['difference']:+.2f} | {result['low']:+.2f} to {result['high']:+.2f} | {verdict} |")
    return "\n".join(lines)
