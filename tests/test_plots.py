"""Every figure (the study's in figures.py; the batch-size sweep's and the LR range's in their modules), drawn from
result files alone."""
import json
import math
from dataclasses import asdict

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

import plots
from lab import figures
from conftest import ROOT, STUDY_FIGURES, check_figures
from plumbing.config import STUDY_L1, Config
from plumbing.data import DeviceLoader
from model import Net
from plumbing.results import model_path
from lab import sweep
from lab.lr_range import plot_lr_range, redraw_lr_range
from lab.sweep import plot_batch_size
from lab.figures import (DPI, collect_misclassified, plot_accuracy,
                   plot_metric, plot_misclassified, plot_train_vs_test)
from lab.train import set_seed

STUDY = [("GN", {"norm": "gn"}), ("LN", {"norm": "ln"}), ("BN+L1", {"norm": "bn", "l1": STUDY_L1})]


def fake_runs(seeds=2, epochs=5):
    runs = []
    for i, (label, settings) in enumerate(STUDY):
        for seed in range(seeds):
            acc = 99.0 + 0.1 * i + 0.05 * np.arange(epochs) + 0.01 * seed
            config = {k: v for k, v in asdict(Config(seed=seed, **settings)).items() if k != "data_dir"}
            runs.append({"variant": label, "params": 7410, "config": config, "epochs": [
                {"epoch": e + 1, "train_loss": 0.1, "train_acc": a - 1, "test_loss": 0.05 - 0.001 * e,
                 "test_acc": a, "seconds": 1.0} for e, a in enumerate(acc)]})
    return runs


# ---- the study's figures -----------------------------------------------------------------------------
def test_accuracy_graph_is_annotated_zoomed_and_shows_every_epoch():
    fig = plot_accuracy(fake_runs())
    ax, whole = fig.axes
    # the zoom leaves out epochs whose mean lies below it, and the title says which
    assert ax.get_title() == ("Graph 2: test accuracy per epoch (zoomed to the last epochs)\n"
                              "(the mean of epochs 1-2 lies outside this axis; see the right panel)")
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "accuracy (%)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[2] == "BN+L1 (7,410 params): final 99.41%, best 99.41%"
    assert legend[3] == "band: min-max over 2 seeds (line: their mean)"  # the seed band has its legend entry
    assert [t.startswith(v) for t, v in zip(legend, ["GN", "LN", "BN+L1"])] == [True] * 3
    assert ax.get_legend().get_bbox_to_anchor().y1 < ax.get_window_extent().y0  # below the axes: covers no data
    assert {t.get_text() for t in ax.texts} == {"99.21%", "99.31%", "99.41%"}  # final values on the plot
    low, high = ax.get_ylim()
    assert 99.0 < low < 99.2 and high <= 100  # zoomed to the last 60% of epochs
    assert whole.get_yscale() == "log" and whole.get_ylabel() == "test error (%, log scale)"
    assert whole.get_xlabel() == "epoch" and whole.get_title() == "Test error, every epoch (log scale)"
    assert [line.get_xdata()[0] for line in whole.get_lines()] == [1, 1, 1]  # from epoch 1 on
    assert whole.get_lines()[0].get_ydata()[0] == pytest.approx(100 - 99.005)


def test_every_variant_keeps_its_colour():
    fig = plot_accuracy(fake_runs())
    colours = [line.get_color() for line in fig.axes[0].get_lines()]
    assert colours == ["tab:blue", "tab:orange", "tab:green"]


def test_loss_graph_labels():
    ax = plot_metric(fake_runs(seeds=1), "test_loss", "Test loss per epoch", "cross-entropy").axes[0]
    assert ax.get_title() == "Test loss per epoch\n(the mean of epochs 1-2 lies outside this axis)"
    assert ax.get_ylabel() == "cross-entropy"
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "GN (7,410 params): final 0.0460, best 0.0460"
    assert len(ax.get_legend().get_texts()) == 3  # one seed: no band, no band entry


