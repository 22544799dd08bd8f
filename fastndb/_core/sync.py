"""Host reads, in one place: every value the core reads back from a tensor goes through :func:`host_values`.

On a GPU each read stalls the host until the device has caught up (a synchronisation). Reading a few numbers
stacked into one tensor costs one wait instead of one per number; routing every read through one function makes
them countable on the CPU too (``tests/host_waits.py``), where the budgets of docs/gpu.md are enforced.
"""

from __future__ import annotations

from torch import Tensor


def host_values(t: Tensor) -> list:
    """The values of a small tensor as Python numbers (nested lists for more than one dimension): one host read.

    Example:
        >>> import torch
        >>> host_values(torch.tensor([1.5, 2.0]))
        [1.5, 2.0]
    """
    return t.detach().to("cpu", copy=True).tolist()
