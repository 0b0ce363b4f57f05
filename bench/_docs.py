"""Put a results table into docs/benchmarks.md between its markers."""

from __future__ import annotations

import os
import re

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks.md")


def update(marker, text, command):
    """Replace what stands between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    with open(DOC) as f:
        doc = f.read()
    block = f"<!-- {marker} -->\nProduced by `{command}`.\n\n{text.strip()}\n<!-- /{marker} -->"
    pattern = re.compile(rf"<!-- {re.escape(marker)} -->.*?<!-- /{re.escape(marker)} -->", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"docs/benchmarks.md has no <!-- {marker} --> block")
    with open(DOC, "w") as f:
        f.write(pattern.sub(lambda _: block, doc))
