import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from conftest import ROOT, run_main
import plots
from plots import DPI, plot_accuracy, plot_metric, plot_misclassified, plot_train_vs_test

FIGURES = {  # file stem -> (width, height) in pixels
    "test_loss": (960, 600), "test_accuracy": (1680, 600), "train_vs_test": (1320, 960),
    "misclassified_gn": (600, 1440), "misclassified_ln": (600, 1440), "misclassified_bn_l1": (600, 1440),
}


def fake_runs(seeds=2, epochs=5):
    runs = []
    for i, label in enumerate(["GN", "LN", "BN+L1"]):
        for seed in range(seeds):
            acc = 99.0 + 0.1 * i + 0.05 * np.arange(epochs) + 0.01 * seed
            runs.append({"variant": label, "params": 7410, "config": {"seed": seed}, "epochs": [
                {"epoch": e + 1, "train_loss": 0.1, "train_acc": a - 1, "test_loss": 0.05 - 0.001 * e,
                 "test_acc": a, "seconds": 1.0} for e, a in enumerate(acc)]})
    return runs


def test_accuracy_graph_is_annotated_zoomed_and_shows_every_epoch():
    fig = plot_accuracy(fake_runs())
    ax, whole = fig.axes
    assert ax.get_title() == "Test accuracy per epoch (zoomed to the last epochs)"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "accuracy (%)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[2] == "BN+L1 (7,410 params, mean of 2 seeds): final 99.41%, best 99.41%"
    assert [t.startswith(v) for t, v in zip(legend, ["GN", "LN", "BN+L1"])] == [True] * 3
    assert {t.get_text() for t in ax.texts} == {"99.21%", "99.31%", "99.41%"}  # final values on the plot
    low, high = ax.get_ylim()
    assert 99.0 < low < 99.2 and high <= 100  # zoomed to the last 60% of epochs
    assert whole.get_yscale() == "log" and whole.get_ylabel() == "test error (%, log scale)"
    assert whole.get_xlabel() == "epoch" and whole.get_title() == "Test error, every epoch (log scale)"
    assert [line.get_xdata()[0] for line in whole.get_lines()] == [1, 1, 1]  # from epoch 1 on
    assert whole.get_lines()[0].get_ydata()[0] == pytest.approx(100 - 99.005)


def test_loss_graph_labels():
    ax = plot_metric(fake_runs(seeds=1), "test_loss", "Test loss per epoch", "cross-entropy").axes[0]
    assert ax.get_title() == "Test loss per epoch" and ax.get_ylabel() == "cross-entropy"
    assert ax.get_legend().get_texts()[0].get_text() == "GN (7,410 params): final 0.0460, best 0.0460"


def test_train_vs_test_panel_has_four_labelled_axes():
    fig = plot_train_vs_test(fake_runs())
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss", "test loss", "train accuracy", "test accuracy"]
    assert all(len(ax.get_legend().get_texts()) == 3 for ax in fig.axes)


def test_misclassified_grid_tiles_say_true_and_predicted():
    found = {"images": torch.randn(10, 1, 28, 28), "true": torch.arange(10),
             "pred": (torch.arange(10) + 1) % 10, "confidence": torch.full((10,), 0.75)}
    fig = plot_misclassified(found, "LN", 99.43)
    assert len(fig.axes) == 10
    assert fig.axes[3].get_title() == "true 3, predicted 4\nconfidence 75%"
    assert fig._suptitle.get_text() == "LN: 10 misclassified test images\n(test accuracy 99.43%)"
    image = fig.axes[0].get_images()[0]
    assert image.get_cmap().name == "gray" and image.get_array().min() >= 0  # un-normalized
    assert tuple(fig.get_size_inches() * DPI) == FIGURES["misclassified_ln"]


def check_figures(images_dir):
    for stem, size in FIGURES.items():
        pixels = mpimg.imread(images_dir / f"{stem}.png")
        assert pixels.shape[1::-1] == size, stem
        assert pixels[..., :3].std() > 0.02, f"{stem} is nearly one flat colour"


def test_norm_all_writes_results_and_every_figure(tiny_mnist, tmp_path):
    result = run_main("--norm", "all", "--epochs", "2", "--seeds", "0", "1", "--data-dir", tiny_mnist,
                      "--out", tmp_path / "runs", "--results", tmp_path / "results",
                      "--images", tmp_path / "images", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = json.loads((tmp_path / "results" / "study.json").read_text())
    assert [run["variant"] for run in study["runs"]] == ["GN", "LN", "BN+L1"] * 2
    assert [run["config"]["l1"] for run in study["runs"][:3]] == [0.0, 0.0, 1e-5]
    assert set(study["summary"]) == {"GN", "LN", "BN+L1"}
    assert study["summary"]["LN"]["seeds"] == [0, 1]
    check_figures(tmp_path / "images")
    assert "| BN+L1 | 7,410 |" in result.stdout


def test_notebook_runs_end_to_end_with_smoke_parameters(tiny_mnist, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    papermill.execute_notebook(str(ROOT / "S5_Normalization.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"SMOKE": True, "DATA_DIR": str(tiny_mnist), "DEVICE": "cpu",
                                           "SWEEP_RERUN": True},
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    check_figures(tmp_path / "images")
    outputs = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    shown = [o for c in outputs if c["cell_type"] == "code" for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(shown) == 7  # both graphs, the train/test panel, the three grids and the sweep
    small = json.loads((tmp_path / "results" / "batch_size_sweep_small.json").read_text())
    assert [(e["norm"], e["batch_size"]) for e in small["summary"]][:3] == [("bn", 8), ("bn", 64), ("bn", 512)]


def test_plots_redraws_every_figure_from_committed_files(tiny_mnist, tmp_path):
    # the committed results and weights; the grids show tiny_mnist's test images (no real MNIST needed)
    assert plots.main(["--out", str(tmp_path / "figures"), "--data-dir", str(tiny_mnist)]) == 0
    check_figures(tmp_path / "figures")


def test_plots_names_missing_weights(tiny_mnist, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "study.json").write_text(json.dumps({"runs": fake_runs(seeds=1)}))
    assert plots.main(["--results", str(results), "--out", str(tmp_path / "f"), "--data-dir", str(tiny_mnist)]) == 1
    assert f"{results / 'models' / 'gn_seed0.pt'} is missing" in capsys.readouterr().err
