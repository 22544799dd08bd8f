"""Files in: a folder of images, ``.npy``, ``.npz``, ``.pt`` -> one tensor of samples (the command line's input).

* a folder: PNG/JPEG/BMP/WebP/TIFF images found recursively, in sorted path order, decoded with Pillow and
  converted consistently: ``channels`` 1 or 3 for every image (default: 3 if any image has colour, else 1), all
  of one size or resized to ``image_size`` (bicubic), returned as ``(N, C, H, W)``. Bit depth is kept:

  - 8-bit images (Pillow modes ``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``CMYK``, ...): ``uint8``, which
    the rest of fastndb reads as ``x / 255`` in [0, 1];
  - 16-bit images (``I;16``, and ``I`` with values in 0..65535, as Pillow opens 16-bit PNGs): ``float32``
    ``x / 65535`` in [0, 1], with 8-bit images of the same folder as ``x / 255`` (never clipped to 8 bits);
  - float images (``F``, e.g. 32-bit TIFF): ``float32`` values as they are (state their range with
    ``value_range`` where they are not in [0, 1]); a folder mixing them with integer images is refused.

* ``file.npy``: the array;
* ``file.npz``: its only array, or ``file.npz:name`` for a named one;
* ``file.pt``: a tensor saved with ``torch.save``, or ``file.pt:name`` for one entry of a saved dict (loaded
  with ``weights_only=True``: no code runs).

A file that cannot be read (truncated, not what its suffix says, a decompression bomb) raises one ``ValueError``
naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastndb._core.optional import require
from fastndb._core.progress import progress_bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


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


def _depth(img: object, path: Path) -> str:
    """``"8"``, ``"16"`` or ``"float"``: how an opened image's values are to be read (see the module docstring)."""
    mode = img.mode  # type: ignore[attr-defined]
    if mode in _SIXTEEN_BIT_MODES:
        return "16"
    if mode == "I":
        low, high = img.getextrema()  # type: ignore[attr-defined]
        if low < 0 or high > 65535:
            raise ValueError(f"{path}: a 32-bit integer image with values {low}..{high}: no known range (fastndb "
                             f"reads 8- and 16-bit images); save it as 16-bit or convert it to an array file")
        return "16"
    if mode == "F":
        return "float"
    return "8"


def _as_float_planes(img: object, depth: str, channels: int, size: tuple[int, int] | None, image: object) -> np.ndarray:
    """``(C, H, W)`` float32 planes of one image of a deep (16-bit or float) folder."""
    if depth == "8":
        rgb = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0  # type: ignore[attr-defined]
        planes = rgb[None] if rgb.ndim == 2 else rgb.transpose(2, 0, 1)
    else:
        values = np.asarray(img, dtype=np.float64)
        plane = (values / 65535.0 if depth == "16" else values).astype(np.float32)
        planes = np.repeat(plane[None], channels, axis=0)
    if size is not None:
        resample = image.Resampling.BICUBIC  # type: ignore[attr-defined]
        planes = np.stack([np.asarray(image.fromarray(p).resize((size[1], size[0]), resample))  # type: ignore[attr-defined]
                           for p in planes])
    return planes


def load_image_folder(
    folder: Path,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Decode every image under ``folder`` to one ``(N, C, H, W)`` tensor (see the module docstring).

    Raises:
        ValueError: no images, an unreadable image, mixed sizes without ``image_size``, bad ``channels``, float
            images mixed with integer ones, 32-bit integer images outside 0..65535.
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
            except Exception as err:  # noqa: BLE001  (truncated files, decompression bombs, foreign formats)
                raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
            bar.update(1)
    depths = {_depth(img, path) for path, img in decoded}
    if "float" in depths and len(depths) > 1:
        raise ValueError(f"{folder}: mixes float images (mode F) with integer images; their values have no common "
                         f"range: keep one kind per folder")
    if channels is None:
        channels = 1 if all(img.mode in _GREY_MODES for _, img in decoded) else 3
    mode = "L" if channels == 1 else "RGB"
    first_path, first = decoded[0]
    for path, img in decoded:
        if image_size is None and img.size != first.size:
            raise ValueError(
                f"{folder}: mixed image sizes: {first_path.name} is {first.size[0]}x{first.size[1]} but "
                f"{path.relative_to(folder)} is {img.size[0]}x{img.size[1]} (width x height); pass --image-size H W"
            )
    if depths == {"8"}:
        arrays = []
        for _, img in decoded:
            converted = img.convert(mode)
            if image_size is not None:
                converted = converted.resize((image_size[1], image_size[0]), image.Resampling.BICUBIC)
            arrays.append(np.asarray(converted, dtype=np.uint8))
        stacked = np.stack(arrays)  # (N, H, W) grey or (N, H, W, 3) RGB
        stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(stacked))
    planes = [_as_float_planes(img, _depth(img, path), channels, image_size, image) for path, img in decoded]
    return torch.from_numpy(np.ascontiguousarray(np.stack(planes)))


