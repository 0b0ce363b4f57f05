"""Regenerate the pictures in docs/img: ``python docs/make_figures.py``."""

from __future__ import annotations

import os

from eplb_numba import rebalance_experts
from eplb_numba.cli.plot import plot_balance, plot_policy
from eplb_numba.cli.workload import default_loads

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "img")


def main():
    os.makedirs(HERE, exist_ok=True)
    plot_policy(os.path.join(HERE, "policy.png"))
    weight = default_loads()
    phy2log, _, _ = rebalance_experts(weight, 288, 8, 4, 32)
    plot_balance(os.path.join(HERE, "balance.png"), weight, phy2log, 32)


if __name__ == "__main__":
    main()
