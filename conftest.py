"""Collection: the modules that need torch are not imported where torch is missing.

``--doctest-modules`` imports every module of the package; ``torch.py`` and
``tests/oracle.py`` need torch, and their tests skip without it.
"""

from __future__ import annotations

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["eplb_numba/torch.py", "tests/oracle.py"]
