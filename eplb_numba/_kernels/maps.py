"""``log2phy`` and ``logcnt`` of a placement: where each expert's replicas are."""

from __future__ import annotations

from .._jit import jit


@jit
def clear_table(table):
    """Every entry of 2-D ``table`` -1 (no replica)."""
    # Plain loops: Numba's broadcast assignment to a 2-D view is several
    # times slower than writing the rows out.
    for e in range(table.shape[0]):
        for k in range(table.shape[1]):
            table[e, k] = -1


@jit
def slot_order_maps(phy2log, log2phy, logcnt):
    """``log2phy`` and ``logcnt`` of any placement, replica ranks in slot order, -1 slots empty.

    For placements other than the reference's own, whose ranks come from the
    order replication made the replicas.
    """
    for layer in range(phy2log.shape[0]):
        slot_order_layer(phy2log[layer], log2phy[layer], logcnt[layer])


@jit
def slot_order_layer(phy2log, table, counts):
    """One layer of ``slot_order_maps``: ``table[e, r]`` the slot of e's r-th replica.

    An empty slot (-1, a lost GPU's) holds no replica.
    """
    clear_table(table)
    counts[:] = 0
    # Each replica's rank is its expert's count so far, used at once: no
    # second pass over the slots.
    for q in range(phy2log.shape[0]):
        e = phy2log[q]
        if e < 0:
            continue
        r = counts[e]
        counts[e] = r + 1
        table[e, r] = q
