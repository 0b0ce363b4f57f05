"""Pinned host buffers for the torch adapter's CUDA calls, reused from call to call.

Page-locked memory is what lets a host-to-device copy run asynchronously,
and allocating it costs more than a whole plan; so each set of buffers is
allocated once and handed out again.  A set goes back with a CUDA event
recorded after the copies that read it, and is not handed out again until
that event has passed; the event goes out with it, to be recorded again
(creating one is a driver call, which costs tens of microseconds in some
sandboxes).  Calls in several threads each take their own set.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

# Sets kept per shape: more than the threads that plan at once wastes
# pinned memory, fewer allocates again.
_KEEP = 8


class PinnedPool:
    """Sets of pinned CPU tensors by shapes and dtypes; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[tuple, list[tuple[tuple[torch.Tensor, ...], Any]]] = {}

    def take(self, specs: tuple[tuple[tuple[int, ...], torch.dtype], ...],
             device: Any = None) -> tuple[tuple[torch.Tensor, ...], Any]:
        """A set of pinned tensors of these ``(shape, dtype)``s, free for the caller to write, and its
        event (None for a new set).  ``device``: the GPU whose stream the event is recorded on (an
        event belongs to one device)."""
        with self._lock:
            sets = self._free.get((specs, device))
            entry = sets.pop() if sets else None
        if entry is None:
            return tuple(torch.empty(shape, dtype=dtype, pin_memory=True) for shape, dtype in specs), None
        buffers, event = entry
        if event is not None:
            # The copies that read this set on its last use must be done.
            event.synchronize()
        return buffers, event

    def give(self, buffers: tuple[torch.Tensor, ...], event: Any, device: Any = None) -> None:
        """Return a set taken with ``take``; ``event`` passes once nothing reads it any more."""
        specs = tuple((tuple(t.shape), t.dtype) for t in buffers)
        with self._lock:
            sets = self._free.setdefault((specs, device), [])
            if len(sets) < _KEEP:
                sets.append((buffers, event))


POOL = PinnedPool()