EXPANSION_FLOOR = 1 << 30
"""Bytes a compressed input (``.npz`` member, gzip IDX file) may always expand to."""
MAX_EXPANSION = 200
"""Beyond :data:`EXPANSION_FLOOR`, how many times its stored size a compressed input may expand to."""


def check_expansion(declared: int, stored: int, where: str) -> None:
    """Refuse a compressed input whose declared size is a decompression bomb's: more than :data:`EXPANSION_FLOOR`
    and more than :data:`MAX_EXPANSION` times its stored size (as images get Pillow's pixel-count guard).

    Raises:
        ValueError: naming ``where``, both sizes and what to do if the file is genuine.
    """
    if declared > max(EXPANSION_FLOOR, MAX_EXPANSION * stored):
        raise ValueError(f"{where}: declares {declared / 2**30:.2f} GiB of data stored in {stored / 2**20:.2f} MiB "
                         f"({declared / max(stored, 1):.0f} times): refused as a decompression bomb (at most 1 GiB, "
                         f"or {MAX_EXPANSION} times the stored size); if it is genuine, decompress it yourself (for "
                         f"example np.save to a .npy file, which is read without expansion)")


def _native(array: np.ndarray, where: str) -> torch.Tensor:
    """An array as a tensor: samples ``(N, ...)`` (a 0-d array is refused), in native byte order."""
    if array.ndim == 0:
        raise ValueError(f"{where}: expected samples (N, ...), got a 0-d array (one number, {array.item()!r})")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))  # big-endian files, as the Python API takes them
    return torch.from_numpy(np.ascontiguousarray(array))


def _npz_member(path: Path, archive: Any, key: str) -> torch.Tensor:
    """One member of an ``.npz`` archive, its declared size checked before numpy allocates it."""
    info = archive.zip.getinfo(f"{key}.npy")
    with archive.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(member)
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    check_expansion(declared, info.compress_size, f"{path}:{key}")
    return _native(archive[key], f"{path}:{key}")


def load_array_file(path: Path, key: str | None) -> torch.Tensor:
    """One array from ``.npy`` / ``.npz`` / ``.pt`` (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"{path}: a .npy file holds one array; drop ':{key}'")
        return _native(np.load(path, allow_pickle=False), str(path))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path}: holds arrays {names}; name one as {path}:NAME")
                key = names[0]
            if key not in names:
                raise ValueError(f"{path}: no array named {key!r}; it holds {names}")
            return _npz_member(path, archive, key)
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
    if loaded.dim() == 0:
        raise ValueError(f"{path}: expected samples (N, ...), got a 0-d tensor (one number)")
    return loaded


def sample_names(spec: str) -> list[str] | None:
    """The file names of an image folder's samples, in the order :func:`load_samples` reads them (paths relative to
    the folder); ``None`` for an array file."""
    path, _ = _split_key(spec)
    if not path.is_dir():
        return None
    return [str(p.relative_to(path)) for p in image_files(path)]


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
        loaded = load_array_file(path, key)
    except ValueError as err:
        if str(path) in str(err):
            raise  # our own message, naming the file already
        raise ValueError(f"{spec}: could not be read as {path.suffix} ({err})") from None
    except Exception as err:  # noqa: BLE001  (truncated, foreign or malicious files: pickle, zip, OS errors)
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{spec}: could not be read as {path.suffix} ({type(err).__name__}: {first_line})") from None
    if loaded.shape[0] == 0:
        raise ValueError(f"{spec}: holds no samples (shape {tuple(loaded.shape)})")
    return loaded
