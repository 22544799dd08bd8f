"""Record every copy between devices that PyTorch dispatches (used by the CUDA test of the collapse monitor).

A ``TorchDispatchMode`` sees each ATen call, including those made from C++ (``.tolist()``, ``.item()``,
``.cpu()``), so nothing that moves tensor data between devices escapes it. Three ops do:

- ``aten._to_copy`` (``.to(device)``, ``.cpu()``, ``.tolist()``): from the input's device to the output's;
- ``aten.copy_`` (``dst.copy_(src)``): from ``src``'s device to ``dst``'s;
- ``aten._local_scalar_dense`` (``.item()``, ``float(t)``, ``bool(t)``): one element to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class Copy:
    op: str
    source: str
    target: str
    numel: int


class CrossDeviceCopies(TorchDispatchMode):
    """Context manager; ``.copies`` lists the :class:`Copy` of each cross-device transfer made inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[Copy] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "_to_copy":
            self._record(name, args[0].device, out.device, args[0].numel())
        elif name == "copy_":
            self._record(name, args[1].device, args[0].device, args[1].numel())
        elif name == "_local_scalar_dense" and args[0].device.type != "cpu":
            self.copies.append(Copy(name, str(args[0].device), "host", 1))
        return out

    def _record(self, name: str, source: torch.device, target: torch.device, numel: int) -> None:
        if source != target:
            self.copies.append(Copy(name, str(source), str(target), numel))

    def to_host(self) -> list[Copy]:
        """The copies from an accelerator to the CPU (or to a Python number)."""
        return [c for c in self.copies if c.source != "cpu" and c.target in ("cpu", "host")]
