"""The hierarchical placement of the reference, one layer at a time.

Step 1 packs expert groups onto nodes by group load; step 2 replicates
experts within each node; step 3 packs each node's replicas onto its GPUs.
The global policy is the same routine with one group and one node.

Index spaces, as in the reference: ``log`` is a logical expert, ``mlog`` its
position once groups are laid out node by node, ``phy`` a replica in the
order replication made it, and the output position is the replica's slot
after packing onto GPUs (GPU-major).
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .maps import clear_table
from .packing import SCAN_PACKS, greedy_pack, greedy_rows_f32
from .replication import replicate_row
from .sort import SORT_STACK_SIZE, argsort_desc


@jit
def place_layers(weight, group_sums, num_groups, num_nodes, num_gpus, phy2log, phyrank, logcnt, log2phy, split,
                 pack_dtype, lo, hi):
    """Hierarchical placement of layers ``lo:hi`` of float32 ``weight`` [L, E].

    ``group_sums`` [L, num_groups] holds precomputed group loads, or has zero
    rows to have them summed here.  Writes ``phy2log`` [L, R] and ``logcnt``
    [L, E]; also ``phyrank`` [L, R] (replica ranks), ``log2phy`` [L, E, R - E
    + 1] and ``split`` [L, num_groups] (each group's node) unless they have
    zero layers.  Packs add loads in the dtype of ``pack_dtype`` (an empty
    array): float32 as the reference does, or float64 as DeepSeek's own EPLB
    (and SGLang's copy of it) does with Python floats.  A dtype, not a flag,
    so that the reference's kernel compiles as before and DeepSeek's is a
    second specialisation, compiled only when used.  Scratch is allocated
    once per call, not per layer.
    """
    num_layers, num_log = weight.shape
    num_phy = phy2log.shape[1]
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    log_per_node = num_log // num_nodes
    phy_per_node = num_phy // num_nodes
    gpus_per_node = num_gpus // num_nodes
    slots_per_gpu = phy_per_node // gpus_per_node
    have_sums = group_sums.shape[0] == num_layers
    want_log2phy = log2phy.shape[0] == num_layers
    want_phyrank = phyrank.shape[0] == num_layers
    want_split = split.shape[0] == num_layers

    packs = max(num_nodes, gpus_per_node)
    loads = np.empty(packs, dtype=pack_dtype.dtype)
    items = np.empty(packs, dtype=np.int64)
    heap = np.empty(max(packs, log_per_node), dtype=np.int64)
    stack = np.empty(SORT_STACK_SIZE + 2 * max(num_groups, phy_per_node), dtype=np.int64)
    sums = np.empty(num_groups, dtype=np.float32)
    group_order = np.empty(num_groups, dtype=np.int64)
    group_node = np.empty(num_groups, dtype=np.int64)
    group_rank = np.empty(num_groups, dtype=np.int64)
    log2mlog = np.empty(num_log, dtype=np.int64)
    mlog2log = np.empty(num_log, dtype=np.int64)
    mlogcnt = np.empty(num_log, dtype=np.int64)
    tokens = np.empty(log_per_node, dtype=np.float32)
    cntf = np.empty(log_per_node, dtype=np.float32)
    ratio = np.empty(log_per_node, dtype=np.float32)
    # Step 3 packs a layer's nodes together (see greedy_rows_f32) where it can.
    together = loads.itemsize == 4 and slots_per_gpu > 1 and gpus_per_node <= SCAN_PACKS
    phy2mlog = np.empty((num_nodes, phy_per_node), dtype=np.int64)
    rank = np.empty((num_nodes, phy_per_node), dtype=np.int64)
    phy_load = np.empty((num_nodes, phy_per_node), dtype=np.float32)
    order = np.empty((num_nodes, phy_per_node), dtype=np.int64)
    gpu = np.empty((num_nodes, phy_per_node), dtype=np.int64)
    gpu_rank = np.empty((num_nodes, phy_per_node), dtype=np.int64)
    node_loads = np.empty((num_nodes, gpus_per_node), dtype=np.float32)
    node_items = np.empty((num_nodes, gpus_per_node), dtype=np.int64)
    node_keys = np.empty((num_nodes, gpus_per_node), dtype=np.int64)

    for layer in range(lo, hi):
        w = weight[layer]
        # Step 1: groups to nodes (one group per node keeps them in order).
        if groups_per_node > 1:
            for g in range(num_groups):
                if have_sums:
                    sums[g] = group_sums[layer, g]
                else:
                    # Sequential float32 sums; exact (so equal to torch's own
                    # reduction) for integer-valued loads whose group sums
                    # stay below 2**24.
                    s = np.float32(0.0)
                    for j in range(g * group_size, (g + 1) * group_size):
                        s += w[j]
                    sums[g] = s
            argsort_desc(sums, group_order, stack)
        greedy_pack(group_order, sums, num_nodes, group_node, group_rank, loads, items, heap)
        for g in range(num_groups):
            base_m = (group_node[g] * groups_per_node + group_rank[g]) * group_size
            if want_split:
                split[layer, g] = group_node[g]
            for j in range(group_size):
                e = g * group_size + j
                log2mlog[e] = base_m + j
                mlog2log[base_m + j] = e
        if want_log2phy:
            clear_table(log2phy[layer])
        for node in range(num_nodes):
            # Step 2: replicas within the node.
            base = node * log_per_node
            for j in range(log_per_node):
                tokens[j] = w[mlog2log[base + j]]
            cnt = mlogcnt[base:base + log_per_node]
            replicate_row(tokens, phy_per_node, phy2mlog[node], rank[node], cnt, cntf, ratio, heap)
            # The replicas' loads, in step 3's visiting order.
            for k in range(phy_per_node):
                m = phy2mlog[node, k]
                phy_load[node, k] = tokens[m] / np.float32(cnt[m])
            if slots_per_gpu > 1:
                argsort_desc(phy_load[node], order[node], stack)
            if not together:
                greedy_pack(order[node], phy_load[node], gpus_per_node, gpu[node], gpu_rank[node], loads, items, heap)
        # Step 3: each node's replicas to its GPUs.
        if together:
            greedy_rows_f32(order, phy_load, gpus_per_node, gpu, gpu_rank, node_loads, node_items, node_keys)
        for node in range(num_nodes):
            base = node * log_per_node
            out = node * phy_per_node
            for k in range(phy_per_node):
                slot = out + gpu[node, k] * slots_per_gpu + gpu_rank[node, k]
                e = mlog2log[base + phy2mlog[node, k]]
                phy2log[layer, slot] = e
                if want_log2phy:
                    log2phy[layer, e, rank[node, k]] = slot
                if want_phyrank:
                    phyrank[layer, slot] = rank[node, k]
        for e in range(num_log):
            logcnt[layer, e] = mlogcnt[log2mlog[e]]
