"""The README's and docs/'s Python examples run as written (each file in its own namespace, blocks in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks(README)) >= 2


# pytorch-lightning's own use of a torch pytree API that torch 2.13 deprecates; nothing of ours
@pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\)` is deprecated")
@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_examples_run(path):
    namespace: dict = {}
    for block in python_blocks(path):  # later blocks use names from earlier ones, as a reader would
        exec(compile(block, str(path), "exec"), namespace)


def test_quick_start_block_has_exactly_two_lines():
    text = README.read_text()
    quick = text[text.index("## Quick start"):]
    block = re.search(r"```\w*\n(.*?)```", quick, flags=re.S).group(1)
    lines = block.strip("\n").split("\n")
    assert len(lines) == 2
    assert "fastndb demo" in lines[0] and "pytest" in lines[1]
