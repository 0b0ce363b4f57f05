"""Keep experts that stay on a GPU in the slot they already occupy."""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def preserve_slots(new_phy2log, old_phy2log, num_gpus, out):
    """Reorder each GPU's slots of ``new_phy2log`` into ``out``.

    Per GPU: every old slot whose expert the new placement still puts on that
    GPU keeps it (the first unused new copy); the other new experts fill the
    remaining slots in order.  The same post-processing as vLLM's default
    policy applies to ``old_global_expert_indices``.
    """
    num_layers, num_phy = new_phy2log.shape
    per_gpu = num_phy // num_gpus
    used = np.empty(per_gpu, dtype=np.bool_)
    kept = np.empty(per_gpu, dtype=np.bool_)
    for layer in range(num_layers):
        for g in range(num_gpus):
            start = g * per_gpu
            for s in range(per_gpu):
                used[s] = False
                kept[s] = False
            for s in range(per_gpu):
                target = old_phy2log[layer, start + s]
                for k in range(per_gpu):
                    if not used[k] and new_phy2log[layer, start + k] == target:
                        used[k] = True
                        kept[s] = True
                        out[layer, start + s] = target
                        break
            k = 0
            for s in range(per_gpu):
                if kept[s]:
                    continue
                while used[k]:
                    k += 1
                out[layer, start + s] = new_phy2log[layer, start + k]
                used[k] = True
