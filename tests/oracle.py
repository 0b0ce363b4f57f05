"""Slow, plain-torch oracle of the reference algorithm, for tests and benchmarks.

Written from the description of vLLM's ``rebalance_algo`` (DeepSeek EPLB): the
steps that decide ties run through torch itself (``sort(descending=True)`` on
float32 rows, ``max(dim=-1).indices``, float32 tensor arithmetic, the group
``sum``), so agreement with the Numba kernels checks those facts against
torch rather than against our reading of it.  Loops over items are
vectorised across rows to keep thousands of generated cases affordable.

``REFERENCES`` maps each public function to its oracle; tests and benchmarks
both read it.  Needs torch; never imported by ``import eplb_numba``.
"""

from __future__ import annotations

import torch

__all__ = [
    "REFERENCES",
    "balanced_packing",
    "balanced_packing_float64",
    "balanced_packing_loops",
    "rebalance_experts",
    "rebalance_experts_hierarchical",
    "rebalance_experts_loops",
    "replicate_experts",
    "sglang_deepseek",
]


def balanced_packing(weight: torch.Tensor, num_packs: int, load_dtype=None):
    rows, n = weight.shape
    per_pack = n // num_packs
    if per_pack == 1:
        return torch.arange(n).repeat(rows, 1), torch.zeros(rows, n, dtype=torch.int64)
    order = weight.float().sort(-1, descending=True).indices
    loads = torch.zeros(rows, num_packs, dtype=load_dtype or weight.dtype)
    counts = torch.zeros(rows, num_packs, dtype=torch.int64)
    pack_index = torch.full((rows, n), -1, dtype=torch.int64)
    rank_in_pack = torch.full((rows, n), -1, dtype=torch.int64)
    row = torch.arange(rows)
    # Distinct priorities make argmax unique: the lowest pack index wins.
    priority = num_packs - torch.arange(num_packs)
    # Full packs read as the largest value: never below an open pack, and
    # at most equal to one, which `open_` then tells apart.  Float sums can
    # overflow to inf, so for floats that is inf, not the largest finite.
    closed = torch.inf if weight.dtype.is_floating_point else torch.iinfo(weight.dtype).max
    for j in range(n):
        item = order[:, j]
        open_ = counts < per_pack
        lightest = torch.where(open_, loads, torch.full_like(loads, closed)).min(-1, keepdim=True).values
        candidates = open_ & (loads == lightest)
        best = (candidates * priority).argmax(-1)
        pack_index[row, item] = best
        rank_in_pack[row, item] = counts[row, best]
        loads[row, best] = loads[row, best] + weight[row, item]
        counts[row, best] += 1
    return pack_index, rank_in_pack


def balanced_packing_float64(weight: torch.Tensor, num_packs: int):
    """DeepSeek's own packing, which SGLang copies: each pack's load is a
    float64 sum (Python floats of ``weight.tolist()``), not a float32 one."""
    return balanced_packing(weight, num_packs, load_dtype=torch.float64)


def balanced_packing_loops(weight: torch.Tensor, num_packs: int):
    """The same packing with per-row, per-item Python loops over torch scalars.

    This is the loop structure of the reference itself, so its cost is the
    reference's; the benchmarks time it as "torch reference".
    """
    rows, n = weight.shape
    per_pack = n // num_packs
    if per_pack == 1:
        return balanced_packing(weight, num_packs)
    order = weight.float().sort(-1, descending=True).indices
    pack_index = torch.full((rows, n), -1, dtype=torch.int64)
    rank_in_pack = torch.full((rows, n), -1, dtype=torch.int64)
    for r in range(rows):
        loads = [0] * num_packs
        counts = [0] * num_packs
        for item in order[r]:
            best = None
            for p in range(num_packs):
                if counts[p] < per_pack and (best is None or loads[p] < loads[best]):
                    best = p
            pack_index[r, item] = best
            rank_in_pack[r, item] = counts[best]
            loads[best] = loads[best] + weight[r, item]
            counts[best] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight: torch.Tensor, num_phy: int):
    rows, num_log = weight.shape
    phy2log = torch.arange(num_phy).repeat(rows, 1)
    rank = torch.zeros(rows, num_phy, dtype=torch.int64)
    logcnt = torch.ones(rows, num_log, dtype=torch.int64)
    row = torch.arange(rows)
    for slot in range(num_log, num_phy):
        hottest = (weight / logcnt).max(dim=-1).indices
        phy2log[:, slot] = hottest
        rank[:, slot] = logcnt[row, hottest]
        logcnt[row, hottest] += 1
    return phy2log, rank, logcnt


