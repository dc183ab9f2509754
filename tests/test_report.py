"""report.py: the docs quote the committed result files word for word; every generated block is current."""
import re
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
    assert report.steps_line(runs) == "2,808 at 128, 2,808 at 512 against 2,811 at 64"  # 468 x 6, 117 x 24; 937 x 3
    held_out = [{"config": {"batch_size": 100, "epochs": 2, "val_split": 10_000, "train_subset": 0}}]
    assert report.steps_line(held_out).startswith("1,000 at 100")


# the generated blocks the README held before it was split into pages: each lives on some page now
BLOCKS_OF_THE_OLD_README = ("RESULTS", "BATCH_SIZE", "LR_RULE", "EQUAL_STEPS", "OWN_LR", "LR_RANGE", "SHIFT",
                            "NORM_EXAMPLE", "L1_SWEEP", "SPEED_SUMMARY")
BLOCKS_OF_BENCHMARKS = ("SPEED", "LEVERS", "COMPILE", "NORM_COSTS", "WORKERS", "INFERENCE")


def test_no_generated_block_was_lost():
    found = doc_blocks()
    assert set(BLOCKS_OF_THE_OLD_README + BLOCKS_OF_BENCHMARKS) <= set(found)
    assert all(found[name][0] == "BENCHMARKS.md" for name in BLOCKS_OF_BENCHMARKS)


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
