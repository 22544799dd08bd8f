"""Count the operations that make a CUDA device wait for the host, by dispatching on CPU tensors.

A ``TorchDispatchMode`` sees every ATen call. On a GPU these stall the stream until the device catches up:

- ``aten._local_scalar_dense``: ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``;
- a copy to the host: ``aten._to_copy`` with ``device=cpu`` (``fastndb._core.sync.host_values``, ``.cpu()`` of a
  device tensor), counted on the CPU too because the library reads values only through it;
- data-dependent output sizes: ``nonzero``, ``masked_select``, boolean-mask indexing (``index`` with a bool index),
  ``unique`` and ``unique_consecutive``, ``bincount`` (reads min and max), ``repeat_interleave`` without
  ``output_size``, ``equal``.

Deterministic-mode readiness: :data:`RAISES_ON_CUDA_DETERMINISTIC` lists the ops that
``torch.use_deterministic_algorithms(True)`` refuses on CUDA (torch 2.2 to 2.13), as the mode sees them.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
            "bincount", "equal", "repeat_interleave"}


def _raises_deterministic(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether this call would raise under ``torch.use_deterministic_algorithms(True)`` on a CUDA tensor."""
    if name in ("kthvalue", "histc", "put_", "put", "median", "nanmedian", "max_unpool2d", "nll_loss_forward"):
        return name not in ("median", "nanmedian") or len(args) > 1  # median with indices (dim given)
    if name == "cumsum":
        dtype = kwargs.get("dtype") or (args[2] if len(args) > 2 else None) or args[0].dtype
        return dtype.is_floating_point or dtype.is_complex
    if name == "bincount":
        return len(args) > 1 and args[1] is not None or kwargs.get("weights") is not None
    if name in ("scatter_reduce", "scatter_reduce_"):
        return (args[3] if len(args) > 3 else kwargs.get("reduce")) == "prod"
    return False


class HostWaits(TorchDispatchMode):
    """Context manager: ``.waits`` counts host-wait operations by name, ``.forbidden`` lists deterministic-mode
    violations, ``.total`` is the number of waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: Counter[str] = Counter()
        self.forbidden: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.waits.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not (name == "repeat_interleave" and kwargs.get("output_size") is not None):
            self.waits[name] += 1
        elif name == "_to_copy" and kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu":
            self.waits["to_host"] += 1
        elif name in ("index", "index_put_", "index_put") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
        ):
            self.waits["bool_mask_index"] += 1
        if _raises_deterministic(name, args, kwargs):
            self.forbidden.append(str(func))
        return func(*args, **kwargs)
