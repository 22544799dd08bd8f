"""Fitted bins cached, in memory and on disk, under one key: the real data's identity and the bin options.

Key (:func:`bins_key`): :meth:`BinOptions.key <fastndb._core.options.BinOptions.key>` (every option that shapes the
bins) and the real data's content: :func:`~fastndb._core.sampling.content_fingerprint`, a 128-bit fingerprint of the
exact bytes computed on the data's own device, with shape and dtype. The test options (``alpha``, ``correction``,
``z_threshold``) and ``progress`` are never part of it: they are applied at each call.

* In memory (:class:`MemoryCache`, used by ``fastndb.score``): at most :data:`CACHE_SIZE` bin sets, least recently
  used dropped; it holds :class:`~fastndb._core.bins.FittedBins` (``K x d`` numbers), never samples. A
  ``torch.Tensor`` that keeps a version counter is recognised without reading it: the object itself (held by weak
  reference, so a new tensor at a recycled address is not mistaken for it), its storage pointer, shape, strides,
  dtype, device and PyTorch's version counter, which every in-place torch operation on the tensor or a view of it
  increments. Not seen: writes that bypass autograd's counter (through ``tensor.data``, a numpy view from
  ``tensor.numpy()``, or DLPack); call :func:`fastndb.clear_cache` after those. Inference tensors (no version
  counter), numpy, CuPy and iterables are keyed by their content fingerprint (one pass where they live).
* On disk (:func:`load` / :func:`save`, used by ``fastndb score --cache DIR``): ``DIR/bins-<sha256>.pt`` holding
  the key material and the bins (plain tensors, loaded with ``weights_only=True``). The material adds the fastndb
  version. Writes go to a temporary file and are renamed into place, so a reader never sees half a file; an entry
  that cannot be read or whose stored key differs is ignored (refitted) with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from fastndb._core.bins import FittedBins
from fastndb._core.options import BinOptions
from fastndb._core.sampling import content_fingerprint

logger = logging.getLogger(__name__)

CACHE_SIZE = 4


def bins_key(content: tuple, options: BinOptions) -> tuple:
    """The one key of a bin set: the real data's content fingerprint and the bin options."""
    return ("content", content, options.key())


def tensor_identity(real: torch.Tensor) -> tuple:
    """Identity of a tracked tensor's current contents without reading them (see the module docstring)."""
    return ("tensor", id(real), real.data_ptr(), tuple(real.shape), real.stride(), str(real.dtype),
            str(real.device), real._version)


def trackable(real: object) -> bool:
    """Whether ``real`` is a tensor whose changes PyTorch's version counter records (inference tensors have none)."""
    return isinstance(real, torch.Tensor) and not real.is_inference()


class MemoryCache:
    """A small thread-safe LRU of fitted bins (see the module docstring)."""

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple[Any, FittedBins]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, owner: object = None) -> FittedBins | None:
        """The bins stored under ``key`` (for a tracked tensor, only if ``owner`` is the very object stored)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or (hit[0] is not None and hit[0]() is not owner):
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key: tuple, bins: FittedBins, owner: object = None) -> None:
        with self._lock:
            self._entries[key] = (None if owner is None else weakref.ref(owner), bins)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def info(self) -> dict:
        with self._lock:
            return {"entries": len(self._entries), "capacity": self.capacity}


# ------------------------------------------------------------------------------------------------ on disk
def key_material(real: torch.Tensor, options: BinOptions) -> dict:
    """What identifies a bin set on disk: :func:`bins_key`'s content and options, as JSON, and the version."""
    from fastndb import __version__

    first, second, shape, dtype = content_fingerprint(real)
    return {
        "content": [first, second],
        "shape": list(shape),
        "dtype": dtype,
        "options": options.to_dict(),
        "fastndb": __version__,
    }


def entry_path(directory: Path, material: dict) -> Path:
    """The cache file for ``material``."""
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return Path(directory) / f"bins-{digest[:32]}.pt"


def load(directory: Path, material: dict) -> FittedBins | None:
    """Cached bins for ``material``, or ``None`` (missing, unreadable or mismatched entries)."""
    path = entry_path(directory, material)
    if not path.exists():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("key") != material:
            raise ValueError("stored key differs")
        bins = FittedBins.from_dict(entry["bins"], f"bin cache entry {path.name}")
    except Exception as err:  # noqa: BLE001  (any unreadable entry is a miss, never a crash)
        warnings.warn(f"bin cache: ignoring {path} ({err}); refitting", RuntimeWarning, stacklevel=2)
        return None
    logger.info("bin cache: hit %s", path)
    return bins


def usable_folder(folder: Path, what: str) -> Path:
    """``folder``, made if missing, or a ``ValueError`` naming ``what`` (the variable or flag that gave it) and why
    it cannot be a folder: a file, a link to nothing, no permission."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():
            return folder
        reason = "it is not a folder"
    except OSError as err:
        reason = err.strerror or type(err).__name__
    for part in (folder, *folder.parents):
        if part.is_symlink() and not part.exists():
            reason = f"{part} is a symbolic link to {os.readlink(part)}, which does not exist"
            break
        if part.exists() and not part.is_dir():
            reason = f"{part} is a file, not a folder"
            break
    raise ValueError(f"{what}: {folder} cannot be used as a folder ({reason}); point it at a folder you can write")


def write_atomic(path: Path, payload: dict, *, exclusive: bool = False) -> Path:
    """``torch.save`` ``payload`` to ``path`` through a temporary file in the same folder and a rename, so that a
    reader never sees half a file (the folder is made if missing).

    With ``exclusive``, the file is only created, never replaced: the temporary file is hard-linked to ``path``,
    which fails if ``path`` exists at that moment, so of two writers racing for one name exactly one wins.

    Raises:
        FileExistsError: ``exclusive`` and ``path`` exists (the other writer won).
    """
    path = Path(path)
    usable_folder(path.parent, "the folder of " + path.name)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(payload, f)
        if exclusive:
            os.link(temporary, path)
            Path(temporary).unlink()
        else:
            os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save(directory: Path, material: dict, bins: FittedBins) -> Path:
    """Write ``bins`` atomically (temporary file + rename); returns the entry's path."""
    path = write_atomic(entry_path(Path(directory), material), {"key": material, "bins": bins.to("cpu").to_dict()})
    logger.info("bin cache: wrote %s", path)
    return path
