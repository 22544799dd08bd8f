"""Files in: a folder of images, ``.npy``, ``.npz``, ``.pt`` -> one tensor of samples (the command line's input).

* a folder: PNG/JPEG/BMP/WebP/TIFF images found recursively, in sorted path order, decoded with Pillow and
  converted consistently: ``channels`` 1 (``"L"``) or 3 (``"RGB"``) for every image (default: 3 if any image
  has colour, else 1), all of one size or resized to ``image_size`` (bicubic), returned as ``(N, C, H, W)``
  ``uint8``, which the rest of fastndb reads as ``x / 255`` in [0, 1];
* ``file.npy``: the array;
* ``file.npz``: its only array, or ``file.npz:name`` for a named one;
* ``file.pt``: a tensor saved with ``torch.save``, or ``file.pt:name`` for one entry of a saved dict (loaded
  with ``weights_only=True``: no code runs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastndb._optional import require
from fastndb._progress import progress_bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def _split_key(spec: str) -> tuple[Path, str | None]:
    """``"file.npz:name"`` -> (path, "name"); a path that exists as given is never split."""
    path = Path(spec)
    if path.exists() or ":" not in spec:
        return path, None
    base, _, key = spec.rpartition(":")
    return Path(base), key or None


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    folder: Path,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Decode every image under ``folder`` to one ``(N, C, H, W)`` uint8 tensor (see the module docstring).

    Raises:
        ValueError: no images, an unreadable image, mixed sizes without ``image_size``, bad ``channels``.
        ModuleNotFoundError: Pillow is not installed.
    """
    image = require("PIL.Image", "reading image folders")
    files = image_files(folder)
    if not files:
        raise ValueError(f"{folder}: expected image files ({', '.join(IMAGE_SUFFIXES)}) in the folder, found none")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    decoded = []
    with progress_bar(progress, total=len(files), desc=f"reading {folder.name}", unit="image") as bar:
        for path in files:
            try:
                with image.open(path) as img:
                    img.load()
                    decoded.append((path, img.copy()))
            except (OSError, SyntaxError, ValueError) as err:
                raise ValueError(f"{path}: not a readable image ({err})") from None
            bar.update(1)
    if channels is None:
        channels = 1 if all(img.mode in ("1", "L", "LA", "I", "I;16", "F") for _, img in decoded) else 3
    mode = "L" if channels == 1 else "RGB"
    first_path, first = decoded[0]
    arrays = []
    for path, img in decoded:
        if image_size is not None:
            img = img.convert(mode).resize((image_size[1], image_size[0]), image.Resampling.BICUBIC)
        elif img.size != first.size:
            raise ValueError(
                f"{folder}: mixed image sizes: {first_path.name} is {first.size[0]}x{first.size[1]} but "
                f"{path.relative_to(folder)} is {img.size[0]}x{img.size[1]} (width x height); pass --image-size H W"
            )
        arrays.append(np.asarray(img.convert(mode), dtype=np.uint8))
    stacked = np.stack(arrays)  # (N, H, W) grey or (N, H, W, 3) RGB
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def load_array_file(path: Path, key: str | None) -> torch.Tensor:
    """One array from ``.npy`` / ``.npz`` / ``.pt`` (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"{path}: a .npy file holds one array; drop ':{key}'")
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path}: holds arrays {names}; name one as {path}:NAME")
                key = names[0]
            if key not in names:
                raise ValueError(f"{path}: no array named {key!r}; it holds {names}")
            return torch.from_numpy(archive[key])
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict):
        names = sorted(str(k) for k in loaded)
        if key is None:
            raise ValueError(f"{path}: holds a dict with entries {names}; name one as {path}:NAME")
        if key not in loaded:
            raise ValueError(f"{path}: no entry named {key!r}; it holds {names}")
        loaded = loaded[key]
    elif key is not None:
        raise ValueError(f"{path}: holds one tensor, not a dict; drop ':{key}'")
    if not isinstance(loaded, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, got {type(loaded).__name__}")
    return loaded


def load_samples(
    spec: str,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Samples from a path: an image folder, ``.npy``, ``.npz[:name]`` or ``.pt[:name]``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an unsupported file type or any problem named in the loaders.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/x.npz"
        >>> np.savez(path, real=np.zeros((3, 2)), labels=np.arange(3))
        >>> load_samples(path + ":real").shape
        torch.Size([3, 2])
    """
    path, key = _split_key(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such file or folder")
    if path.is_dir():
        if key is not None:
            raise ValueError(f"{spec}: a folder takes no ':{key}'")
        return load_image_folder(path, image_size=image_size, channels=channels, progress=progress)
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        kind = path.suffix or "plain"
        raise ValueError(f"{spec}: expected an image folder or a {', '.join(ARRAY_SUFFIXES)} file, got a {kind} file")
    try:
        return load_array_file(path, key)
    except (OSError, EOFError, RuntimeError) as err:  # truncated or foreign files
        raise ValueError(f"{spec}: could not be read as {path.suffix} ({err})") from None
