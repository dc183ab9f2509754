"""report.py: the docs quote the committed result files word for word; every generated block is current."""
import re
import shutil

import pytest

from lab import bench_report, experiments, l1_weights, report, sections, shift, study, sweep
from conftest import ROOT
from plumbing.stats import t_quantile

RESULTS = ROOT / "results"


def doc_blocks(root=ROOT):
    """{block name: (doc, body)} over every doc."""
    return {name: (doc, body) for doc in report.DOCS
            for name, body in report.blocks((root / doc).read_text()).items()}


@pytest.mark.parametrize("name", report.SECTIONS)  # names only: a missing results file fails one test, not collection
def test_generated_block_is_current(name):
    assert name in doc_blocks(), f"no <!-- BEGIN {name} --> block in {', '.join(report.DOCS)}"
    doc, body = doc_blocks()[name]
    assert body == report.SECTIONS[name](RESULTS) + "\n", f"{doc} is out of date ({name}): run python report.py --write"


def docs_copy(folder):
    """The docs copied into `folder` and brought up to date (whether the committed ones are is tested above)."""
    for doc in report.DOCS:
        (folder / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / doc, folder / doc)
    report.write(folder, RESULTS)
    return folder


def test_write_replaces_stale_blocks_and_nothing_else(tmp_path):
    readme = docs_copy(tmp_path) / "README.md"
    text = readme.read_text()
    doc, body = doc_blocks(tmp_path)["RESULTS"]
    readme.write_text(text.replace(body, "| stale | table |\n"))
    assert report.write(tmp_path, RESULTS) == [readme]
    assert readme.read_text() == text
    assert report.write(tmp_path, RESULTS) == []


def test_write_reads_the_results_folder_beside_the_docs(tmp_path):
    docs_copy(tmp_path)
    shutil.copytree(RESULTS, tmp_path / "results")
    assert report.write(tmp_path) == []  # root/results is a copy of the same files: nothing to change
    (tmp_path / "results" / "study.json").unlink()
    with pytest.raises(FileNotFoundError, match="study.json"):
        report.write(tmp_path)


def test_steps_line_counts_full_batches_only():
    runs = [{"config": {"batch_size": b, "epochs": e, "val_split": 0, "train_subset": 0}}
            for b, e in ((128, 6), (512, 24))]
    assert sweep.steps_line(runs) == "2,808 at 128, 2,808 at 512 against 2,811 at 64"  # 468 x 6, 117 x 24; 937 x 3
    held_out = [{"config": {"batch_size": 100, "epochs": 2, "val_split": 10_000, "train_subset": 0}}]
    assert sweep.steps_line(held_out).startswith("1,000 at 100")


# the generated blocks the README held before it was split into pages: each lives on some page now
BLOCKS_OF_THE_OLD_README = ("RESULTS", "BATCH_SIZE", "LR_RULE", "EQUAL_STEPS", "OWN_LR", "LR_RANGE", "SHIFT",
                            "NORM_EXAMPLE", "L1_SWEEP", "SPEED_SUMMARY")
BLOCKS_OF_BENCHMARKS = ("SPEED", "LEVERS", "COMPILE", "NORM_COSTS", "WORKERS", "INFERENCE")


def test_no_generated_block_was_lost():
    found = doc_blocks()
    assert set(BLOCKS_OF_THE_OLD_README + BLOCKS_OF_BENCHMARKS) <= set(found)
    assert all(found[name][0] == "BENCHMARKS.md" for name in BLOCKS_OF_BENCHMARKS)


def test_no_block_has_two_writers():
    owners = [{"MODEL"}, set(bench_report.SECTIONS), *(set(e.SECTIONS) for e in experiments.EXPERIMENTS)]
    assert sum(map(len, owners)) == len(report.SECTIONS)  # a block claimed twice: one writer would hide the other


@pytest.mark.parametrize("experiment", experiments.EXPERIMENTS, ids=lambda e: e.__name__)
def test_each_experiments_page_is_rewritten_and_holds_its_blocks(experiment):
    assert experiment.PAGE in report.DOCS
    assert set(experiment.SECTIONS) & set(report.blocks((ROOT / experiment.PAGE).read_text())), experiment.PAGE


def test_the_readme_is_short_and_begins_each_assignment_item_in_its_first_half():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for needed in ("## The model", "## How the three normalizations are computed", "<!-- BEGIN NORM_EXAMPLE -->",
                   "*Graph 1:", "*Graph 2:", "misclassified_bn_l1.png", "**Findings at batch 64**"):
        assert text.index(needed) < len(text) / 2, (needed, text.index(needed) / len(text))  # of the text read
    assert "\n- " in text[text.index("**Findings at batch 64**"):][:400]  # and the findings follow at once


