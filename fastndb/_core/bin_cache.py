"""Fitted bins on disk: keyed by the real data's content, the options and the package version; written atomically.

A cache entry is ``DIR/bins-<sha256>.pt`` holding the key material and :meth:`FittedBins.to_dict` (plain
tensors, loaded with ``weights_only=True``). The key covers a SHA-1 of the real samples' bytes (so a file
renamed, or changed in place, never gives a stale hit, unlike the original's file-name cache), their shape and
dtype, every option that shapes the bins, and the fastndb version. Entries are written to a temporary file in the
same folder and renamed into place, so a reader never sees half a file; an entry that cannot be read or whose
stored key does not match is ignored (refitted) with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from fastndb._api import content_digest
from fastndb._ndb import FittedBins

logger = logging.getLogger(__name__)


def key_material(real: torch.Tensor, options: dict) -> dict:
    """What identifies a bin set: the real data's content and layout, the bin options and the version."""
    from fastndb import __version__

    return {
        "content_sha1": content_digest(real),
        "shape": list(real.shape),
        "dtype": str(real.dtype),
        "options": {k: options[k] for k in sorted(options)},
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
        bins = FittedBins.from_dict(entry["bins"])
    except Exception as err:  # noqa: BLE001  (any unreadable entry is a miss, never a crash)
        warnings.warn(f"bin cache: ignoring {path} ({err}); refitting", RuntimeWarning, stacklevel=2)
        return None
    logger.info("bin cache: hit %s", path)
    return bins


def save(directory: Path, material: dict, bins: FittedBins) -> Path:
    """Write ``bins`` atomically (temporary file + rename); returns the entry's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = entry_path(directory, material)
    state = bins.to_dict()
    state["feature_map"] = {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                            for k, v in state["feature_map"].items()}
    state = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    handle, temporary = tempfile.mkstemp(prefix=".bins-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save({"key": material, "bins": state}, f)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("bin cache: wrote %s", path)
    return path
