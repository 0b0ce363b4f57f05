"""The copies that take one placement to another."""

from __future__ import annotations

import numpy as np

from .._jit import jit

_ONE = np.uint64(1)


@jit
def migration_rows(old, new, num_gpus, num_nodes, num_logical, rows, counts, lo, hi):
    """Copies taking ``old`` to ``new`` for layers ``lo:hi``.

    Layer ``l`` writes its rows of (layer, expert, src GPU, src slot, dst GPU,
    dst slot) from ``rows[l * R]`` on and its count to ``counts[l]``.
    """
    num_phy = new.shape[1]
    per_gpu = num_phy // num_gpus
    gpus_per_node = num_gpus // num_nodes
    start = np.empty(num_logical + 1, dtype=np.int64)
    fill = np.empty(num_logical, dtype=np.int64)
    slots = np.empty(num_phy, dtype=np.int64)
    sends = np.empty(num_gpus, dtype=np.int64)
    # on_gpu[e] == stamp: the old placement has e on the GPU being filled
    # (a fresh stamp per GPU and layer, so nothing is ever cleared).
    on_gpu = np.zeros(num_logical, dtype=np.int64)
    stamp = 0
    for layer in range(lo, hi):
        # This layer's maps as unsigned ids (the same bits: ids are never
        # negative here).  Numba adds a negative-index fix-up to every signed
        # subscript; these loops subscript by expert id at every slot.
        o = old[layer].view(np.uint64)
        nw = new[layer].view(np.uint64)
        # Old slots of each expert, grouped (counting sort).
        start[:] = 0
        for q in range(num_phy):
            start[o[q] + _ONE] += 1
        for e in range(num_logical):
            start[e + 1] += start[e]
        for e in range(num_logical):
            fill[e] = start[e]
        for q in range(num_phy):
            x = o[q]
            slots[fill[x]] = q
            fill[x] += 1
        sends[:] = 0
        n = layer * num_phy
        # Loops per GPU: a 64-bit division per slot cost most of the kernel.
        for g in range(num_gpus):
            stamp += 1
            for k in range(g * per_gpu, (g + 1) * per_gpu):
                on_gpu[o[k]] = stamp
            node = g // gpus_per_node
            for q in range(g * per_gpu, (g + 1) * per_gpu):
                e = nw[q]
                if on_gpu[e] == stamp:
                    continue
                best = -1
                best_local = False
                for k in range(start[e], start[e + _ONE]):
                    src = slots[k]
                    h = src // per_gpu
                    local = h // gpus_per_node == node
                    if best < 0 or (local and not best_local) or (
                        local == best_local and sends[h] < sends[best // per_gpu]
                    ):
                        best = src
                        best_local = local
                rows[n, 0] = layer
                rows[n, 1] = np.int64(e)
                rows[n, 2] = best // per_gpu if best >= 0 else -1
                rows[n, 3] = best
                rows[n, 4] = g
                rows[n, 5] = q
                if best >= 0:
                    sends[best // per_gpu] += 1
                n += 1
        counts[layer] = n - layer * num_phy


@jit
def gather_copies(rows, counts, num_phy, gpus_per_node, out):
    """Columns ``out[6, total]`` of the rows each layer wrote (see
    ``migration_rows``), in layer order; returns how many stay in a node."""
    n = 0
    intra = 0
    for layer in range(counts.shape[0]):
        for r in range(layer * num_phy, layer * num_phy + counts[layer]):
            for k in range(6):
                out[k, n] = rows[r, k]
            src = rows[r, 2]
            intra += src >= 0 and src // gpus_per_node == rows[r, 4] // gpus_per_node
            n += 1
    return intra
