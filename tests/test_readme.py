"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


# pytorch-lightning's own use of a torch pytree API that torch 2.13 deprecates; nothing of ours
@pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\)` is deprecated")
def test_readme_examples_run():
    namespace: dict = {}
    for block in BLOCKS:  # later blocks use names from earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)


def test_quick_start_block_has_exactly_two_lines():
    text = README.read_text()
    quick = text[text.index("## Quick start"):]
    block = re.search(r"```\w*\n(.*?)```", quick, flags=re.S).group(1)
    lines = block.strip("\n").split("\n")
    assert len(lines) == 2
    assert "fastndb demo" in lines[0] and "pytest" in lines[1]
