"""Keep experts that stay on a GPU in the slot they already occupy."""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def preserve_slots(new_phy2log, old_phy2log, num_gpus, num_logical, out):
    """Reorder each GPU's slots of ``new_phy2log`` into ``out``.

    Per GPU: every old slot whose expert the new placement still puts on that
    GPU keeps it (the first unused new copy); the other new experts fill the
    remaining slots in order.  The same post-processing as vLLM's default
    policy applies to ``old_global_expert_indices``.
    """
    num_layers, num_phy = new_phy2log.shape
    per_gpu = num_phy // num_gpus
    # Per GPU, by counting instead of searching: ``avail[e]`` new copies of
    # e not yet claimed by an old slot; the claimed ones are e's first
    # copies in slot order, which is what a search for the first unused
    # copy would have taken.  ``skip[e]`` then passes over them when the
    # unclaimed copies fill the remaining slots in order.
    avail = np.zeros(num_logical, dtype=np.int64)
    skip = np.zeros(num_logical, dtype=np.int64)
    for layer in range(num_layers):
        for g in range(num_gpus):
            start = g * per_gpu
            new = new_phy2log[layer, start:start + per_gpu]
            old = old_phy2log[layer, start:start + per_gpu]
            dst = out[layer, start:start + per_gpu]
            for k in range(per_gpu):
                avail[new[k]] += 1
            for s in range(per_gpu):
                e = old[s]
                # An id outside the model (callers may pass any old map) is
                # simply not kept.
                if 0 <= e < num_logical and avail[e] > 0:
                    avail[e] -= 1
                    skip[e] += 1
                    dst[s] = e
                else:
                    dst[s] = -1
            s = 0
            for k in range(per_gpu):
                e = new[k]
                avail[e] = 0
                if skip[e] > 0:
                    skip[e] -= 1
                    continue
                while dst[s] >= 0:
                    s += 1
                dst[s] = e
