"""Inputs: turn what a user passes into validated ``(N, D)`` torch tensors, zero-copy where possible.

Accepted for every data argument:

* ``torch.Tensor`` on any device (used as is, detached from autograd);
* ``numpy.ndarray`` (wrapped with :func:`torch.from_numpy`, no copy; arrays with negative strides or
  non-native byte order, which torch cannot wrap, are copied once);
* CuPy arrays and anything else exporting ``__dlpack__`` (wrapped with :func:`torch.from_dlpack`, no copy);
* an iterable of batches, e.g. a ``DataLoader``, yielding one of the above or ``(x, y, ...)`` tuples whose
  first element is the samples.

Samples of any shape ``(N, *dims)`` are flattened to ``(N, prod(dims))``. Array libraries are recognised by
the module their type comes from, so that recognising a CuPy array never imports CuPy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fastndb._core.sync import host_values

_WIDE_FOR_REDUCTIONS = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))
_SUPPORTED = "a torch.Tensor, a numpy array, a CuPy/DLPack array, or an iterable of such batches"


def array_library(obj: object) -> str | None:
    """Name of the array library ``obj`` belongs to, or ``None`` if it is not an array.

    Example:
        >>> import numpy as np, torch
        >>> array_library(np.zeros(3)), array_library(torch.zeros(3)), array_library([1.0])
        ('numpy', 'torch', None)
    """
    if isinstance(obj, torch.Tensor):
        return "torch"
    if isinstance(obj, np.ndarray):
        return "numpy"
    if hasattr(obj, "__dlpack__") and hasattr(obj, "shape"):
        return type(obj).__module__.split(".")[0] or "dlpack"
    return None


def _describe(obj: object) -> str:
    shape = getattr(obj, "shape", None)
    kind = type(obj).__module__ + "." + type(obj).__qualname__
    return f"{kind} of shape {tuple(shape)}" if shape is not None else kind


def to_tensor(obj: object, name: str) -> torch.Tensor:
    """Wrap one array-like as a torch tensor without copying.

    Raises:
        TypeError: ``obj`` is not an array (naming ``name`` and what came).
    """
    library = array_library(obj)
    if library == "torch":
        tensor: torch.Tensor = obj  # type: ignore[assignment]
        if tensor.layout != torch.strided:
            raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {tensor.layout}; use .to_dense()")
        return tensor.detach()  # generator outputs carry autograd history: scoring never needs it
    if library == "numpy":
        if obj.dtype.kind not in "biuf":  # type: ignore[union-attr]
            raise TypeError(f"{name}: expected a numeric array, got a numpy array of dtype {obj.dtype}")  # type: ignore[union-attr]
        if obj.dtype.kind == "f" and obj.dtype.itemsize > 8:  # type: ignore[union-attr]
            raise TypeError(
                f"{name}: expected float16, float32 or float64 samples, got a numpy array of dtype "
                f"{obj.dtype} (extended precision, which torch cannot hold); convert it with .astype(numpy.float64)"  # type: ignore[union-attr]
            )
        array: np.ndarray = obj  # type: ignore[assignment]
        if not array.dtype.isnative or any(stride < 0 for stride in array.strides):
            # torch cannot wrap these layouts: one native-order, positive-stride copy
            array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        with warnings.catch_warnings():  # read-only arrays: we never write into them
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    if library is not None:
        try:
            return torch.from_dlpack(obj)  # type: ignore[arg-type]
        except (TypeError, RuntimeError, BufferError) as err:
            raise TypeError(f"{name}: could not read {_describe(obj)} through DLPack: {err}") from err
    raise TypeError(f"{name}: expected {_SUPPORTED}; got {_describe(obj)}")


def _check_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected real floating-point or integer samples, got dtype {t.dtype}")


def value_range_of(x: torch.Tensor, name: str) -> tuple[float, float]:
    """``(min, max)`` of ``x`` from one NaN-propagating ``aminmax`` pass and one host read, refusing NaN/Inf.

    The one host read a validated batch costs: the finiteness check and the value-range summary share it.

    Raises:
        ValueError: NaN or infinite values (naming ``name``, the count and the first sample holding one).
    """
    if x.dtype in _WIDE_FOR_REDUCTIONS:  # unsigned types torch has few kernels for (aminmax among the missing)
        x = x.to(torch.int64) if x.dtype != torch.uint64 else x.to(torch.float64)
    low, high = host_values(torch.stack(torch.aminmax(x)).double())
    if not (math.isfinite(low) and math.isfinite(high)):
        finite = torch.isfinite(x)
        bad = int((~finite).sum())
        row = int((~finite).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/Inf value(s) (first in sample {row})")
    return low, high


def as_sample_matrix(
    t: torch.Tensor, name: str, *, check_finite: bool = True, flatten: bool = True
) -> torch.Tensor:
    """Flatten ``(N, *dims)`` to ``(N, D)`` and validate shape, dtype and finiteness.

    Args:
        t: samples, at least 2-D.
        name: argument name used in error messages.
        flatten: ``False`` returns the samples in their own shape ``(N, *dims)`` (validated the same way), for a
            feature extractor that needs images.

    Returns:
        ``(N, D)`` view (no copy when ``t`` is contiguous), dtype unchanged; ``(N, *dims)`` with ``flatten=False``.

    Raises:
        ValueError: fewer than 2 dimensions, no samples, no features, or NaN/Inf values.
        TypeError: boolean or complex dtype.

    ``check_finite=False`` leaves the finiteness check to the caller, which then reads the values' range once
    anyway (:func:`value_range_of`, as the counting path does).
    """
    _check_dtype(t, name)
    if t.dim() < 2:
        raise ValueError(
            f"{name}: expected samples of shape (N, D) or (N, C, H, W), got a {t.dim()}-D tensor of shape "
            f"{tuple(t.shape)}; for one sample use x[None], for N scalars use x[:, None]"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got shape {tuple(t.shape)}")
    dim = math.prod(t.shape[1:])
    if dim == 0:
        raise ValueError(f"{name}: expected at least one feature per sample, got shape {tuple(t.shape)}")
    matrix = t.reshape(t.shape[0], dim)
    if check_finite and matrix.is_floating_point():
        value_range_of(matrix, name)
    return matrix if flatten else t


@dataclass(frozen=True)
class Batches:
    """An input resolved to a stream of ``(N_b, D)`` tensors.

    Attributes:
        library: array library of the input (``"torch"``, ``"numpy"``, ``"cupy"``, ...).
        single: the whole input as one tensor when it was one array, else ``None``.
        iterator: the batches, validated lazily as they are drawn.
    """

    library: str
    single: torch.Tensor | None
    iterator: Iterator[torch.Tensor]


def _first_item(batch: object) -> object:
    if isinstance(batch, (tuple, list)) and batch and array_library(batch[0]) is not None:
        return batch[0]
    return batch


def as_batches(data: object, name: str, *, check_finite: bool = True, flatten: bool = True) -> Batches:
    """Resolve ``data`` (one array or an iterable of batches) to validated ``(N_b, D)`` batches.

    The library of the input is found from the first batch, so an iterable is consumed lazily: a
    generator of fake samples is never held in memory at once. ``flatten=False`` keeps each batch's own shape
    ``(N_b, *dims)`` (every batch must have the dims of the first), for a feature extractor.

    Raises:
        TypeError: not an array nor an iterable of arrays; strings; batches from different libraries.
        ValueError: see :func:`as_sample_matrix`; an iterable that yields nothing.
    """
    if isinstance(data, (str, bytes, bytearray)):
        raise TypeError(f"{name}: expected {_SUPPORTED}; got {type(data).__name__} {data!r:.60}")
    library = array_library(data)
    if library is not None:
        matrix = as_sample_matrix(to_tensor(data, name), name, check_finite=check_finite, flatten=flatten)
        return Batches(library, matrix, iter((matrix,)))
    if not isinstance(data, Iterable) or isinstance(data, dict):
        raise TypeError(f"{name}: expected {_SUPPORTED}; got {_describe(data)}")

    iterator = iter(data)
    try:
        first = _first_item(next(iterator))
    except StopIteration:
        raise ValueError(f"{name}: expected at least one batch, the iterable yielded none") from None
    first_library = array_library(first)
    if first_library is None:
        raise TypeError(
            f"{name}: expected an iterable of arrays (or of (x, y) tuples), got an iterable of {_describe(first)}; "
            f"pass nested Python lists through numpy.asarray first"
        )

    def generate() -> Iterator[torch.Tensor]:
        dim = None
        index = 0
        item: object = first
        while True:
            library_now = array_library(item)
            if library_now != first_library:
                raise TypeError(
                    f"{name}: batch {index} is {_describe(item)} but batch 0 was a {first_library} array; "
                    f"mixed array libraries in one input are not supported"
                )
            label = f"{name} (batch {index})"
            matrix = as_sample_matrix(to_tensor(item, label), label, check_finite=check_finite, flatten=flatten)
            dims = tuple(matrix.shape[1:])
            if dim is not None and dims != dim:
                expected = f"{dim[0]} features" if flatten else f"samples of shape {dim}"
                raise ValueError(f"{label}: expected {expected} per sample like batch 0, got "
                                 f"{dims[0] if flatten else dims}")
            dim = dims
            yield matrix
            index += 1
            try:
                item = _first_item(next(iterator))
            except StopIteration:
                return

    return Batches(first_library, None, generate())


def concatenate(batches: Batches) -> torch.Tensor:
    """All batches as one ``(N, D)`` tensor, on the device of the first batch."""
    if batches.single is not None:
        return batches.single
    parts = list(batches.iterator)
    device = parts[0].device
    return torch.cat([p.to(device) for p in parts])


def check_same_library(**libraries: str) -> None:
    """Raise ``TypeError`` when named inputs come from different array libraries.

    Example:
        >>> check_same_library(real="torch", fake="numpy")
        Traceback (most recent call last):
        ...
        TypeError: mixed array libraries in one call: real is a torch array, fake is a numpy array; convert one of them
    """
    if len(set(libraries.values())) > 1:
        described = ", ".join(f"{name} is a {lib} array" for name, lib in libraries.items())
        raise TypeError(f"mixed array libraries in one call: {described}; convert one of them")
