"""The docs quote the committed result files word for word: every generated block is current (report.py)."""
import shutil

import pytest

import report
from conftest import ROOT


def doc_blocks(root=ROOT):
    """{block name: (doc, body)} over every doc."""
    return {name: (doc, body) for doc in report.DOCS
            for name, body in report.blocks((root / doc).read_text()).items()}


@pytest.mark.parametrize("name", report.SECTIONS)  # names only: a missing results file fails one test, not collection
def test_generated_block_is_current(name):
    assert name in doc_blocks(), f"no <!-- BEGIN {name} --> block in {', '.join(report.DOCS)}"
    doc, body = doc_blocks()[name]
    assert body == report.SECTIONS[name]() + "\n", f"{doc} is out of date ({name}): run python report.py --write"


def test_write_replaces_stale_blocks_and_nothing_else(tmp_path):
    for doc in report.DOCS:
        shutil.copy(ROOT / doc, tmp_path / doc)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    doc, body = doc_blocks()["RESULTS"]
    readme.write_text(text.replace(body, "| stale | table |\n"))
    assert report.write(tmp_path) == [readme]
    assert readme.read_text() == text
    assert report.write(tmp_path) == []
