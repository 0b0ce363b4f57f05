"""Changing the GPU set: copies and balance against planning from scratch.

``python bench/elastic.py`` plans DeepSeek-V3-shaped loads (58 layers, 256
experts, 10 slots per GPU, 4 nodes) after a 2% drift for: one GPU of 32
lost, and scaling 32 -> 28 -> 32 GPUs, under the hierarchical (8 groups) and
global policies.  For each: expert copies of the movement-aware plan and of
the reference's plan on the new layout (from scratch), the least possible
(every expert left without a replica costs a copy; every new slot of a
scale-up needs one), whether any layer's busiest GPU exceeds the
from-scratch plan's, and the median time of the plan plus its migration.
For hierarchical scaling it also gives the least possible while each
group's experts stay on one node: vLLM's new ranks keep their numbers, so
the node boundaries move (32 -> 28: new node 1 is old GPUs 7-13), and every
slot of a new node that holds an expert of a group the node does not take
must change, whichever groups it takes.
"""

from __future__ import annotations

import itertools

import numpy as np
from harness import drift, median_ms

import eplb_numba
from eplb_numba._metrics import gpu_loads
from eplb_numba.cli.workload import deepseek_v3_loads


def locality_least(stands, num_nodes, num_groups):
    """Slots that must change to keep each group on one node, at best (-1 slots always change)."""
    layers, slots = stands.shape
    per_node = slots // num_nodes
    size = (stands.max() + 1) // num_groups
    splits = []

    def split(rest, taken):
        if not rest:
            splits.append(taken)
            return
        for pick in itertools.combinations(rest, num_groups // num_nodes):
            split([g for g in rest if g not in pick], taken + [pick])

    split(list(range(num_groups)), [])
    total = 0
    for layer in range(layers):
        held = np.zeros((num_nodes, num_groups))
        row = stands[layer]
        np.add.at(held, (np.flatnonzero(row >= 0) // per_node, row[row >= 0] // size), 1)
        total += slots - max(sum(held[n, list(pick)].sum() for n, pick in enumerate(s)) for s in splits)
    return int(total)


def scenarios(slack=0.0):
    rng = np.random.default_rng(7)
    base = deepseek_v3_loads(58, 256, seed=1)
    w = drift(base, rng)
    rows = []
    for groups, policy in ((8, "hierarchical"), (1, "global")):
        old = eplb_numba.rebalance_experts(base, 320, groups, 4, 32)[0]
        cases = []
        # One GPU lost: the live 31 do not split over 4 nodes, so the reference plans globally.
        lost = [5]
        scratch = np.full_like(old, -1)
        live = np.delete(np.arange(320), np.arange(50, 60))
        scratch[:, live] = eplb_numba.rebalance_experts(w, 310, 1, 1, 31)[0]
        least = sum(len(set(old[layer, 50:60].tolist()) - set(old[layer, live].tolist())) for layer in range(58))
        cases.append(("1 of 32 GPUs lost", old, 320, 32, dict(failed_gpus=lost), scratch, 32, least, None))
        down_scratch = eplb_numba.rebalance_experts(w, 280, groups, 4, 28)[0]
        least = sum(len(set(range(256)) - set(old[layer, :280].tolist())) for layer in range(58))
        local = locality_least(old[:, :280], 4, groups) if groups > 1 else None
        cases.append(("32 -> 28 GPUs", old, 280, 28, {}, down_scratch, 28, least, local))
        down = eplb_numba.rebalance_experts(w, 280, groups, 4, 28, old_phy2log=old, max_load_slack=slack)[0]
        up_scratch = eplb_numba.rebalance_experts(w, 320, groups, 4, 32)[0]
        grown = np.concatenate([down, np.full((58, 40), -1)], axis=1)
        local = locality_least(grown, 4, groups) if groups > 1 else None
        cases.append(("28 -> 32 GPUs", down, 320, 32, {}, up_scratch, 32, 4 * 10 * 58, local))
        for name, before, slots, gpus, kw, fresh, peak_gpus, least, local in cases:
            def plan(before=before, slots=slots, gpus=gpus, kw=kw, groups=groups):
                new = eplb_numba.rebalance_experts(w, slots, groups, 4, gpus, old_phy2log=before,
                                                   max_load_slack=slack, **kw)[0]
                return new, eplb_numba.plan_migration(before, new, gpus, 4, **kw)
            new, moved = plan()
            scratch_copies = len(eplb_numba.plan_migration(before, fresh, gpus, 4, **kw).expert)
            bound = gpu_loads(w, fresh, peak_gpus).max(axis=1) * (1 + slack) * (1 + 1e-9)
            over = int((gpu_loads(w, new, gpus).max(axis=1) > bound).sum())
            rows.append({"policy": policy, "scenario": name, "copies": len(moved.expert),
                         "from_storage": moved.from_storage, "scratch": scratch_copies, "least": least, "local": local,
                         "layers_over": over, "ms": median_ms(plan)})
    return rows


def main():
    for slack in (0.0, 0.01):
        print(f"\nmax_load_slack={slack}")
        print("| policy | scenario | copies (from storage) | from scratch | fewer | least possible | "
              "least, groups on nodes | layers over the from-scratch peak | plan + migration ms |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in scenarios(slack):
            local = "-" if r["local"] is None else f"{r['local']:,}"
            print(f"| {r['policy']} | {r['scenario']} | {r['copies']:,} ({r['from_storage']}) | {r['scratch']:,} | "
                  f"{r['scratch'] / r['copies']:.1f}x | {r['least']:,} | {local} | {r['layers_over']} | "
                  f"{r['ms']:.2f} |")


if __name__ == "__main__":
    main()