def test_loss_graph_on_a_log_axis_shows_every_epoch():
    ax = plot_metric(fake_runs(), "test_loss", "Graph 1", "cross-entropy", log=True).axes[0]
    assert ax.get_yscale() == "log" and ax.get_title() == "Graph 1"  # nothing left out, nothing to say
    low, high = ax.get_ylim()
    assert all(low <= y <= high for line in ax.get_lines() for y in line.get_ydata())


def test_epoch_ranges_and_log_ticks():
    assert figures.epoch_ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert [figures.leading_digit(v) for v in (0.02, 20.0, 5e-5, 1.0)] == [2, 2, 5, 1]


def test_train_vs_test_panel_has_four_labelled_axes():
    fig = plot_train_vs_test(fake_runs())
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss", "test loss", "train accuracy", "test accuracy"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["GN", "LN", "BN+L1"]  # one legend, below


def test_misclassified_grid_tiles_say_true_and_predicted():
    found = {"images": torch.randn(10, 1, 28, 28), "true": torch.arange(10),
             "pred": (torch.arange(10) + 1) % 10, "confidence": torch.full((10,), 0.75)}
    fig = plot_misclassified(found, "LN", 99.43)
    assert len(fig.axes) == 10
    assert fig.axes[3].get_title() == "true 3, predicted 4\nconfidence 75%"
    assert fig._suptitle.get_text() == "LN: 10 misclassified test images\n(test accuracy 99.43%)"
    image = fig.axes[0].get_images()[0]
    assert image.get_cmap().name == "gray" and image.get_array().min() >= 0  # un-normalized
    assert tuple(fig.get_size_inches() * DPI) == STUDY_FIGURES["misclassified_ln"]


def test_collect_misclassified_returns_only_wrong_predictions():
    set_seed(0)
    model = Net("bn").eval()
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))
    found = collect_misclassified(model, DeviceLoader(x, y, 16), limit=10)
    assert len(found["true"]) == 10 and found["images"].shape == (10, 1, 28, 28)
    assert (found["true"] != found["pred"]).all()
    assert ((found["confidence"] > 0) & (found["confidence"] <= 1)).all()


def test_model_path_is_the_runs_name(tmp_path):
    runs = fake_runs(seeds=1)
    assert [model_path(tmp_path, run).name for run in runs] == ["gn_seed0.pt", "ln_seed0.pt", "bn_l1_seed0.pt"]
    sweep_run = {"config": {"norm": "bn", "epochs": 3, "batch_size": 512, "seed": 1}}
    assert model_path(tmp_path, sweep_run) == tmp_path / "bn_e3_bs512_seed1.pt"
    assert model_path(tmp_path, Config(norm="gn", gn_groups=2, seed=4)) == tmp_path / "gn2_seed4.pt"  # a Config too


def test_study_figures_from_results_and_weights(tiny_mnist, tmp_path):
    runs = fake_runs(seeds=1)
    (tmp_path / "models").mkdir()
    for run in runs:
        torch.save(Net(run["config"]["norm"]).state_dict(), model_path(tmp_path / "models", run))
    (tmp_path / "study.json").write_text(json.dumps({"summary": None, "runs": runs}))
    drawn = figures.study_figures(tmp_path, tiny_mnist)
    assert set(drawn) == set(STUDY_FIGURES)
    figures.save_figures(drawn, tmp_path / "images")
    check_figures(tmp_path / "images")


def test_plots_redraws_every_figure_from_committed_files(tiny_mnist, tmp_path):
    # the committed results and weights; the grids show tiny_mnist's test images (no real MNIST needed)
    assert plots.main(["--out", str(tmp_path / "figures"), "--data-dir", str(tiny_mnist)]) == 0
    optimizers = {e["optimizer"] for e in json.loads((ROOT / "results" / "lr_range.json").read_text())["summary"]}
    check_figures(tmp_path / "figures", {**STUDY_FIGURES, "batch_size": (1680, 660),
                                         "lr_range": (840 * len(optimizers), 600),  # a panel per optimizer
                                         "shift": (1200, 1200), "shift_examples": (720, 1728)})


