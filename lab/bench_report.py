"""The speed sections: the README's and BENCHMARKS.md's tables from bench.py's result files (and the `--compile`
run beside the study's), for report.py to write. bench.py's jobs themselves are in lab/bench/.
"""
import json
import statistics
from pathlib import Path

from lab.sections import read
from plumbing.config import NORM_COSTS_FILE, VARIANTS


def processor(hw):
    """'AMD EPYC' or, where the file records the CPU's fingerprint, 'AMD EPYC (family/model 25/17)'."""
    family_model = hw.get("fingerprint", {}).get("family_model_stepping", "").rsplit("/", 1)[0]
    return f"{hw['processor']} (family/model {family_model})" if family_model else hw["processor"]


def speed_summary_section(results):
    """Two sentences for the README: our epoch, the classic one, and the bare model step."""
    report = read(results, "bench_cpu.json")
    r, hw = report["results"], report["hardware"]
    return (f"On {processor(hw)} ({hw['cpu_count']} cores, torch {hw['torch']}) a training epoch plus a test pass "
            f"takes {r['ours']['epoch_s']:.1f} s with this repo's pipeline and {r['classic']['epoch_s']:.1f} s with "
            f"the classic per-image DataLoader: {report['ratio_classic_over_ours']:.2f}x (median of "
            f"{len(report['round_ratios'])} alternating rounds). The bare model step alone takes "
            f"{r['model']['epoch_s']:.1f} s, so no data pipeline could do better than "
            f"{report['ratio_classic_over_model']:.2f}x here.")


def speed_section(results):
    report = read(results, "bench_cpu.json")
    hw, args = report["hardware"], report["args"]
    lines = [(f"{processor(hw)}, {hw['cpu_count']} cores ({hw['torch_threads']} torch threads), torch "
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


def norm_costs_section(results):
    """Seconds per training epoch (one table) and inference images/s (another) of each norm at each batch size
    (bench.py norms), the norms as columns."""
    report = read(results, NORM_COSTS_FILE)
    results, hw, args = report["results"], report["hardware"], report["args"]
    norms = list(results)
    head = "| batch | " + " | ".join(VARIANTS[n].label for n in norms) + " |\n|---:|" + "---:|" * len(norms)

    def table(key, cell):
        return "\n".join([head] + [f"| {b} | " + " | ".join(cell(results[n][b][key]) for n in norms) + " |"
                                   for b in results[norms[0]]])
    return "\n".join([
        "*Seconds per training epoch:*", "", table("train_epoch_s", lambda v: f"{v:.1f}"), "",
        "*Inference, images per second:*", "", table("inference_images_per_s", lambda v: f"{v:,.0f}"), "",
        f"From `results/{NORM_COSTS_FILE}`: {processor(hw)}, {hw['torch_threads']} torch threads, "
        f"torch {hw['torch']}; the bare model step on one fixed batch (no data pipeline), medians of "
        f"{args['rounds']} rounds in which the norms take turns; a training epoch is 60,000 images."])


def inference_section(results):
    report = read(results, "bench_cpu_inference.json")
    hw, res = report["hardware"], report["results"]
    names = {"bn": "BN", "bn_folded": "BN folded", "gn": "GN", "ln": "LN"}
    lines = ["| batch | " + " | ".join(f"{names.get(n, n)} images/s" for n in res) + " |",
             "|---:|" + "---:|" * len(res)]
    for b in res[next(iter(res))]:
        lines.append(f"| {b} | " + " | ".join(f"{res[n][b]['images_per_s']:,.0f}" for n in res) + " |")
    lines += ["", f"From `results/bench_cpu_inference.json`: {processor(hw)}, {hw['torch_threads']} torch "
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
            f"{report['epochs']} epoch on {report['train_subset']:,} images each, on {processor(hw)} with "
            f"{hw['cpu_count']} cores, torch {hw['torch']}; rounds alternate which goes first. Speed-up "
            f"**{report['speedup']:.2f}x**; " + ray_start(report)
            + f"the two give the same accuracies: {'yes' if report['same_accuracies'] else 'NO'}."])


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
    rows = ["| command | checkout | `--workers 1`, s | `--workers 2`, s | speed-up "
            "| s inside the runs' epochs (1 / 2 workers) | same numbers |", "|---|---|---:|---:|---:|---:|---|"]
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
                              f"(the workers' start, Ray's or a fork, their imports and MNIST loads, the figures drawn "
                              f"after the runs all included), median of {'/'.join(map(str, rounds))} round(s) with the "
                              f"order alternating, on {processor(hw)} with {hw['cpu_count']} cores, torch "
                              f"{hw['torch']}, nothing else running."])


def notebook_section(results):
    """Run all of the notebook with its defaults (bench.py notebook), beside the bound the bare step sets."""
    report, bare = read(results, "bench_cpu_notebook.json"), read(results, "bench_cpu_one_thread.json")
    runs, machine = report["runs"], report["runs"][0]["fingerprint"]
    epochs = sum(run["epochs"] for run in runs)
    bare_epoch = bare["results"]["model"]["epoch_s"]
    alone = max(run["epochs"] for run in runs) * bare_epoch  # the last run trains alone: one core idles
    rows = ["| run | epochs | final test acc | s of training and testing |", "|---|---:|---:|---:|"]
    rows += [f"| {run['variant']} seed {run['seed']} | {run['epochs']} | {run['test_acc']:.2f}% "
             f"| {run['seconds']:.0f} |" for run in runs]
    return "\n".join(rows + [
        "", f"**Run all: {report['wall_s'] / 60:.1f} min** ({report['wall_s']:,.0f} s, from the kernel's start to its "
            f"end), the notebook's defaults in a fresh clone of {report['commit']}, MNIST present, nothing else "
            f"running, "
            f"on {report['hardware']['processor']} (family/model {machine['family_model_stepping'].rsplit('/', 1)[0]}) "
            f"with {report['hardware']['cpu_count']} cores, torch {report['hardware']['torch']} "
            f"(`results/bench_cpu_notebook.json`). The bound: {epochs} epochs x the bare model step's epoch on one "
            f"thread ({bare_epoch:.1f} s, BN, `results/bench_cpu_one_thread.json`, another machine: torch "
            f"{bare['hardware']['torch']}) / {report['hardware']['cpu_count']} cores = "
            f"{epochs * bare_epoch / report['hardware']['cpu_count'] / 60:.1f} min if both cores were busy to the "
            f"end; with three runs on two cores the last trains alone, so {(2 * alone) / 60:.1f} min."])


# block name -> the function that writes it
SECTIONS = {"SPEED_SUMMARY": speed_summary_section, "SPEED": speed_section, "LEVERS": levers_section,
            "COMPILE": compile_section, "NORM_COSTS": norm_costs_section, "INFERENCE": inference_section,
            "WORKERS": workers_section, "COMMAND": command_section, "NOTEBOOK": notebook_section}
