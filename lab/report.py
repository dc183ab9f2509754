"""Write the README's generated blocks from the committed result files, so the text can't drift from them.

    python report.py            # print every generated block
    python report.py --write    # rewrite the blocks in README.md and BENCHMARKS.md in place

Run it from the repo root: like every command here, it reads results/ and the docs relative to the
working folder.

A block is the text between `<!-- BEGIN NAME -->` and `<!-- END NAME -->`; tests/test_report.py
fails when one differs from what this file generates.
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from lab.lr_range import lr_range_table
from lab.norm_example import markdown as norm_example_markdown
from lab.shift import shift_table
from lab.study import pairwise_table, summary_table
from plumbing.config import COMPARED, GN_FAMILY, GN_FAMILY_ADDED, NORM_COSTS_FILE, TRAIN_IMAGES, VARIANTS
from lab.l1_weights import l1_weights_table
from plumbing.stats import ALPHA
from lab.study import pairwise
from lab.sweep import BASE_BATCH, EPOCHS, batch_size_table, best_rules, lr_rule_table
from plumbing.results import run_key

DOCS = ("README.md", "BENCHMARKS.md", "docs/study.md", "docs/batch_size.md", "docs/learning_rate.md",
        "docs/test_time.md", "docs/gn_family.md", "docs/many_runs.md", "docs/tests.md")
BLOCK = re.compile(r"(<!-- BEGIN (\w+) -->\n)(.*?)(<!-- END \2 -->)", re.S)


def hardware_line(metrics):
    """Where a run was made: device, torch, and (recorded since the CPU mattered) CPU and torch threads."""
    where = f"device `{metrics['device']}`, torch {metrics['torch']}"
    if "cpu" in metrics:
        where += f", {metrics['cpu']}, {metrics['threads']} torch thread(s)"
    return where


def read(results, name):
    return json.loads((Path(results) / name).read_text())


def study_section(results):
    study = read(results, "study.json")
    first = study["runs"][0]
    seconds = {label: s["mean_seconds_per_epoch"] for label, s in study["summary"].items()}
    return "\n".join([
        summary_table(study["summary"]), "",
        f"From `results/study.json`: {len(study['runs'])} runs of {len(first['epochs'])} epochs ({seeds_line(study['runs'])}), "
        f"{where_line(study['runs'])}; "
        f"mean seconds per epoch (train + test, two runs sharing the 2 cores) "
        + ", ".join(f"{label} {s:.1f}" for label, s in seconds.items()) + ".",
    ])


def l1_sweep_section(results):
    runs = sorted((json.loads(p.read_text()) for p in (Path(results) / "l1_sweep").glob("*.json")),
                  key=lambda m: m["config"]["l1"])
    lines = ["| L1 lambda | validation acc, last epoch | validation loss | test acc (reported only) |",
             "|---:|---:|---:|---:|"]
    for m in runs:
        last = m["epochs"][-1]
        lines.append(f"| {m['config']['l1']:g} | {last['val_acc']:.2f}% | {last['val_loss']:.4f} "
                     f"| {last['test_acc']:.2f}% |")
    return "\n".join(lines)


def speed_section(results):
    report = read(results, "bench_cpu.json")
    hw, args = report["hardware"], report["args"]
    lines = [(f"{hw['processor']}, {hw['cpu_count']} cores ({hw['torch_threads']} torch threads), torch "
              f"{hw['torch']}; batch {args['batch_size']}; {args['rounds']} rounds x {args['steps']} timed "
              f"training steps and one test pass per pipeline, after {args['warmup']} warm-up steps; medians:"), "",
             "| pipeline | train s/epoch (60k) | test s/pass (10k) | epoch s | train images/s | peak memory MiB "
             "| % of matmul peak |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['train_epoch_s']:.2f} | {r['test_pass_s']:.2f} | {r['epoch_s']:.2f} | "
                     f"{r['train_images_per_s']:,.0f} | {r['peak_memory_mb']:,.0f} | "
                     f"{100 * r['fraction_of_matmul_peak']:.0f}% |")
    per_round = ", ".join(f"{r:.2f}" for r in report["round_ratios"])
    lines += ["", (f"ratio classic/ours per epoch (train + test): **{report['ratio_classic_over_ours']:.2f}** "
                   f"(per round: {per_round}); classic/model, the most any data pipeline could reach: "
                   f"**{report['ratio_classic_over_model']:.2f}**; "
                   f"{report['flops_per_training_image'] / 1e6:.1f} MFLOP per training image; measured fp32 "
                   f"matmul peak {report['matmul_peak_tflops'] * 1000:.0f} GFLOP/s.")]
    return "\n".join(lines)


def levers_section(results):
    """One row per bench_cpu*.json: model, lever, epoch times and the ratio measured in that run."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(results).glob("bench_cpu*.json"))]
    runs = [run for run in runs if "round_ratios" in run]  # not the --norm-costs file
    runs.sort(key=lambda r: (r["args"]["norm"] != "bn", r["args"]["norm"], r["args"]["lever"] != "none",
                             r["args"]["lever"], r["args"]["malloc"] != "keep"))
    lines = ["| model | lever (on ours and model) | ours epoch s | model epoch s | classic epoch s "
             "| ratio classic/ours | its rounds range |", "|---|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        r, per_round = run["results"], run["round_ratios"]
        lever = run["args"]["lever"] + (", glibc's malloc defaults" if run["args"]["malloc"] == "default" else "")
        lines.append(f"| {run['args']['norm'].upper()} | {lever} | {r['ours']['epoch_s']:.2f} | "
                     f"{r['model']['epoch_s']:.2f} | "
                     f"{r['classic']['epoch_s']:.2f} | {run['ratio_classic_over_ours']:.2f} | "
                     f"{min(per_round):.2f}-{max(per_round):.2f} |")
    return "\n".join(lines)


def compile_section(results, study_name="study_amd_epyc.json"):
    """The `--compile` run next to the plain study run with the same config and seed, made on the same machine."""
    compiled = read(results, "compile_gn_seed0.json")
    config = {k: v for k, v in compiled["config"].items() if k not in ("compile", "data_dir", "device")}
    plain = next(run for run in read(results, study_name)["runs"]
                 if all(run["config"].get(k) == v for k, v in config.items()))
    lines = ["| GN, seed 0, 20 epochs | final test acc | best test acc | epoch 1 s | median s, epochs 2-20 |",
             "|---|---:|---:|---:|---:|"]
    for label, run in ((f"plain (in `results/{study_name}`)", plain), ("`--compile`", compiled)):
        epochs = run["epochs"]
        lines.append(f"| {label} | {epochs[-1]['test_acc']:.2f}% | {max(e['test_acc'] for e in epochs):.2f}% | "
                     f"{epochs[0]['seconds']:.1f} | {statistics.median(e['seconds'] for e in epochs[1:]):.1f} |")
    return "\n".join(lines)


def batch_size_section(results):
    """The sweep of BN, GN and LN (the norms added later, at fewer batch sizes, are on the GN-family page)."""
    sweep = read(results, "batch_size_sweep.json")
    runs = [run for run in sweep["runs"] if run_key(run) in COMPARED]
    first = runs[0]
    return "\n".join([
        batch_size_table([e for e in sweep["summary"] if e["norm"] in COMPARED]), "",
        f"From `results/batch_size_sweep.json`: {len(runs)} runs of {first['config']['epochs']} epochs "
        f"({seeds_line(runs)}; mean ± std over seeds), {hardware_line(first)} per run; "
        f"{sum(row['seconds'] for run in runs for row in run['epochs']) / 3600:.1f} hours of training and "
        f"testing in all, two or three runs at a time on the 2-core machine."])


def lr_rule_section(results):
    return lr_rule_table(read(results, "batch_size_lr_rule.json")["summary"])


def speed_summary_section(results):
    """Two sentences for the README: our epoch, the classic one, and the bare model step."""
    report = read(results, "bench_cpu.json")
    r, hw = report["results"], report["hardware"]
    return (f"On {hw['processor']} ({hw['cpu_count']} cores, torch {hw['torch']}) a training epoch plus a test pass "
            f"takes {r['ours']['epoch_s']:.1f} s with this repo's pipeline and {r['classic']['epoch_s']:.1f} s with "
            f"the classic per-image DataLoader: {report['ratio_classic_over_ours']:.2f}x (median of "
            f"{len(report['round_ratios'])} alternating rounds). The bare model step alone takes "
            f"{r['model']['epoch_s']:.1f} s, so no data pipeline could do better than "
            f"{report['ratio_classic_over_model']:.2f}x here.")


def norm_costs_section(results):
    """Seconds per training epoch and inference images/s of each norm at each batch size (bench.py norms)."""
    report = read(results, NORM_COSTS_FILE)
    results, hw, args = report["results"], report["hardware"], report["args"]
    norms = list(results)
    lines = ["| batch | " + " | ".join(f"{n.upper()} train s/epoch" for n in norms) + " | "
             + " | ".join(f"{n.upper()} inference images/s" for n in norms) + " |",
             "|---:|" + "---:|" * (2 * len(norms))]
    for b in results[norms[0]]:
        lines.append(f"| {b} | " + " | ".join(f"{results[n][b]['train_epoch_s']:.1f}" for n in norms) + " | "
                     + " | ".join(f"{results[n][b]['inference_images_per_s']:,.0f}" for n in norms) + " |")
    lines += ["", f"From `results/{NORM_COSTS_FILE}`: {hw['processor']}, {hw['torch_threads']} torch threads, "
                  f"torch {hw['torch']}; the bare model step on one fixed batch (no data pipeline), medians of "
                  f"{args['rounds']} rounds in which the norms take turns; a training epoch is 60,000 images."]
    return "\n".join(lines)


def machines(runs):
    """'AMD EPYC' or 'AMD EPYC (9 runs), Intel(R) Xeon(R) Processor, family/model 6/207 (15 runs)': where the runs
    were made; a run with a fingerprint names its CPU family and model, so two CPUs of one name stay apart."""
    counts = {}
    for run in runs:
        cpu = run.get("cpu", "an unrecorded CPU")
        family_model = run.get("fingerprint", {}).get("family_model_stepping", "").rsplit("/", 1)[0]
        where = f"{cpu}, family/model {family_model}" if family_model else cpu
        counts[where] = counts.get(where, 0) + 1
    return counts.popitem()[0] if len(counts) == 1 else ", ".join(f"{c} ({n} runs)" for c, n in counts.items())


def where_line(runs):
    """'device `cpu`, torch 2.14.1, 1 torch thread per run, on AMD EPYC': where a results file's runs trained."""
    return f"device `{runs[0]['device']}`, torch {runs[0]['torch']}, 1 torch thread per run, on {machines(runs)}"


def seeds_line(runs):
    seeds = sorted({r["config"]["seed"] for r in runs})
    return f"seeds {', '.join(map(str, seeds))}"


def lr_range_section(results):
    lr = read(results, "lr_range.json")
    runs, first = lr["runs"], lr["runs"][0]
    diverged = sum("diverged" in run for run in runs)
    return "\n".join([
        lr_range_table(lr["summary"]), "",
        f"From `results/lr_range.json`: {len(runs)} runs of {first['config']['epochs']} epochs at batch "
        f"{first['config']['batch_size']} ({seeds_line(runs)}; mean ± std over seeds; {diverged} diverged), "
        f"device `{first['device']}`, torch {first['torch']}, {first['threads']} torch thread per run, on "
        f"{machines(runs)}. ✓: usable, a mean test error within 1.5x of that norm's best."])


def equal_steps_section(results):
    equal = read_if_run(results, "batch_size_equal_steps.json", "python -m lab.sweep --equal-steps")
    if isinstance(equal, str):
        return equal
    return "\n".join([batch_size_table(equal["summary"]), "",
                      f"From `results/batch_size_equal_steps.json`: {equal_steps_line(equal)}."])


def own_lr_section(results):
    own = read_if_run(results, "batch_size_own_lr.json", "python -m lab.sweep --own-lr")
    if isinstance(own, str):
        return own
    rules = read(results, "batch_size_lr_rule.json")["summary"]
    chosen = sorted({(e["norm"], e["batch_size"]) for e in own["summary"]})
    return "\n".join([
        batch_size_table(own["summary"]), "",
        "From `results/batch_size_own_lr.json`: "
        + ", ".join(f"{n.upper()} with the '{best_rules(rules, b)[n]}' rule (its best at batch {b})" for n, b in chosen)
        + f" in `results/batch_size_lr_rule.json`; {equal_steps_line(own)}."])


def read_if_run(results, name, command):
    """The results file `name`, or the line that says which command writes it."""
    if not (Path(results) / name).exists():
        return f"Not run yet: `{command}` writes `results/{name}`."
    return read(results, name)


def equal_steps_line(results_file):
    """Runs, seeds and spread, steps and hardware of an equal-steps results file."""
    runs, summary = results_file["runs"], results_file["summary"]
    counts = {len(e["seeds"]) for e in summary}
    spread = f"mean ± std over {counts.pop()} seeds" if len(counts) == 1 else (
        "mean ± std over the seeds each point has: "
        + ", ".join(f"{e['norm'].upper()} at {e['batch_size']}: {len(e['seeds'])}" for e in summary)
        + "; a point with one seed shows ± 0.00")
    return (f"{len(runs)} runs ({seeds_line(runs)}; {spread}), each for about the steps of {EPOCHS} epochs at "
            f"batch {BASE_BATCH} ({steps_line(runs)}), {hardware_line(runs[0])} per run")


def steps_line(runs, train_images=TRAIN_IMAGES):
    """The optimizer steps of these runs: full batches per epoch (the last partial one is dropped) x epochs."""
    def steps(c):
        images = min(train_images - c["val_split"], c["train_subset"] or train_images)
        return c["epochs"] * (images // c["batch_size"])
    points = sorted({(r["config"]["batch_size"], steps(r["config"])) for r in runs})
    return (", ".join(f"{s:,} at {b}" for b, s in points)
            + f" against {EPOCHS * (train_images // BASE_BATCH):,} at {BASE_BATCH}")


def shift_section(results):
    shift = read(results, "shift.json")
    rows = shift["results"]
    models = {(r["variant"], r["seed"]) for r in rows}
    return "\n".join([
        shift_table(shift["summary"]), "",
        f"From `results/shift.json`: {len(models)} models (the study's and BN's, {len(models) // 4} seeds each) "
        f"on the 10,000 test images under every shift; test accuracy %, mean ± std over seeds; {shift['cpu']}, "
        f"torch {shift['torch']}, {shift['threads']} torch thread."])


def inference_section(results):
    report = read(results, "bench_cpu_inference.json")
    hw, res = report["hardware"], report["results"]
    names = {"bn": "BN", "bn_folded": "BN folded", "gn": "GN", "ln": "LN"}
    lines = ["| batch | " + " | ".join(f"{names.get(n, n)} images/s" for n in res) + " |",
             "|---:|" + "---:|" * len(res)]
    for b in res[next(iter(res))]:
        lines.append(f"| {b} | " + " | ".join(f"{res[n][b]['images_per_s']:,.0f}" for n in res) + " |")
    lines += ["", f"From `results/bench_cpu_inference.json`: {hw['processor']}, {hw['torch_threads']} torch "
                  f"thread(s), torch {hw['torch']}; medians of {report['args']['rounds']} rounds in which the four "
                  f"take turns. Folded BN's logits differ from BN's by at most "
                  f"{report['folded_max_abs_logit_difference']:.1e} (1,000 random inputs)."]
    return "\n".join(lines)


def workers_section(results):
    report = read(results, "bench_cpu_workers.json")
    hw, walls = report["hardware"], report["wall_s"]
    rows = ["| | " + " | ".join(f"round {i + 1}" for i in range(len(walls["1"]))) + " | median |",
            "|---|" + "---:|" * (len(walls["1"]) + 1)]
    for w in ("1", "2"):
        rows.append(f"| `--workers {w}`, s | " + " | ".join(f"{t:.1f}" for t in walls[w])
                    + f" | **{report['median_wall_s'][w]:.1f}** |")
    return "\n".join(rows + [
        "", f"From `results/bench_cpu_workers.json`: {len(report['runs'])} runs ({', '.join(report['runs'])}), "
            f"{report['epochs']} epoch on {report['train_subset']:,} images each, on {hw['processor']} with "
            f"{hw['cpu_count']} cores, torch {hw['torch']}; rounds alternate which goes first. Speed-up "
            f"**{report['speedup']:.2f}x**; " + ray_start(report) + f"the two give the same accuracies: {'yes' if report['same_accuracies'] else 'NO'}."])


def notebook_section(results):
    """Run all of the notebook with its defaults (bench.py notebook), beside the bound the bare step sets."""
    report, bare = read(results, "bench_cpu_notebook.json"), read(results, "bench_cpu_one_thread.json")
    runs, machine = report["runs"], report["runs"][0]["fingerprint"]
    epochs = sum(run["epochs"] for run in runs)
    bare_epoch = bare["results"]["model"]["epoch_s"]
    alone = max(run["epochs"] for run in runs) * bare_epoch  # the last run trains alone: one core idles
    rows = ["| run | epochs | final test acc | s of training and testing |", "|---|---:|---:|---:|"]
    rows += [f"| {run['variant']} seed {run['seed']} | {run['epochs']} | {run['test_acc']:.2f}% | {run['seconds']:.0f} |"
             for run in runs]
    return "\n".join(rows + [
        "", f"**Run all: {report['wall_s'] / 60:.1f} min** ({report['wall_s']:,.0f} s, from the kernel's start to its "
            f"end), the notebook's defaults in a fresh clone of {report['commit']}, MNIST present, nothing else running, "
            f"on {report['hardware']['processor']} (family/model {machine['family_model_stepping'].rsplit('/', 1)[0]}) "
            f"with {report['hardware']['cpu_count']} cores, torch {report['hardware']['torch']} "
            f"(`results/bench_cpu_notebook.json`). The bound: {epochs} epochs x the bare model step's epoch on one "
            f"thread ({bare_epoch:.1f} s, BN, `results/bench_cpu_one_thread.json`, another machine: torch "
            f"{bare['hardware']['torch']}) / {report['hardware']['cpu_count']} cores = "
            f"{epochs * bare_epoch / report['hardware']['cpu_count'] / 60:.1f} min if both cores were busy to the "
            f"end; with three runs on two cores the last trains alone, so {(2 * alone) / 60:.1f} min."])


def ray_start(report):
    """What a workers file measured of Ray's start-up (files from before the forked workers)."""
    if "ray_start_s" not in report:
        return ""
    return (f"Ray's start-up (timed apart, not in the rounds): median {report['median_ray_start_s']:.1f} s of "
            f"{', '.join(f'{t:.1f}' for t in report['ray_start_s'])}; ")


def command_section(results):
    """Every `bench.py command` file: `python main.py --norm all` from a cold start at one and two workers."""
    paths = sorted(Path(results).glob("bench_cpu_command_*.json"))
    if not paths:
        return "Not run yet: `python bench.py command`."
    rows = ["| command | checkout | `--workers 1`, s | `--workers 2`, s | speed-up | s inside the runs' epochs (1 / 2 workers) "
            "| same numbers |", "|---|---|---:|---:|---:|---:|---|"]
    for path in paths:
        r = json.loads(path.read_text())
        seconds = r["epoch_seconds_sum"]
        rows.append(f"| `{r['command']}` | {r.get('commit') or '?'} | {r['median_wall_s']['1']:.1f} | "
                    f"{r['median_wall_s']['2']:.1f} | **{r['speedup']:.2f}x** | "
                    f"{statistics.median(seconds['1']):.0f} / {statistics.median(seconds['2']):.0f} | "
                    f"{'yes' if r['same_accuracies'] else 'NO'} |")
    hw = json.loads(paths[0].read_text())["hardware"]
    rounds = sorted({len(json.loads(p.read_text())["wall_s"]["1"]) for p in paths})
    return "\n".join(rows + ["", f"From `results/bench_cpu_command_*.json`: each a fresh `python main.py` process "
                              f"(the workers' start, Ray's or a fork, their imports and MNIST loads, the figures drawn after "
                              f"the runs all included), median of {'/'.join(map(str, rounds))} round(s) with the order alternating, "
                              f"on {hw['processor']} with {hw['cpu_count']} cores, torch {hw['torch']}, nothing else "
                              f"running."])


def seeds_section(results):
    """The study's pairwise differences over every seed it holds, and where the seeds were trained."""
    study = read(results, "study.json")
    runs, summary = study["runs"], study["summary"]
    fingerprints = {json.dumps(run.get("fingerprint"), sort_keys=True) for run in runs if "fingerprint" in run}
    unprinted = sum("fingerprint" not in run for run in runs)
    where = f"{machines(runs)}" + (f"; {len(fingerprints)} distinct fingerprint(s) among the runs that record one, "
                                   f"{unprinted} runs from before fingerprints" if fingerprints else "")
    pairs = pairwise(summary)
    widest = max((p["detectable"] for p in pairs), default=float("nan"))
    return "\n".join([
        pairwise_table(summary), "",
        f"From `results/study.json`: {len(runs)} runs ({seeds_line(runs)}); trained on {where}. "
        f"{sum(p['separated'] for p in pairs)} of {len(pairs)} pairs have a {100 * (1 - ALPHA):.0f}% interval that "
        f"excludes 0 ({sum(p['corrected'] for p in pairs)} after a Bonferroni correction for {len(pairs)} "
        f"comparisons); these seeds could detect a true difference of about {widest:.2f} points or more "
        f"(the largest of the pairs' detectable differences)."])


def l1_weights_section(results):
    l1 = read_if_run(results, "l1_weights.json", "python -m lab.l1_weights")
    if isinstance(l1, str):
        return l1
    bn, with_l1 = l1["layers"]["BN"], l1["layers"]["BN+L1"]

    def apart(layer, key):  # the seeds' min-max ranges do not overlap
        a, b = bn[layer][key]["values"], with_l1[layer][key]["values"]
        return max(a) < min(b) or max(b) < min(a)
    convs = [name for name in bn if name != "head"]
    return "\n".join([
        l1_weights_table(l1), "",
        f"From `results/l1_weights.json` (seeds {', '.join(map(str, l1['seeds']))}, lambda {l1['l1_lambda']:g}): "
        f"the L2 norm is separated between BN and BN+L1 in {sum(apart(n, 'l2') for n in convs)} of {len(convs)} "
        f"normalized convs, the near-zero share in {sum(apart(n, 'near_zero_percent') for n in convs)} of {len(convs)}; "
        f"the head's L2 norm is {'separated' if apart('head', 'l2') else 'not separated'}."])


def no_norm_section(results):
    """No normalization at the study's recipe, in one table with the study's variants."""
    none = read_if_run(results, "study_none.json", "python main.py --norm all --variants none --seeds 0 1 2")
    if isinstance(none, str):
        return none
    study = read(results, "study.json")["summary"]
    return "\n".join([
        summary_table({**none["summary"], **study}), "",
        f"From `results/study_none.json` ({len(none['runs'])} runs, {seeds_line(none['runs'])}, "
        f"{hardware_line(none['runs'][0])}) and `results/study.json` (every seed it holds)."])


def gn_family_section(results):
    """Test accuracy against the number of groups (LN 1, GN(2) 2, GN 4, IN one per channel) at each batch size."""
    sweep = read_if_run(results, "batch_size_sweep.json", "python -m lab.sweep")
    entries = {} if isinstance(sweep, str) else {(e["norm"], e["batch_size"]): e for e in sweep["summary"]}
    sizes = sorted({b for n, b in entries if n in ("gn2", "in")})
    if not sizes:
        return "Not run yet: `python -m lab.sweep --norms gn2 in --batch-sizes 2 8 64 512` adds them to `results/batch_size_sweep.json`."
    from lab.sweep import acc_cell
    lines = ["| batch | epochs | " + " | ".join(f"{VARIANTS[n].label} ({GROUPS[n]})" for n in GN_FAMILY) + " |",
             "|---:|---:|" + "---:|" * len(GN_FAMILY)]
    for b in sizes:
        lines.append(f"| {b} | {entries[('gn2', b)]['epochs'] if ('gn2', b) in entries else '-'} | "
                     + " | ".join(acc_cell(entries.get((n, b))) for n in GN_FAMILY) + " |")
    runs = [run for run in sweep["runs"] if run_key(run) in GN_FAMILY_ADDED]
    return "\n".join(lines + ["", f"Test accuracy %, mean ± std over seeds, from `results/batch_size_sweep.json` "
                               f"(the sweep's recipe: 3 epochs, peak LR 0.01). GN(2) and IN: {len(runs)} runs "
                               f"({seeds_line(runs)}), {where_line(runs)}; LN and GN are the sweep's own runs."])


def gn_family_study_section(results):
    """GN(2) and IN at the study's recipe, in one table (and the pairwise Welch table) with LN and GN."""
    family = read_if_run(results, "study_gn2_in.json", "python main.py --norm all --variants gn2 in --seeds 0 1 2")
    if isinstance(family, str):
        return family
    study = read(results, "study.json")["summary"]
    by_groups = {label: summary[label] for label, summary in
                 (("LN", study), ("GN(2)", family["summary"]), ("GN", study), ("IN", family["summary"]))
                 if label in summary}
    runs = family["runs"]
    return "\n".join([
        summary_table(by_groups), "", pairwise_table(by_groups), "",
        f"From `results/study_gn2_in.json` ({len(runs)} runs, {seeds_line(runs)}, {where_line(runs)}) and "
        f"`results/study.json` (LN and GN, every seed it holds); in the order of the groups: 1 (LN), 2, 4 (GN), one "
        f"channel per group (IN)."])


def model_section(results):
    """The network's blocks, output shapes and parameters, computed from model.Net (BN; GN, LN and IN count the same)."""
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


GROUPS = {"ln": "1 group", "gn2": "2 groups", "gn": "4 groups", "in": "1 channel per group"}


# block name -> the function that writes it
SECTIONS = {"NORM_EXAMPLE": lambda results: norm_example_markdown(), "RESULTS": study_section, "L1_SWEEP": l1_sweep_section,
            "SPEED_SUMMARY": speed_summary_section,
            "SPEED": speed_section, "LEVERS": levers_section, "COMPILE": compile_section,
            "BATCH_SIZE": batch_size_section, "LR_RULE": lr_rule_section, "NORM_COSTS": norm_costs_section,
            "LR_RANGE": lr_range_section, "EQUAL_STEPS": equal_steps_section, "OWN_LR": own_lr_section,
            "SHIFT": shift_section,
            "INFERENCE": inference_section, "WORKERS": workers_section, "COMMAND": command_section,
            "NOTEBOOK": notebook_section,
            "SEEDS": seeds_section, "L1_WEIGHTS": l1_weights_section, "NO_NORM": no_norm_section,
            "GN_FAMILY": gn_family_section, "GN_FAMILY_STUDY": gn_family_study_section, "MODEL": model_section}


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