def test_plots_names_missing_weights(tiny_mnist, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "study.json").write_text(json.dumps({"runs": fake_runs(seeds=1)}))
    assert plots.main(["--results", str(results), "--out", str(tmp_path / "f"), "--data-dir", str(tiny_mnist)]) == 1
    assert f"{results / 'models' / 'gn_seed0.pt'} is missing" in capsys.readouterr().err


# ---- the batch-size sweep -----------------------------------------------------------------------------
def fake_sweep(batch_sizes=(2, 8, 32), epochs=3, slopes=(("bn", 0.3), ("gn", 0.0), ("ln", 0.05))):
    summary = []
    for norm, slope in slopes:
        for b in batch_sizes:
            error = 1.0 + slope * (5 - math.log2(b))
            entry = {"norm": norm, "batch_size": b, "lr": 0.01,
                     "epochs": epochs if epochs else 3 * b // 64, "seeds": [0, 1, 2],
                     "test_acc": {"mean": 100 - error, "min": 100 - error - 0.1, "max": 100 - error + 0.1},
                     "seconds_per_epoch": 100.0 / b}
            if norm == "bn":
                for key in ("test_acc_batch_stats", "test_acc_precise_stats"):
                    entry[key] = dict(entry["test_acc"])
            summary.append(entry)
    return {"summary": summary, "runs": [{"device": "cpu", "cpu": "Some CPU", "threads": 1}]}


def fake_costs(batch_sizes=(2, 8, 32)):
    return {"hardware": {"processor": "Some CPU", "torch_threads": 1},
            "results": {norm: {str(b): {"train_epoch_s": factor * 6000 / b} for b in batch_sizes}
                        for norm, factor in (("bn", 1.0), ("gn", 1.3), ("ln", 1.2))}}


def test_batch_size_plot_has_log2_axes_labels_and_a_line_per_curve():
    error_ax, time_ax = plot_batch_size(fake_sweep(), fake_costs()).axes
    assert error_ax.get_xscale() == "log" and error_ax.get_yscale() == "log"
    assert error_ax.get_xlabel() == "training batch size (log2 scale)"
    assert error_ax.get_ylabel() == "test error (%, log scale)"
    assert error_ax.get_title() == "Test error after 3 epochs, mean over 3 seeds (band: min-max)"
    assert [t.get_text() for t in error_ax.get_legend().get_texts()] == [
        "BN, 3 epochs", "BN, tested with batch statistics", "BN, running statistics recomputed after training",
        "GN, 3 epochs", "LN, 3 epochs"]
    assert [t.get_text() for t in time_ax.get_legend().get_texts()] == ["BN", "GN", "LN"]
    assert time_ax.get_ylabel() == "seconds per epoch (60,000 images)"
    assert "Some CPU, 1 thread(s)" in time_ax.get_title() and "bench.py norms" in time_ax.get_title()
    assert list(time_ax.get_lines()[1].get_ydata()) == pytest.approx([1.3 * 3000, 1.3 * 750, 1.3 * 187.5])
    assert [tick.get_text() for tick in error_ax.get_xticklabels()] == ["2", "8", "32"]
    assert list(error_ax.get_lines()[0].get_ydata()) == pytest.approx([2.2, 1.6, 1.0])


def test_batch_size_plot_shows_equal_steps_with_hollow_markers():
    equal_steps = fake_sweep(batch_sizes=(128, 256, 512), epochs=None, slopes=(("bn", 0.3), ("gn", 0.0)))
    error_ax, _ = plot_batch_size(fake_sweep(batch_sizes=(8, 64, 512)), fake_costs((8, 64, 512)), equal_steps).axes
    hollow = [line for line in error_ax.get_lines() if line.get_markerfacecolor() == "white"]
    assert [line.get_label() for line in hollow] == ["BN, the steps of batch 64 (6, 12, 24 epochs)",
                                                     "GN, the steps of batch 64 (6, 12, 24 epochs)"]
    assert all(line.get_marker() == "s" and list(line.get_xdata()) == [128, 256, 512] for line in hollow)
    assert [line.get_color() for line in hollow] == ["tab:red", "tab:blue"]  # each norm's colour
    filled = [line for line in error_ax.get_lines() if line.get_markerfacecolor() != "white"]
    assert len(filled) == 5 and all(line.get_marker() == "o" for line in filled)
    assert error_ax.get_title() == ("Test error, mean over 3 seeds (band: min-max)\nfilled markers: after 3 epochs; "
                                    "hollow: after as many steps as 3 epochs at batch 64")  # true for both kinds


