"""Collection: the modules that need torch are not imported where torch is missing.

``--doctest-modules`` imports every module of the package; ``_oracle.py`` and
``torch.py`` need torch, and their tests skip without it.
"""

from __future__ import annotations

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["eplb_numba/_oracle.py", "eplb_numba/torch.py"]
