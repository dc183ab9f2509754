"""report.py: the docs quote the committed result files word for word; every generated block is current."""
import shutil

import pytest

import report
from conftest import ROOT

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
    assert report.steps_line(runs) == "2,808 at 128, 2,808 at 512 against 2,811 at 64"  # 468 x 6, 117 x 24; 937 x 3
    held_out = [{"config": {"batch_size": 100, "epochs": 2, "val_split": 10_000, "train_subset": 0}}]
    assert report.steps_line(held_out).startswith("1,000 at 100")
