"""The ``eplb-numba`` command line and its helpers (files, reports, plots, replays).

``main`` is the entry point; ``eplb_numba`` itself never imports this package.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
