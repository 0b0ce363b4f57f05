"""The copies that take one placement to another, possibly on another GPU set."""

from __future__ import annotations

import numpy as np

from .._jit import jit

_ONE = np.uint64(1)


@jit
def migration_rows(old, new, old_gpus, new_gpus, holder, src_node, num_nodes, num_logical, rows, counts, lo, hi):
    """Copies taking ``old`` (on ``old_gpus``) to ``new`` (on ``new_gpus``) for layers ``lo:hi``.

    Expert ids run to ``num_logical``, which stands for an empty slot: in
    ``old`` it holds nothing (nor does a slot of a GPU that cannot send),
    in ``new`` it needs nothing.  ``holder[n]``: the old GPU that new GPU
    ``n`` is, alive (-1: none, so GPU n starts empty); ``src_node[g]``: old
    GPU g's node in the new layout (-1: it leaves).  Layer ``l`` writes its
    rows of (layer, expert, src GPU (old numbering), src slot, dst GPU, dst
    slot) from ``rows[l * R]`` on (R: new's slots) and its count to
    ``counts[l]``; src GPU -1: no live GPU holds the expert.
    """
    num_old = old.shape[1]
    num_phy = new.shape[1]
    per_old = num_old // old_gpus
    per_gpu = num_phy // new_gpus
    gpus_per_node = new_gpus // num_nodes
    top = np.uint64(num_logical)
    # One bucket more than experts: the empty slots', grouped like the rest
    # and never asked for, so that no loop over the slots tests for them.
    start = np.empty(num_logical + 2, dtype=np.int64)
    fill = np.empty(num_logical + 1, dtype=np.int64)
    slots = np.empty(num_old, dtype=np.int64)
    sends = np.empty(old_gpus, dtype=np.int64)
    # on_gpu[e] == stamp: the old placement has e on the GPU being filled
    # (a fresh stamp per GPU and layer, so nothing is ever cleared).
    on_gpu = np.zeros(num_logical + 1, dtype=np.int64)
    stamp = 0
    for layer in range(lo, hi):
        # This layer's maps as unsigned ids (the same bits: ids are never
        # negative here).  Numba adds a negative-index fix-up to every signed
        # subscript; these loops subscript by expert id at every slot.
        o = old[layer].view(np.uint64)
        nw = new[layer].view(np.uint64)
        # Old slots of each expert, grouped (counting sort).
        start[:] = 0
        for q in range(num_old):
            start[o[q] + _ONE] += 1
        for e in range(num_logical + 1):
            start[e + 1] += start[e]
        for e in range(num_logical + 1):
            fill[e] = start[e]
        for q in range(num_old):
            x = o[q]
            slots[fill[x]] = q
            fill[x] += 1
        sends[:] = 0
        n = layer * num_phy
        # Loops per GPU: a 64-bit division per slot cost most of the kernel.
        for g in range(new_gpus):
            stamp += 1
            h = holder[g]
            if h >= 0:
                for k in range(h * per_old, (h + 1) * per_old):
                    on_gpu[o[k]] = stamp
            node = g // gpus_per_node
            for q in range(g * per_gpu, (g + 1) * per_gpu):
                e = nw[q]
                if e >= top or on_gpu[e] == stamp:
                    continue
                best = -1
                best_local = False
                for k in range(start[e], start[e + _ONE]):
                    src = slots[k]
                    s = src // per_old
                    local = src_node[s] == node
                    if best < 0 or (local and not best_local) or (
                        local == best_local and sends[s] < sends[best // per_old]
                    ):
                        best = src
                        best_local = local
                rows[n, 0] = layer
                rows[n, 1] = np.int64(e)
                rows[n, 2] = best // per_old if best >= 0 else -1
                rows[n, 3] = best
                rows[n, 4] = g
                rows[n, 5] = q
                if best >= 0:
                    sends[best // per_old] += 1
                n += 1
        counts[layer] = n - layer * num_phy


@jit
def gather_copies(rows, counts, num_phy, src_node, gpus_per_node, out):
    """Columns ``out[6, total]`` of the rows each layer wrote (see
    ``migration_rows``), in layer order; returns how many stay within a
    node and how many no live GPU can source."""
    n = 0
    intra = 0
    storage = 0
    for layer in range(counts.shape[0]):
        for r in range(layer * num_phy, layer * num_phy + counts[layer]):
            for k in range(6):
                out[k, n] = rows[r, k]
            src = rows[r, 2]
            if src < 0:
                storage += 1
            else:
                intra += src_node[src] == rows[r, 4] // gpus_per_node
            n += 1
    return intra, storage
