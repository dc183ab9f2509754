"""The README quotes the committed result files word for word (see report.py)."""
import pytest

from conftest import ROOT
from report import sections


@pytest.mark.parametrize("name,text", sections().items())
def test_readme_quotes_the_generated_section(name, text):
    assert text in (ROOT / "README.md").read_text(), f"README is out of date: run python report.py ({name})"
