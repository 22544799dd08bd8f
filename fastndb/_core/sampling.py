r"""Content-keyed random choices: subsets that depend on what the samples are, not on their order.

Every random subset taken from real samples (the holdout split, the k-means++ seeding sample, the metric's
bounded sample buffers) is chosen by a seeded hash of each sample's bits: the rows with the smallest keys are
taken. The choice is therefore the same whatever the order of the samples, however they were batched, and
however they are sharded over the ranks of a distributed job, and a single process fed the union of the shards
makes exactly the same choice.

The key of a row :math:`x \in \mathbb{R}^D` is a multilinear hash of the bit patterns :math:`b_j` of its values
rounded to float32 (``uint8`` scaled to [0, 1] first, as everywhere),

.. math:: h(x) = \sum_{j=1}^{D} a_j\, b_j \bmod 2^{64},

with odd coefficients :math:`a_j` drawn from ``seed``. It is computed with wrapping int64 arithmetic, which is
exact and associative, so a key does not depend on the device, the chunking or the reduction order. Distinct
rows collide with probability about :math:`2^{-62}`.

Identical rows (duplicates) share a content key, so a subset by content keys alone would take all copies of a
sample or none: a holdout split of data with many copies would put each distinct sample wholly on one side. The
``r``-th copy of a sample (``r = 0, 1, ...``) is therefore ranked by :math:`\operatorname{mix}(h(x), r)` (a
splitmix64 finaliser; the first copy keeps :math:`h(x)`), which spreads the copies over the ranking like distinct
samples. Copies are interchangeable, so which copy gets which ``r`` does not matter: the content of every subset
still depends only on the multiset of samples, not on their order or sharding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastndb._core.collectives import Collective, SingleProcess
from fastndb._core.features import to_float
from fastndb._core.sync import host_values

# int64 temporaries per chunk: on the CPU 2 MiB stays in cache (measured 0.04 s for 50k x 784, 0.10 s at 32 MiB);
# on a GPU a chunk that small would launch hundreds of tiny kernels per pass: 256 MiB chunks there
_KEY_CHUNK_ELEMENTS = 2**18
_KEY_CHUNK_ELEMENTS_GPU = 2**25


def _chunk_elements(device: torch.device) -> int:
    return _KEY_CHUNK_ELEMENTS if device.type == "cpu" else _KEY_CHUNK_ELEMENTS_GPU

# salts keep the streams of one seed independent
SPLIT_SALT = 0x5B11
SEEDING_SALT = 0x5EED
REAL_BUFFER_SALT = 0x4EA1
FAKE_BUFFER_SALT = 0xFA4E


def hash_coefficients(num_features: int, seed: int, salt: int, device: torch.device) -> Tensor:
    """``(D,)`` odd int64 hash coefficients drawn from ``seed`` and ``salt`` on a CPU generator."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + salt) % 2**63)
    coefficients = torch.randint(-(2**62), 2**62, (num_features,), generator=generator, dtype=torch.int64)
    return (coefficients * 2 + 1).to(device)


def _bits(chunk: Tensor) -> Tensor:
    """float32 bit patterns of a chunk, as int64.

    Hashing the float32 value after :func:`~fastndb._core.features.to_float` makes a sample's key the same whether it
    arrives as float64, float32 or float16, and a ``uint8`` image the same key as its ``/ 255`` float version.
    (``-0.0`` and ``0.0`` have different bits, so they give different keys: harmless, keys only order samples.)
    """
    as_float32 = to_float(chunk).to(torch.float32).contiguous()
    return as_float32.view(torch.int32).to(torch.int64)


