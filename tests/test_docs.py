"""The ``python`` code blocks of the README and docs run, in order, one namespace per file.

Blocks fenced as ``py`` (vLLM-only snippets) and ``bash`` are shown, not run.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
WITH_CODE = [p for p in FILES if BLOCK.search(p.read_text())]


def test_examples_are_found():
    assert {p.name for p in WITH_CODE} >= {"README.md", "api.md", "integrating.md"}


@pytest.mark.parametrize("path", WITH_CODE, ids=lambda p: p.name)
def test_python_blocks_run(path):
    blocks = BLOCK.findall(path.read_text())
    if any("torch" in block for block in blocks):
        pytest.importorskip("torch")
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{path.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name}, python block {i} failed: {exc!r}\n{block}") from exc


def test_docs_link_to_existing_files():
    for path in FILES:
        for target in re.findall(r"\]\(([^)#:]+)\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