def _invert(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv.scatter_(1, perm, torch.arange(perm.shape[1]).expand_as(perm).contiguous())
    return inv


def rebalance_experts_hierarchical(weight, num_physical_experts, num_groups, num_nodes, num_gpus,
                                   packing=balanced_packing):
    layers, num_log = weight.shape
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    log_per_node = num_log // num_nodes
    phy_per_node = num_physical_experts // num_nodes
    slots_per_gpu = num_physical_experts // num_gpus

    # 1. groups onto nodes; experts renumbered node-major ("mlog").
    group_load = weight.unflatten(-1, (num_groups, group_size)).sum(-1)
    node, rank_on_node = packing(group_load, num_nodes)
    first_mlog = (node * groups_per_node + rank_on_node) * group_size
    log2mlog = (first_mlog.unsqueeze(-1) + torch.arange(group_size)).flatten(-2)
    mlog2log = _invert(log2mlog)

    # 2. replicas within each node, rows = (layer, node).
    mlog_load = weight.gather(-1, mlog2log).reshape(layers * num_nodes, log_per_node)
    phy2mlog, phy_rank, mlog_count = replicate_experts(mlog_load, phy_per_node)

    # 3. each node's replicas onto its GPUs.
    replica_load = (mlog_load / mlog_count).gather(-1, phy2mlog)
    gpu, rank_on_gpu = packing(replica_load, num_gpus // num_nodes)
    slot_of_phy = gpu * slots_per_gpu + rank_on_gpu
    phy_of_slot = _invert(slot_of_phy)

    slot2mlog = phy2mlog.gather(-1, phy_of_slot).reshape(layers, num_nodes, phy_per_node)
    slot2mlog = (slot2mlog + (torch.arange(num_nodes) * log_per_node).view(1, -1, 1)).flatten(-2)
    slot2log = mlog2log.gather(-1, slot2mlog)
    slot_rank = phy_rank.gather(-1, phy_of_slot).reshape(layers, -1)
    logcnt = mlog_count.reshape(layers, -1).gather(-1, log2mlog)
    return slot2log, slot_rank, logcnt


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, packing=balanced_packing):
    layers, num_log = weight.shape
    weight = weight.float().cpu()
    if num_groups % num_nodes == 0:
        phy2log, rank, logcnt = rebalance_experts_hierarchical(
            weight, num_replicas, num_groups, num_nodes, num_gpus, packing
        )
    else:
        phy2log, rank, logcnt = rebalance_experts_hierarchical(weight, num_replicas, 1, 1, num_gpus, packing)
    max_count = num_replicas - num_log + 1
    log2phy = torch.full((layers, num_log, max_count), -1, dtype=torch.int64)
    slots = torch.arange(num_replicas).expand(layers, -1)
    for layer in range(layers):
        log2phy[layer, phy2log[layer], rank[layer]] = slots[layer]
    return phy2log, log2phy, logcnt


def rebalance_experts_loops(weight, num_replicas, num_groups, num_nodes, num_gpus):
    """``rebalance_experts`` packing with the reference's own per-item loops."""
    return rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, balanced_packing_loops)


def sglang_deepseek(weight, num_replicas, num_groups, num_nodes, num_gpus, enable_hierarchical):
    """SGLang's ``deepseek.rebalance_experts``: float64 packing, the global policy unless
    ``enable_hierarchical``, ``log2phy`` cut to the largest replica count."""
    if not enable_hierarchical:
        num_groups, num_nodes = 1, 1
    phy2log, log2phy, logcnt = rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus,
                                                 balanced_packing_float64)
    return phy2log, log2phy[..., :int(logcnt.max())], logcnt


REFERENCES = {
    "balanced_packing": balanced_packing,
    "balanced_packing_loops": balanced_packing_loops,
    "rebalance_experts_loops": rebalance_experts_loops,
    "replicate_experts": replicate_experts,
    "rebalance_experts_hierarchical": rebalance_experts_hierarchical,
    "rebalance_experts": rebalance_experts,
    "sglang_deepseek": sglang_deepseek,
}