def row_keys(x: Tensor, seed: int, salt: int = 0) -> Tensor:
    """Seeded hash key of every row: ``(N,)`` int64 on ``x``'s device (see the module docstring).

    Args:
        x: ``(N, D)`` samples, any real dtype (keys are those of the values rounded to float32).
        seed: seed of the hash coefficients.
        salt: stream number, for independent keys from one seed.

    Example:
        >>> x = torch.randn(5, 3)
        >>> bool((row_keys(x, seed=0) == row_keys(x.flip(0), seed=0).flip(0)).all())  # order does not matter
        True
        >>> bool(row_keys(x, seed=0)[0] == row_keys(x[:1].clone(), seed=0)[0])  # nor the company a row keeps
        True
    """
    n, d = x.shape
    coefficients = hash_coefficients(d, seed, salt, x.device)
    keys = torch.empty(n, dtype=torch.int64, device=x.device)
    rows = max(1, _chunk_elements(x.device) // max(d, 1))
    for start in range(0, n, rows):
        keys[start : start + rows] = (_bits(x[start : start + rows]) * coefficients).sum(dim=1)
    return keys


_MASK_27 = (1 << 37) - 1
_MASK_31 = (1 << 33) - 1


def mix64(keys: Tensor, salt: Tensor | int) -> Tensor:
    """splitmix64's finaliser of ``keys + salt * golden`` in wrapping int64 arithmetic: a new pseudo-random key.

    Example:
        >>> k = torch.tensor([5, 5, 6])
        >>> m = mix64(k, torch.tensor([1, 2, 1]))
        >>> bool(m[0] != m[1]) and bool(m[0] != m[2])
        True
    """
    z = keys + salt * -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    z = (z ^ ((z >> 27) & _MASK_27)) * -7723592293110705685  # 0x94D049BB133111EB
    return z ^ ((z >> 31) & _MASK_31)


def spread_copies(keys: Tensor) -> Tensor:
    """Keys with the copies of a key spread out: the ``r``-th occurrence (``r >= 1``, in the order given) of a key
    becomes ``mix64(key, r)``; first occurrences keep their key (see the module docstring).

    Example:
        >>> out = spread_copies(torch.tensor([7, 3, 7, 7]))
        >>> out[:2].tolist(), len(set(out.tolist()))
        ([7, 3], 4)
    """
    if keys.numel() < 2:
        return keys
    order = torch.sort(keys, stable=True).indices
    ordered = keys[order]
    occurrence = torch.arange(keys.numel(), device=keys.device) - torch.searchsorted(ordered, ordered)
    spread = torch.where(occurrence > 0, mix64(ordered, occurrence), ordered)
    out = torch.empty_like(keys)
    out[order] = spread
    return out


def _raw_words(chunk: Tensor) -> Tensor:
    """The bytes of each row of a chunk as int64 words (int32, int16 or uint8 pieces, by what divides the row)."""
    raw = chunk.contiguous().view(torch.uint8).reshape(chunk.shape[0], -1)
    width = raw.shape[1]
    piece = torch.int32 if width % 4 == 0 else torch.int16 if width % 2 == 0 else torch.uint8
    return raw.view(piece).to(torch.int64)


def content_fingerprint(x: Tensor) -> tuple:
    """An order-sensitive 128-bit fingerprint of a tensor's exact bytes, computed on its own device.

    Two seeded multilinear hashes of every row's raw bytes, each mixed with the row's index and summed with
    wrapping int64 arithmetic: one pass over the data where it lives and one host read of two numbers (no host
    copy of the samples). The same bytes give the same fingerprint on every device. The bin caches' content key.

    Example:
        >>> x = torch.randn(4, 3)
        >>> same, flipped = content_fingerprint(x.clone()), content_fingerprint(x.flip(0))
        >>> content_fingerprint(x) == same, content_fingerprint(x) == flipped
        (True, False)
    """
    return (*fingerprint_totals(x).tolist(), tuple(x.shape), str(x.dtype))


def fingerprint_totals(x: Tensor) -> Tensor:
    """The two 64-bit hashes of :func:`content_fingerprint` as a ``(2,)`` int64 tensor on ``x``'s device, without
    the host read (to read many fingerprints at once)."""
    if x.numel() == 0:
        return torch.zeros(2, dtype=torch.int64, device=x.device)
    flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(-1, 1)
    n = flat.shape[0]
    words = max(1, flat[:1].contiguous().view(torch.uint8).numel() // 4 or 1)
    rows = max(1, _chunk_elements(x.device) // words)
    totals = torch.zeros(2, dtype=torch.int64, device=x.device)
    coefficients: list[Tensor] = []
    for start in range(0, n, rows):
        chunk = _raw_words(flat[start : start + rows])
        if not coefficients:
            coefficients = [hash_coefficients(chunk.shape[1], seed, 0xC0DE, x.device) for seed in (1, 2)]
        index = torch.arange(start + 1, start + 1 + chunk.shape[0], device=x.device)
        for slot, coefficient in enumerate(coefficients):
            totals[slot] += mix64((chunk * coefficient).sum(dim=1), index).sum()
    return totals


def key_positions(keys: Tensor, comm: Collective | None = None) -> tuple[Tensor, int]:
    """Position of each local row when the keys of all ranks are sorted, and the total number of rows.

    Copies of a key (duplicate rows) are spread over the ranking by :func:`spread_copies` (occurrences counted
    in rank order, then local position), so a subset of the smallest positions takes its share of each sample's
    copies.

    Args:
        keys: ``(n,)`` int64 keys of this rank's rows.
        comm: collective over the ranks (default: this process only).

    Returns:
        ``positions (n,)`` int64 in ``[0, N)``, distinct over all ranks, and ``N``.

    Example:
        >>> key_positions(torch.tensor([30, 10, 20]))
        (tensor([2, 0, 1]), 3)
    """
    comm = comm or SingleProcess()
    all_keys, lengths = comm.all_gather_cat(keys)
    total = sum(lengths)
    order = torch.sort(spread_copies(all_keys), stable=True).indices
    positions = torch.empty_like(order)
    positions[order] = torch.arange(total, device=order.device)
    offset = sum(lengths[: comm.rank])
    return positions[offset : offset + keys.shape[0]], total


def gather_by_position(x: Tensor, positions: Tensor, size: int, comm: Collective | None = None) -> Tensor:
    """The rows of all ranks whose position is below ``size``, as one ``(size, D)`` tensor in position order.

    Example:
        >>> x = torch.tensor([[3.0], [1.0], [2.0]])
        >>> gather_by_position(x, torch.tensor([2, 0, 1]), 2).tolist()
        [[1.0], [2.0]]
    """
    comm = comm or SingleProcess()
    chosen = positions < size
    rows, _ = comm.all_gather_cat(x[chosen])
    slots, _ = comm.all_gather_cat(positions[chosen])
    out = torch.empty((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    out[slots] = rows
    return out


class _CopyCounter:
    """How many copies of each content key a stream has offered: sorted ``(T,)`` int64 keys and counts, for the
    distinct keys seen (16 bytes each), so that the ``r``-th copy of a sample gets the ``r``-th spread key whatever
    the batching."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.counts: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None or self.counts is None else 16 * self.keys.numel()

    def occurrences(self, keys: Tensor) -> Tensor:
        """Occurrence index of each of ``keys`` (copies before it in this batch and in earlier ones); records them.

        One host read (how many keys are new to the table, which sizes the table's growth); everything else is
        fixed-size index arithmetic.
        """
        order = torch.sort(keys, stable=True).indices
        ordered = keys[order]
        first_of_run = torch.searchsorted(ordered, ordered)
        within = torch.arange(keys.numel(), device=keys.device) - first_of_run
        run_length = torch.searchsorted(ordered, ordered, right=True) - first_of_run
        if self.keys is None or self.counts is None:
            self.keys = ordered[:0]
            self.counts = torch.zeros(0, dtype=torch.int64, device=keys.device)
        table_keys, table_counts = self.keys.to(keys.device), self.counts.to(keys.device)
        if table_keys.numel():
            slot = torch.searchsorted(table_keys, ordered).clamp_max_(table_keys.numel() - 1)
            known = table_keys[slot] == ordered
            before = torch.where(known, table_counts[slot], 0)
            table_counts = table_counts.index_add(0, slot, known.to(torch.int64))  # known keys: one more each copy
        else:
            known = torch.zeros_like(ordered, dtype=torch.bool)
            before = torch.zeros_like(ordered)
        is_new = (within == 0) & ~known
        (num_new,) = host_values(is_new.sum().view(1))  # the one host read: how far the table grows
        pick = torch.argsort((~is_new).to(torch.int8), stable=True)[:num_new]
        merged_keys = torch.cat([table_keys, ordered[pick]])
        merged_counts = torch.cat([table_counts, run_length[pick]])
        resort = torch.sort(merged_keys).indices
        self.keys, self.counts = merged_keys[resort], merged_counts[resort]
        out = torch.empty_like(keys)
        out[order] = within + before
        return out

    def forget(self, keys: Tensor) -> None:
        """Undo :meth:`occurrences` of ``keys`` (the last call's), so that they can be recorded again in pieces."""
        if self.keys is None or self.counts is None:
            return
        slot = torch.searchsorted(self.keys, keys)
        self.counts = self.counts.index_add(0, slot, -torch.ones_like(keys))

    def clear(self) -> None:
        self.keys = self.counts = None


class SmallestKeyBuffer:
    """At most ``capacity`` samples: those with the smallest keys among everything added (bottom-k sampling).

    A uniform random sample (without replacement) of a stream whose content does not depend on the order or
    batching of the stream. The ``r``-th copy of a repeated sample is keyed like a distinct sample
    (:func:`spread_copies`), so a stream that repeats a few outputs is sampled in proportion, not "all copies of
    one or none": to number copies across batches the buffer counts the copies of every distinct sample it was
    offered (16 bytes per distinct sample). Storage for samples grows by doubling up to ``capacity`` rows, so it
    follows what was added, never more than ``capacity x D``. A later batch of a wider float dtype (float64 after
    float32) promotes the stored samples.

    Args:
        capacity: most samples kept.
        seed: seed of the keys.
        salt: key stream (see the module constants).

    Example:
        >>> buffer = SmallestKeyBuffer(capacity=3, seed=0, salt=0)
        >>> x = torch.arange(10.0)[:, None]
        >>> buffer.add(x[:4]); buffer.add(x[4:])
        >>> other = SmallestKeyBuffer(capacity=3, seed=0, salt=0)
        >>> other.add(x.flip(0))
        >>> sorted(buffer.samples[:, 0].tolist()) == sorted(other.samples[:, 0].tolist())
        True
        >>> buffer.seen, len(buffer)
        (10, 3)
    """

    def __init__(self, capacity: int, seed: int, salt: int) -> None:
        self.capacity = capacity
        self.seed = seed
        self.salt = salt
        self.seen = 0
        self._size = 0
        self._data: Tensor | None = None
        self._keys: Tensor | None = None
        self._copies = _CopyCounter()

    def __len__(self) -> int:
        return self._size

    @property
    def samples(self) -> Tensor | None:
        """The kept samples ``(n, D)`` (a view), or ``None`` before anything was added."""
        return None if self._data is None else self._data[: self._size]

    @property
    def nbytes(self) -> int:
        """Bytes of storage held (samples, keys and the copy counts)."""
        held = [t for t in (self._data, self._keys) if t is not None]
        return sum(t.numel() * t.element_size() for t in held) + self._copies.nbytes

    def _grow(self, rows: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Storage with room for ``rows`` samples (kept contents preserved)."""
        if self._data is not None and self._keys is not None and self._data.shape[0] >= rows:
            return self._data, self._keys
        current = 0 if self._data is None else self._data.shape[0]
        new_rows = min(self.capacity, max(rows, 2 * current))
        data = like.new_empty((new_rows, like.shape[1]))
        keys = torch.empty(new_rows, dtype=torch.int64, device=like.device)
        if self._data is not None and self._keys is not None:
            data[: self._size] = self._data[: self._size]
            keys[: self._size] = self._keys[: self._size]
        self._data, self._keys = data, keys
        return data, keys

    def add(self, x: Tensor) -> None:
        """Offer ``(b, D)`` samples (the same ``D`` as earlier ones). The storage follows the device of the newest
        batch (callers pass batches on the device they keep state on, e.g. a metric's)."""
        if self._data is not None:
            if x.shape[1] != self._data.shape[1]:
                raise ValueError(f"expected samples with {self._data.shape[1]} features like the earlier ones, "
                                 f"got {x.shape[1]}")
            if x.device != self._data.device:
                self._move(x.device)
            dtype = torch.promote_types(self._data.dtype, x.dtype)
            if dtype != self._data.dtype:
                self._data = self._data.to(dtype)
            x = x.to(dtype)
        elif self._copies.keys is not None and self._copies.keys.device != x.device:
            self._move(x.device)
        self.seen += x.shape[0]
        content = row_keys(x, self.seed, self.salt)
        occurrence = self._copies.occurrences(content)
        keys = torch.where(occurrence > 0, mix64(content, occurrence), content)
        fits = min(x.shape[0], self.capacity - self._size)
        if fits == x.shape[0]:  # room for all of it
            data, old_keys = self._grow(self._size + fits, x)
            data[self._size : self._size + fits] = x
            old_keys[self._size : self._size + fits] = keys
            self._size += fits
            return
        if self._size < self.capacity:  # fill the free rows first: bottom-k does not depend on the order of arrival
            free = self.capacity - self._size
            self.seen -= x.shape[0]
            self._copies.forget(content)
            self.add(x[:free])
            self.add(x[free:])
            return
        # Full: keep the ``capacity`` smallest keys of old and new. Written with fixed-size index arithmetic only
        # (no nonzero, no boolean-mask indexing), so it makes no host wait on a GPU: the incoming rows that win
        # are ranked first, the slots of the old rows that lose are ranked first, and the first ``m`` of each are
        # paired, ``m = min(capacity, b)``; pairs beyond the number of winners leave their slot as it was.
        data, old_keys = self._grow(self.capacity, x)
        size = self.capacity
        candidates = torch.cat([old_keys, keys])
        keep = torch.topk(candidates, size, largest=False).indices
        from_new = keep >= size
        kept_old = torch.zeros(size, dtype=torch.int64, device=x.device).scatter_add_(
            0, torch.where(from_new, 0, keep), (~from_new).to(torch.int64)
        )
        m = min(size, x.shape[0])
        winners = keep[torch.argsort((~from_new).to(torch.int8), stable=True)[:m]] - size  # incoming rows first
        slots = torch.argsort(kept_old, stable=True)[:m]  # the slots of old rows that lost come first
        valid = torch.arange(m, device=x.device) < from_new.sum()
        source = winners.clamp(0, x.shape[0] - 1)
        data[slots] = torch.where(valid[:, None], x[source].to(data.dtype), data[slots])
        old_keys[slots] = torch.where(valid, keys[source], old_keys[slots])

    def known(self, x: Tensor) -> Tensor:
        """``(b,)`` bool: which rows of ``x`` have the content of a sample offered before (kept or not)."""
        table = self._copies.keys
        content = row_keys(x, self.seed, self.salt)
        if table is None or table.numel() == 0:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        table = table.to(x.device)
        slot = torch.searchsorted(table, content).clamp_max_(table.numel() - 1)
        return table[slot] == content

    def merge(self, other: SmallestKeyBuffer) -> None:
        """Take in what ``other`` (same seed and salt) was offered, as if its stream had been offered here too: the
        ``capacity`` smallest keys of both, the copy counts summed. Copies of one sample offered to both buffers are
        numbered by each on its own (as on the ranks of a distributed job), so they may share a key.

        Raises:
            ValueError: ``other`` has another seed or salt, or samples with another number of features.
        """
        if (other.seed, other.salt) != (self.seed, self.salt):
            raise ValueError(f"merge: the buffers key samples with seeds {self.seed} and {other.seed}; "
                             f"only buffers of the same seed can be merged")
        theirs = other.samples
        if theirs is not None and other._keys is not None:
            mine = self.samples
            if mine is not None and mine.shape[1] != theirs.shape[1]:
                raise ValueError(f"merge: expected samples with {mine.shape[1]} features like the earlier ones, "
                                 f"got {theirs.shape[1]}")
            device = theirs.device if mine is None else mine.device
            their_keys = other._keys[: other._size].to(device)
            if mine is None or self._keys is None:
                data, keys = theirs.to(device).clone(), their_keys.clone()
            else:
                dtype = torch.promote_types(mine.dtype, theirs.dtype)
                data = torch.cat([mine.to(dtype), theirs.to(device, dtype)])
                keys = torch.cat([self._keys[: self._size], their_keys])
            if keys.numel() > self.capacity:
                keep = torch.topk(keys, self.capacity, largest=False).indices
                data, keys = data.index_select(0, keep), keys.index_select(0, keep)
            self._data, self._keys, self._size = data, keys, keys.numel()
        if other._copies.keys is not None and other._copies.counts is not None:
            device = other._copies.keys.device if self._copies.keys is None else self._copies.keys.device
            parts = [t for t in (self._copies.keys, other._copies.keys.to(device)) if t is not None]
            counts = [t for t in (self._copies.counts, other._copies.counts.to(device)) if t is not None]
            table, inverse = torch.unique(torch.cat(parts), sorted=True, return_inverse=True)
            self._copies.keys = table
            self._copies.counts = torch.zeros_like(table).index_add_(0, inverse, torch.cat(counts))
        self.seen += other.seen

    def shrink(self, capacity: int) -> None:
        """Keep at most ``capacity`` samples from here on: the smallest keys of those kept, which is what a buffer of
        that capacity would hold after the same stream."""
        self.capacity = capacity
        if self._size > capacity and self._data is not None and self._keys is not None:
            keep = torch.topk(self._keys[: self._size], capacity, largest=False).indices
            self._data = self._data.index_select(0, keep)
            self._keys = self._keys.index_select(0, keep)
            self._size = capacity

    def clear(self) -> None:
        """Drop every sample and free the storage."""
        self.seen = 0
        self._size = 0
        self._data = self._keys = None
        self._copies.clear()

    def _move(self, device: torch.device) -> None:
        """Move the storage (samples, keys, copy counts) to ``device``."""
        if self._data is not None and self._keys is not None:
            self._data, self._keys = self._data.to(device), self._keys.to(device)
        if self._copies.keys is not None and self._copies.counts is not None:
            self._copies.keys, self._copies.counts = self._copies.keys.to(device), self._copies.counts.to(device)

    def state(self) -> dict:
        """A picklable snapshot (the kept samples, their keys, the copy counts and the counter)."""
        samples = self.samples
        copies = self._copies
        return {
            "seen": self.seen,
            "samples": None if samples is None else samples.clone(),
            "keys": None if self._keys is None else self._keys[: self._size].clone(),
            "copy_keys": None if copies.keys is None else copies.keys.clone(),
            "copy_counts": None if copies.counts is None else copies.counts.clone(),
        }

    def load_state(self, state: dict, device: torch.device | None = None) -> None:
        """Restore a :meth:`state` snapshot (onto ``device``, if given)."""
        self.clear()
        if state["samples"] is not None:
            self._data, self._keys = state["samples"].clone(), state["keys"].clone()
            self._size = self._data.shape[0]
        if state.get("copy_keys") is not None:
            self._copies.keys, self._copies.counts = state["copy_keys"].clone(), state["copy_counts"].clone()
        self.seen = int(state["seen"])
        self.shrink(self.capacity)  # a snapshot of a larger buffer: what this capacity would have kept
        if device is not None:
            self._move(device)