def test_redraw_batch_size_reads_the_sweep_equal_steps_and_costs_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "batch_size_sweep.json").write_text(json.dumps(fake_sweep()))
    (results / "batch_size_equal_steps.json").write_text(json.dumps(
        fake_sweep(batch_sizes=(128, 256, 512), epochs=None)))
    (results / "bench_cpu_norms.json").write_text(json.dumps(fake_costs()))
    path = sweep.redraw_batch_size(results, tmp_path / "images")
    assert path == tmp_path / "images" / "batch_size.png"
    check_figures(tmp_path / "images", {"batch_size": (1680, 660)})


# ---- the learning-rate range ----------------------------------------------------------------------------
def lr_entry(optimizer, norm, lr, acc=None, diverged=0):
    e = {"optimizer": optimizer, "norm": norm, "lr": lr, "epochs": 3, "seeds": [0, 1, 2],
         "diverged": [{"seed": s, "epoch": 1, "step": 5} for s in range(diverged)], "usable": False}
    if acc is not None:
        e["test_acc"] = {"mean": acc, "min": acc - 0.1, "max": acc + 0.1, "std": 0.05}
    return e


def test_lr_range_plot_one_panel_per_optimizer_and_a_mark_where_a_seed_diverged(tmp_path):
    summary = [lr_entry("adam", "bn", 0.001, 99.0), lr_entry("adam", "bn", 0.01, 99.2),
               lr_entry("adam", "bn", 0.1, diverged=3), lr_entry("adam", "gn", 0.01, 99.1),
               lr_entry("sgd", "gn", 0.1, 98.9), lr_entry("sgd", "gn", 1.0, 98.0, diverged=1)]
    adam, sgd = plot_lr_range(summary).axes
    assert adam.get_title() == "Adam: test error after 3 epochs, mean of 3 seeds (band: min-max)"
    assert sgd.get_title().startswith("SGD: test error") and adam.get_xscale() == adam.get_yscale() == "log"
    assert [t.get_text() for t in adam.get_legend().get_texts()] == ["BN", "BN: a seed diverged", "GN"]
    assert [t.get_text() for t in sgd.get_legend().get_texts()] == ["GN", "GN: a seed diverged"]
    bn_line, bn_diverged = adam.get_lines()[:2]
    assert list(bn_line.get_xdata()) == [0.001, 0.01] and list(bn_line.get_ydata()) == pytest.approx([1.0, 0.8])
    assert list(bn_diverged.get_xdata()) == [0.1] and bn_diverged.get_marker() == "x"
    (tmp_path / "lr.json").write_text(json.dumps({"summary": summary, "runs": []}))
    assert redraw_lr_range(tmp_path / "lr.json", tmp_path / "images") == tmp_path / "images" / "lr_range.png"
    assert mpimg.imread(tmp_path / "images" / "lr_range.png").shape[1::-1] == (1680, 600)


def test_gn_family_figure_runs_from_one_group_to_one_channel_per_group():
    entry = lambda norm, b, acc: {"norm": norm, "batch_size": b, "epochs": 3, "seeds": [0, 1, 2],  # noqa: E731
                                  "test_acc": {"mean": acc, "std": 0.1, "min": acc - 0.1, "max": acc + 0.1}}
    assert sweep.plot_gn_family([entry("gn", 2, 99.2), entry("ln", 2, 99.1)]) is None  # neither GN(2) nor IN ran
    summary = [entry(n, b, 99.0 + i / 10) for b in (2, 64) for i, n in enumerate(("ln", "gn2", "gn", "in"))]
    ax = sweep.plot_gn_family(summary).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 (LN)", "2", "4 (GN)", "1 channel\nper group (IN)"]
    assert [line.get_label() for line in ax.get_lines()] == ["batch 2", "batch 64"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert ax.get_yscale() == "log" and "mean of 3 seeds" in ax.get_title()