def slug(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_slug_follows_github():
    assert slug("The study at batch 64: GN, LN and BN+L1 over ten seeds") == "the-study-at-batch-64-gn-ln-and-bnl1-over-ten-seeds"
    assert slug("No normalization at the study's recipe") == "no-normalization-at-the-studys-recipe"


@pytest.mark.parametrize("doc", report.DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{doc}: {target} does not exist"
        if anchor:
            assert anchor in anchors(resolved), f"{doc}: no heading for #{anchor} in {resolved.name}"


# ---- sections on small synthetic results, against answers worked out by hand ------------------------------
def write(folder, name, obj):
    import json
    (folder / name).write_text(json.dumps(obj))


def study_record(label, norm, seed, acc, cpu="Some CPU", **extra):
    return {"variant": label, "params": 7410, "device": "cpu", "torch": "2.0", "cpu": cpu, "threads": 1,
            "config": {"norm": norm, "seed": seed, "l1": 1e-5 if label == "BN+L1" else 0.0},
            "epochs": [{"epoch": 1, "test_acc": acc, "train_acc": acc - 1, "seconds": 10.0}], **extra}


def test_seeds_section_by_hand(tmp_path):
    runs = [study_record("GN", "gn", s, a) for s, a in enumerate([99.5, 99.6, 99.7])]
    runs += [study_record("LN", "ln", s, a, cpu="Other CPU", fingerprint={"x": 1}) for s, a in enumerate([99.2, 99.3, 99.4])]
    write(tmp_path, "study.json", {"summary": study.summarize(runs), "runs": runs})
    text = study.seeds_section(tmp_path)
    # difference 0.3, se 0.0816, df 4: t 2.776 -> 0.073 to 0.527; detectable (2.776 + 0.941) x 0.0816 = 0.304
    assert "| GN - LN | 3 + 3 | +0.300 | +0.073 to +0.527 | yes | yes | 0.304 |" in text
    assert "6 runs (seeds 0, 1, 2); trained on Some CPU (3 runs), Other CPU (3 runs); 1 distinct fingerprint(s)" in text
    assert "compared by Welch's interval of two independent groups, not paired by seed" in text
    assert "1 of 1 pairs have a 95% interval that excludes 0 (1 after a Bonferroni correction for 1 comparisons, the " \
           "protocol's \"separated\")" in text and "about 0.30 points" in text


def test_l1_weights_section_by_hand(tmp_path):
    def layer(l2, zero):
        over = lambda values: {"mean": sum(values) / 3, "std": 0.1, "values": values}  # noqa: E731
        return {"l2": over(l2), "l1": over([1.0] * 3), "numel": 72, "near_zero_percent": over(zero)}
    write(tmp_path, "l1_weights.json", {"seeds": [0, 1, 2], "l1_lambda": 1e-5, "sparse_fraction": 0.01, "layers": {
        "BN": {"features.0.0": layer([6.0, 6.1, 6.2], [3.0, 4.0, 5.0]),
               "head": layer([14.0, 14.1, 14.2], [1.0, 1.5, 2.0])},
        "BN+L1": {"features.0.0": layer([5.0, 5.1, 5.2], [9.0, 10.0, 11.0]),
                  "head": layer([14.1, 14.2, 14.3], [1.0, 1.5, 2.0])}}})
    text = l1_weights.l1_weights_section(tmp_path)
    assert "| conv 1 | 72 | 6.10 ± 0.10 | 5.10 ± 0.10 | 0.84 | 4.0 ± 0.1% | 10.0 ± 0.1% |" in text
    # 2 layers x 2 measures: 98.75% intervals, t(0.99375, df 4) = 4.31; L2 se sqrt(2 x 0.01 / 3) = 0.0816 -> ±0.35,
    # near-zero se sqrt(2 x 1 / 3) = 0.816 -> ±3.52; the head's L2 detectable (4.31 + 0.94) x 0.0816 = 0.43
    t, se = t_quantile(1 - 0.05 / 8, 4), (2 * 0.01 / 3) ** 0.5
    assert "| A − B (norm) | 98.75% interval (Welch) |" in text and "| A − B (points) | 98.75% interval" in text
    assert (f"| conv 1: BN − BN+L1 | 3 + 3 | 6.10 | 5.10 | +1.00 | {1 - t * se:+.2f} to {1 + t * se:+.2f} "
            f"| **separated** |") in text
    assert (f"| conv 1: BN − BN+L1 | 3 + 3 | 4.00 | 10.00 | -6.00 | {-6 - t * 10 * se:+.2f} to "
            f"{-6 + t * 10 * se:+.2f} | **separated** |") in text
    assert "Bonferroni over the 4 comparisons above (2 layers x 2 measures): the L2 norm is separated between BN and " \
           "BN+L1 in 1 of 1 normalized convs, the near-zero share in 1 of 1" in text
    detectable = (t + t_quantile(0.8, 4)) * se
    assert text.endswith(f"the head's L2 norm is not told apart (these seeds would detect {detectable:.2f}).")


def test_gn_family_section_by_hand(tmp_path):
    entry = lambda norm, b, acc: {"norm": norm, "batch_size": b, "epochs": 3, "seeds": [0, 1],  # noqa: E731
                                  "test_acc": {"mean": acc, "std": 0.05, "min": acc - 0.05, "max": acc + 0.05}}
    assert sweep.gn_family_section(tmp_path).startswith("Not run yet")  # no sweep file at all
    runs = [{"config": {"norm": "gn", "gn_groups": 2, "seed": 0, "batch_size": 8}, "device": "cpu", "torch": "2.0",
             "cpu": "Some CPU", "threads": 1}]
    write(tmp_path, "batch_size_sweep.json", {"summary": [entry("ln", 8, 99.1), entry("gn2", 8, 99.2), entry("gn", 8, 99.3),
                                                          entry("gn", 64, 99.0)], "runs": runs})
    lines = sweep.gn_family_section(tmp_path).splitlines()
    assert lines[0] == "| batch | epochs | LN (1 group) | GN(2) (2 groups) | GN (4 groups) | IN (1 channel per group) |"
    assert lines[2] == "| 8 | 3 | 99.10 ± 0.05 | 99.20 ± 0.05 | 99.30 ± 0.05 | - |"  # only where GN(2) or IN ran
    assert len(lines) == 5 and "GN(2) and IN: 1 runs (seed 0)" in lines[4]


def test_model_section_counts_every_parameter():
    lines = report.model_section(RESULTS).splitlines()
    assert lines[2] == "| conv 3x3 → norm → ReLU | 8, 26, 26 | 88 |"  # 1 x 8 x 3 x 3 = 72 weights, 8 + 8 affine
    assert lines[-1] == "| **total** | | **7,410** |" and lines[-2] == "| head: conv 1x1 with bias | 10 logits | 130 |"


def test_machines_keeps_two_cpus_of_one_name_apart_by_family():
    amd = lambda fms=None: {"cpu": "AMD EPYC", **({"fingerprint": {"family_model_stepping": fms}} if fms else {})}  # noqa: E731
    assert sections.machines([amd(), amd()]) == "AMD EPYC"
    assert sections.machines([amd(), amd("26/2/1"), amd("26/2/1")]) == \
        "AMD EPYC (1 runs), AMD EPYC, family/model 26/2 (2 runs)"


def test_command_section_by_hand(tmp_path):
    write(tmp_path, "bench_cpu_command_e1_n20000.json", {
        "command": "python main.py --norm all --seeds 0 1 2 --epochs 1 --train-subset 20000 --workers W",
        "commit": "abc1234", "median_wall_s": {"1": 150.0, "2": 90.0}, "speedup": 150.0 / 90.0,
        "wall_s": {"1": [150.0], "2": [90.0]}, "epoch_seconds_sum": {"1": [140.0], "2": [150.0]},
        "same_accuracies": True, "hardware": {"processor": "Some CPU", "cpu_count": 2, "torch": "2.0"}})
    text = bench_report.command_section(tmp_path)
    assert ("| `python main.py --norm all --seeds 0 1 2 --epochs 1 --train-subset 20000 --workers W` | abc1234 | "
            "150.0 | 90.0 | **1.67x** | 140 / 150 | yes |") in text
    assert "median of 1 round(s)" in text and "Some CPU with 2 cores" in text
    assert bench_report.command_section(tmp_path / "none").startswith("Not run yet")


def test_study_section_by_hand(tmp_path):
    runs = [study_record("GN", "gn", s, a) for s, a in enumerate([99.5, 99.7])]
    runs += [study_record("LN", "ln", 0, 99.0, cpu="Other CPU")]
    runs[2]["epochs"][0]["seconds"] = 30.0
    write(tmp_path, "study.json", {"summary": study.summarize(runs), "runs": runs})
    text = study.study_section(tmp_path)
    assert "| GN | 7,410 | 99.60 +- 0.14% | 99.50% | 99.70% | 2 |" in text  # std of 99.5, 99.7: 0.141
    assert ("3 runs of 1 epochs (seeds 0, 1), device `cpu`, torch 2.0, 1 torch thread per run, on Some CPU (2 runs), "
            "Other CPU (1 runs); mean seconds per epoch (train + test, two runs sharing the 2 cores) GN 10.0, LN 30.0.") in text


def test_compile_section_by_hand(tmp_path):
    epochs = lambda accs, secs: [{"test_acc": a, "seconds": s} for a, s in zip(accs, secs)]  # noqa: E731
    config = {"norm": "gn", "seed": 0, "epochs": 3}
    write(tmp_path, "compile_gn_seed0.json", {"config": {**config, "compile": True, "device": "cpu"},
                                              "epochs": epochs([98.0, 99.5, 99.4], [60.0, 10.0, 12.0])})
    write(tmp_path, "study_x.json", {"runs": [{"config": {**config, "seed": 1}, "epochs": []},
                                              {"config": config, "epochs": epochs([97.0, 99.0, 99.2], [20.0, 11.0, 13.0])}]})
    lines = bench_report.compile_section(tmp_path, "study_x.json").splitlines()
    assert lines[2] == "| plain (in `results/study_x.json`) | 99.20% | 99.20% | 20.0 | 12.0 |"  # seed 0, not seed 1
    assert lines[3] == "| `--compile` | 99.40% | 99.50% | 60.0 | 11.0 |"  # best epoch 2; median of 10 and 12


def test_batch_size_section_leaves_the_gn_family_out_and_adds_the_hours(tmp_path):
    def run(norm, groups=4):
        return {"config": {"norm": norm, "gn_groups": groups, "l1": 0.0, "seed": 0, "epochs": 3, "batch_size": 64},
                "device": "cpu", "torch": "2.0", "epochs": [{"seconds": 1800.0}] * 3}
    entry = lambda norm: {"norm": norm, "batch_size": 64, "epochs": 3, "lr": 0.01, "seeds": [0],  # noqa: E731
                          "test_acc": {"mean": 99.0, "std": 0.0, "min": 99.0, "max": 99.0}}
    write(tmp_path, "batch_size_sweep.json", {"summary": [entry("bn"), entry("gn2"), entry("none")],
                                              "runs": [run("bn"), run("gn", 2), run("none")]})
    text = sweep.batch_size_section(tmp_path)
    assert "GN(2)" not in text and "no norm" not in text
    assert ("1 runs of BN, GN and LN, 3 epochs each (seed 0; mean ± std over seeds; the file's 2 other runs are on "
            "[the GN-family page](gn_family.md)), device `cpu`, torch 2.0 per run; 1.5 hours") in text


def test_levers_section_sorts_bn_first_and_gives_each_runs_range(tmp_path):
    def bench(norm, lever, ratios):
        return {"args": {"norm": norm, "lever": lever, "malloc": "keep"}, "round_ratios": ratios,
                "ratio_classic_over_ours": sorted(ratios)[len(ratios) // 2],
                "results": {name: {"epoch_s": s} for name, s in (("ours", 10.0), ("model", 9.0), ("classic", 14.0))}}
    write(tmp_path, "bench_cpu_gn.json", bench("gn", "none", [1.1, 1.3, 1.2]))
    write(tmp_path, "bench_cpu_bf16.json", bench("bn", "bf16", [0.9, 1.0, 0.8]))
    write(tmp_path, "bench_cpu.json", bench("bn", "none", [1.4, 1.5, 1.6]))
    write(tmp_path, "bench_cpu_norms.json", {"results": {}})  # not a pipelines file: left out
    lines = bench_report.levers_section(tmp_path).splitlines()[2:]
    assert lines == ["| BN | none | 10.00 | 9.00 | 14.00 | 1.50 | 1.40-1.60 |",
                     "| BN | bf16 | 10.00 | 9.00 | 14.00 | 0.90 | 0.80-1.00 |",
                     "| GN | none | 10.00 | 9.00 | 14.00 | 1.20 | 1.10-1.30 |"]


def test_shift_section_counts_models_and_seeds(tmp_path, monkeypatch):
    rows = [{"variant": v, "seed": s} for v in ("GN", "LN", "BN+L1", "BN") for s in (0, 1)] * 3  # 3 shifts each
    write(tmp_path, "shift.json", {"results": rows, "summary": [], "cpu": "Some CPU", "torch": "2.0", "threads": 1})
    monkeypatch.setattr(shift, "shift_table", lambda summary: "TABLE")  # shift_table has its own tests
    text = shift.shift_section(tmp_path)
    assert text.endswith("8 models (the study's and BN's, 2 seeds each) on the 10,000 test images under every shift; "
                         "test accuracy %, mean ± std over seeds; Some CPU, torch 2.0, 1 torch thread.")


def test_shift_comparisons_section_by_hand(tmp_path, monkeypatch):
    def rows(shift_name, severity, bn_l1_running):
        acc = {("gn", None): [99.0, 99.1, 99.2], ("ln", None): [98.0, 98.1, 98.2], ("bn", "running"): [10.0, 11.0, 12.0],
               ("bn_l1", "running"): bn_l1_running, **{(v, m): [50.0, 51.0, 52.0] for v in ("bn", "bn_l1")
                                                      for m in ("test_batch", "adapted")}}
        return [{"variant": v, "bn_stats": m, "shift": shift_name, "severity": severity, "seed": seed, "test_acc": a}
                for (v, m), values in acc.items() for seed, a in reversed(list(enumerate(values)))]
    write(tmp_path, "shift.json", {"results": rows("clean", 0, [10.0, 11.5, 12.0]) + rows("contrast", 3, [20.0, 21.0, 22.0])})
    monkeypatch.setattr(shift, "FINDINGS", {"Contrast": [(("gn", None), ("bn", "running"), "contrast", 3),
                                                         (("bn_l1", "adapted"), ("bn", "adapted"), "contrast", 3)]})
    lines = shift.shift_comparisons_section(tmp_path).splitlines()
    assert lines[0] == "*Contrast* (2 comparisons):" and "| 97.5% interval (Welch) |" in lines[2]
    assert lines[4].startswith("| contrast 3: GN − BN | 3 + 3 | 99.10 | 11.00 | +88.10 |") and "**separated**" in lines[4]
    assert lines[5].startswith(
        "| contrast 3: BN+L1, re-estimated stats − BN, re-estimated stats | 3 + 3 | 51.00 | 51.00 | +0.00 |")
    # BN+L1 − BN: 2 conditions x 3 modes, 99.17% intervals, t(1 - 0.05 / 12, df 4) = 5.2; at contrast 3 as deployed
    # 10 ± t x sqrt(2/3), separated; the clean one +0.50 of a half-width t x sqrt(1.0833/3 + 1/3), not
    t = t_quantile(1 - 0.05 / 12, 4)
    assert "*BN+L1 − BN under every condition* (2 conditions, clean included, x 3 BN modes: 6 comparisons):" in lines
    running = next(line for line in lines if line.startswith("| running statistics"))
    assert running.startswith(f"| running statistics (as deployed) | 2 | 1 | contrast 3: +10.00 "
                              f"({10 - t * (2 / 3) ** 0.5:+.2f} to {10 + t * (2 / 3) ** 0.5:+.2f}) |")
    assert "| test-batch statistics | 2 | 0 | " in "\n".join(lines) and "99.17% interval, Welch" in "\n".join(lines)
    assert lines[-1].startswith("From `results/shift.json` (3 seeds per variant;")


def test_gn_family_study_section_orders_the_rows_by_groups(tmp_path):
    assert study.gn_family_study_section(tmp_path).startswith("Not run yet")
    runs = [study_record(label, norm, s, a) for label, norm in (("GN", "gn"), ("LN", "ln")) for s, a in enumerate([99.5, 99.6])]
    family = [study_record(label, norm, s, a) for label, norm in (("IN", "in"), ("GN(2)", "gn")) for s, a in enumerate([99.1, 99.3])]
    write(tmp_path, "study.json", {"summary": study.summarize(runs), "runs": runs})
    write(tmp_path, "study_gn2_in.json", {"summary": study.summarize(family), "runs": family})
    lines = study.gn_family_study_section(tmp_path).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:6]] == ["| LN", "| GN(2)", "| GN", "| IN"]
    assert "Bonferroni for 6 pairs" in lines[7] and "4 runs, seeds 0, 1, device `cpu`" in lines[-1]


def test_a_bench_file_with_a_fingerprint_names_the_cpus_family_and_model():
    from lab.bench_report import processor
    hw = {"processor": "AMD EPYC", "fingerprint": {"family_model_stepping": "25/17/1"}}
    assert processor(hw) == "AMD EPYC (family/model 25/17)" and processor({"processor": "AMD EPYC"}) == "AMD EPYC"
