"""Collectives: what bin fitting needs from the other processes of a ``torch.distributed`` job.

k-means (:mod:`fastndb._core.kmeans`), content-keyed sampling (:mod:`fastndb._core.sampling`) and :meth:`NDB.fit
<fastndb.NDB.fit>` are written once against :class:`Collective`. :class:`SingleProcess` is the identity (one
process holds all the data); :class:`TorchDistributed` runs the same code over the ranks of a process group,
each holding a shard of the data, with three operations: a sum all-reduce, a concatenating all-gather of shards
of different lengths, and a broadcast. Tensors travel on the device they live on, so the same code runs with
NCCL on CUDA tensors and with gloo on CPU tensors.

Every rank must make the same calls in the same order (as with any collective): call a distributed fit on all
ranks of the group, or pass ``distributed=False``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class Collective(Protocol):
    """The communication a distributed fit needs; every method is called by all ranks alike."""

    rank: int
    world_size: int

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Element-wise sum of ``t`` over ranks (identical on every rank); may reuse ``t``'s storage."""
        ...

    def all_gather_cat(self, t: Tensor) -> tuple[Tensor, list[int]]:
        """``t`` of every rank concatenated along dim 0 in rank order, and each rank's length.

        The first dimension may differ between ranks (zero included); the others must agree.
        """
        ...

    def broadcast(self, t: Tensor) -> Tensor:
        """Rank 0's ``t`` on every rank (``t`` must have the same shape and dtype everywhere)."""
        ...


class SingleProcess:
    """One process holds all the data: every collective is the identity."""

    rank = 0
    world_size = 1

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        return t

    def all_gather_cat(self, t: Tensor) -> tuple[Tensor, list[int]]:
        return t, [t.shape[0]]

    def broadcast(self, t: Tensor) -> Tensor:
        return t

    def __repr__(self) -> str:
        return "SingleProcess()"


class TorchDistributed:
    """Collectives over a ``torch.distributed`` process group (default: the whole world).

    Args:
        group: the process group, or ``None`` for the default group.
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._source = 0 if group is None else dist.get_global_rank(group, 0)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        t = t.contiguous()
        self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, group=self.group)
        return t

    def all_gather_cat(self, t: Tensor) -> tuple[Tensor, list[int]]:
        t = t.contiguous()
        length = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
        lengths_t = [torch.empty_like(length) for _ in range(self.world_size)]
        self._dist.all_gather(lengths_t, length, group=self.group)
        lengths = [int(v) for v in lengths_t]
        longest = max(lengths)
        if longest == 0:
            return t, lengths
        padded = t.new_zeros((longest, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._dist.all_gather(parts, padded, group=self.group)
        return torch.cat([part[:n] for part, n in zip(parts, lengths, strict=True)]), lengths

    def broadcast(self, t: Tensor) -> Tensor:
        t = t.contiguous()
        self._dist.broadcast(t, src=self._source, group=self.group)
        return t

    def __repr__(self) -> str:
        return f"TorchDistributed(rank={self.rank}, world_size={self.world_size})"


def distributed_ready(group: Any = None) -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process in ``group``."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    return torch.distributed.get_world_size(group) > 1


def resolve_collective(distributed: bool | None, group: Any = None) -> Collective:
    """The collective for a ``distributed`` option.

    Args:
        distributed: ``None`` (auto): across ranks when ``torch.distributed`` is initialised with more than one
            process; ``True``: across ranks (error when not initialised); ``False``: this process only.
        group: process group for the distributed case (``None``: the default group).

    Raises:
        TypeError: ``distributed`` is not a bool or ``None``.
        ValueError: ``distributed=True`` without an initialised process group.

    Example:
        >>> resolve_collective(None)  # no process group here
        SingleProcess()
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed: expected True, False or None, got {distributed!r}")
    if distributed is None:
        distributed = distributed_ready(group)
    if not distributed:
        return SingleProcess()
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        raise ValueError(
            "distributed=True: torch.distributed is not initialised; call torch.distributed.init_process_group "
            "first, or pass distributed=False"
        )
    return TorchDistributed(group)
