"""Find host-device synchronisations in Python code, on any device (the CPU included).

On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` reports every synchronising CUDA call, but only on a GPU.
:class:`HostSyncCounter` is a ``TorchFunctionMode`` that records the torch operations which read a tensor's
values back to the host, or whose output shape depends on them (so a GPU would have to wait): ``item``,
``tolist``, ``bool()/int()/float()`` of a tensor, ``nonzero``/``argwhere``, boolean-mask indexing,
``masked_select``, ``unique``, ``bincount``, ``repeat_interleave`` without ``output_size``, one-argument
``where``, ``.cpu()``/``.numpy()``. It sees Python-level calls only (not the backward pass, not syncs inside
kernels), which makes it a CPU-side check for CI; the GPU check stays authoritative.

    with HostSyncCounter() as syncs:
        model(batch).loss.backward()
    assert not syncs.events, syncs.report()
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

_READ_BACK = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__complex__", "__format__",
              "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "cpu", "numpy"}
_TORCH_DIR = str(Path(torch.__file__).resolve().parent)
_THIS = str(Path(__file__).resolve())


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@dataclass
class SyncEvent:
    op: str
    where: str  # "file:line in function" of the innermost caller outside torch


class HostSyncCounter(TorchFunctionMode):
    """Records :class:`SyncEvent` s of the operations listed in the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[SyncEvent] = []

    def _op(self, func, args, kwargs) -> str | None:
        name = getattr(func, "__name__", "")
        if name in _READ_BACK:
            return name
        if name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1:
            return f"{name} (boolean mask)" if _has_bool_index(args[1]) else None
        if name == "repeat_interleave" and (kwargs or {}).get("output_size") is None:
            repeats = args[1] if len(args) > 1 else (kwargs or {}).get("repeats")
            return name if isinstance(repeats, torch.Tensor) else None
        if name == "where" and len(args) == 1 and not kwargs:
            return "where (one argument)"
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        op = self._op(func, args, kwargs)
        if op is not None:
            self.events.append(SyncEvent(op, self._caller()))
        return func(*args, **(kwargs or {}))

    @staticmethod
    def _caller() -> str:
        for frame in reversed(traceback.extract_stack()[:-2]):
            f = str(Path(frame.filename).resolve()) if frame.filename and not frame.filename.startswith("<") \
                else frame.filename
            if f != _THIS and not f.startswith(_TORCH_DIR):
                return f"{frame.filename}:{frame.lineno} in {frame.name}"
        return "?"

    def report(self, limit: int = 10) -> str:
        """``N host syncs`` and the most frequent (op, place) pairs."""
        if not self.events:
            return "0 host syncs"
        common = Counter((e.op, e.where) for e in self.events).most_common(limit)
        return f"{len(self.events)} host sync(s): " + "; ".join(f"{n}x {op} at {where}" for (op, where), n in common)
