"""Keep experts that stay on a GPU in the slot they already occupy."""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def keep_slots(new, old, out, num_logical, avail, skip):
    """One GPU's slots: ``new``'s experts into ``out``, old experts kept in place.

    Every old slot whose expert ``new`` still holds keeps it (the first
    unclaimed copy); the other new experts fill the remaining slots in
    order.  Counting instead of searching: ``avail[e]`` counts new copies of
    e not yet claimed by an old slot; the claimed ones are e's first copies
    in slot order, which is what a search for the first unused copy would
    have taken, and ``skip[e]`` passes over them when the unclaimed copies
    fill in.  ``avail`` and ``skip`` (``num_logical`` long) are zero on entry
    and on return.
    """
    per_gpu = new.shape[0]
    for k in range(per_gpu):
        avail[new[k]] += 1
    for s in range(per_gpu):
        e = old[s]
        # An id outside the model (callers may pass any old map) is simply
        # not kept.
        if 0 <= e < num_logical and avail[e] > 0:
            avail[e] -= 1
            skip[e] += 1
            out[s] = e
        else:
            out[s] = -1
    s = 0
    for k in range(per_gpu):
        e = new[k]
        avail[e] = 0
        if skip[e] > 0:
            skip[e] -= 1
            continue
        while out[s] >= 0:
            s += 1
        out[s] = e


@jit
def preserve_slots(new_phy2log, old_phy2log, num_gpus, num_logical, out):
    """Reorder each GPU's slots of ``new_phy2log`` into ``out`` (see ``keep_slots``).

    The same post-processing as vLLM's default policy applies to
    ``old_global_expert_indices``.
    """
    avail = np.zeros(num_logical, dtype=np.int64)
    skip = np.zeros(num_logical, dtype=np.int64)
    for layer in range(new_phy2log.shape[0]):
        preserve_layer(new_phy2log[layer], old_phy2log[layer], num_gpus, num_logical, out[layer], avail, skip)


@jit
def preserve_layer(new, old, num_gpus, num_logical, out, avail, skip):
    """``keep_slots`` over one layer's GPUs (``avail``, ``skip`` as there)."""
    per_gpu = new.shape[0] // num_gpus
    for q in range(new.shape[0]):
        out[q] = new[q]
    # One pass over the slots, not a loop per GPU: most GPUs of a
    # movement-aware plan change no slot, and a changed slot is rare enough
    # for its branch to be predicted.  A GPU's slots are adjacent, so each
    # changed GPU is met once.
    done = -1
    for q in range(new.shape[0]):
        if new[q] != old[q]:
            g = q // per_gpu
            if g != done:
                done = g
                start = g * per_gpu
                stop = start + per_gpu
                # keep_slots would return new[start:stop] unchanged when no
                # slot that changes expert holds, or held, an expert found
                # on the other side: then every expert that stays is in the
                # same slots in both, and the newcomers already fill the
                # freed slots in order.
                kept = True
                for t in range(start, stop):
                    if new[t] != old[t]:
                        for u in range(start, stop):
                            if old[u] == new[t] or new[u] == old[t]:
                                kept = False
                                break
                    if not kept:
                        break
                if not kept:
                    keep_slots(new[start:stop], old[start:stop], out[start:stop], num_logical, avail, skip)
