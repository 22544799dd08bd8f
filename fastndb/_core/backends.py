"""Assignment backends: the one operation every algorithm here needs from an engine.

k-means (``fastndb._core.kmeans``) and bin assignment (``NDB.assign``) are written once against
:class:`AssignBackend`, in the manner of FAISS contrib's ``DatasetAssign``: a backend answers "which centroid is
nearest to each row, and how far" and nothing else. Sums, counts, initialisation and statistics stay in torch,
so every backend gives the same algorithm. A Lloyd pass goes through :func:`lloyd_pass`, which uses a backend's
fused ``nearest_and_sums`` where it has one (the torch backend: each row chunk is assigned and summed while in
cache, one read of the data per iteration) and ``nearest`` followed by :func:`fastndb.kernels.lloyd_step`
otherwise.

* ``"torch"``: chunked GEMM (:func:`fastndb.kernels.nearest_centroid`), any device. Always available.
* ``"faiss"``: an exact ``IndexFlatL2`` search; CPU tensors through ``faiss-cpu`` (zero copy via numpy),
  CUDA tensors through ``faiss-gpu`` (zero copy via ``faiss.contrib.torch_utils``).
* ``"cuml"``: cuML's brute-force ``NearestNeighbors`` on CUDA tensors (zero copy via
  ``__cuda_array_interface__``).
* ``"auto"``: ``"torch"``. It is as fast as the alternatives on the CPU (see ``benchmarks/``) and gives the same
  result wherever it runs, whichever optional packages happen to be installed.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from fastndb._core.optional import is_available, require
from fastndb.kernels import assign_and_sum, lloyd_step, nearest_centroid, nearest_labels

BACKENDS = ("auto", "torch", "faiss", "cuml")


class AssignBackend(Protocol):
    """What an engine must provide: nearest-centroid search."""

    name: str

    def nearest(self, x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``labels (N,)`` int64 and squared L2 ``distances (N,)`` (``>= 0``) on ``x``'s device."""
        ...


class TorchBackend:
    """Chunked GEMM nearest-centroid search in PyTorch, on the tensors' own device."""

    name = "torch"

    def nearest(self, x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
        return nearest_centroid(x, centroids)

    def labels(self, x: Tensor, centroids: Tensor) -> Tensor:
        return nearest_labels(x, centroids)

    def nearest_and_sums(self, x: Tensor, centroids: Tensor, x_sq_norms: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return assign_and_sum(x, centroids, x_sq_norms=x_sq_norms)


def nearest_bins(engine: AssignBackend, x: Tensor, centroids: Tensor) -> Tensor:
    """``labels (N,)`` of the nearest centroids, through a backend's ``labels`` where it has one (no distances).

    Example:
        >>> nearest_bins(TorchBackend(), torch.tensor([[0.0], [4.0]]), torch.tensor([[0.0], [5.0]])).tolist()
        [0, 1]
    """
    labels = getattr(engine, "labels", None)
    return labels(x, centroids) if labels is not None else engine.nearest(x, centroids)[0]


def lloyd_pass(engine: AssignBackend, x: Tensor, centroids: Tensor, x_sq_norms: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``labels (N,)``, ``sq_distances (N,)``, per-centroid ``sums (K, D)`` and ``counts (K,)`` of one pass.

    Example:
        >>> labels, d2, sums, counts = lloyd_pass(TorchBackend(), torch.tensor([[0.0], [4.0]]), torch.zeros(1, 1))
        >>> sums.tolist(), counts.tolist()
        ([[4.0]], [2])
    """
    fused = getattr(engine, "nearest_and_sums", None)
    if fused is not None:
        return fused(x, centroids, x_sq_norms)
    labels, sq_dist = engine.nearest(x, centroids)
    sums, counts = lloyd_step(x, centroids, labels)
    return labels, sq_dist, sums, counts


class _RebuiltWhenUnpickled:
    """Backends holding imported modules or GPU resources pickle as nothing and rebuild them when loaded."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]


class FaissBackend(_RebuiltWhenUnpickled):
    """Exact L2 search with FAISS (``IndexFlatL2`` on CPU, ``knn_gpu`` on CUDA)."""

    name = "faiss"

    def __init__(self) -> None:
        self._faiss = require("faiss", "backend='faiss'")
        self._gpu_resources = None

    def nearest(self, x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
        faiss = self._faiss
        x32 = x.to(torch.float32).contiguous()
        c32 = centroids.to(torch.float32).contiguous()
        if x.is_cuda:
            if not hasattr(faiss, "StandardGpuResources"):
                raise ValueError(
                    "backend='faiss': the samples are CUDA tensors but the installed FAISS has no GPU support; "
                    "install faiss-gpu, or use backend='torch'"
                )
            import faiss.contrib.torch_utils  # noqa: F401  (lets knn_gpu take torch tensors, zero copy)

            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            device = x.device.index if x.device.index is not None else torch.cuda.current_device()
            with torch.cuda.device(device):  # FAISS binds the current device's stream: make it the data's device
                distances, labels = faiss.knn_gpu(self._gpu_resources, x32, c32, 1, device=device)
        else:
            index = faiss.IndexFlatL2(c32.shape[1])
            index.add(c32.numpy())
            d_np, i_np = index.search(x32.numpy(), 1)
            distances, labels = torch.from_numpy(d_np), torch.from_numpy(i_np)
        return labels[:, 0].to(torch.int64), distances[:, 0].clamp_min(0).to(x.dtype)


class CumlBackend(_RebuiltWhenUnpickled):
    """Brute-force nearest neighbours with cuML (CUDA tensors only)."""

    name = "cuml"

    def __init__(self) -> None:
        self._neighbors = require("cuml", "backend='cuml'").neighbors
        self._search = None

    def nearest(self, x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
        if not x.is_cuda:
            raise ValueError(
                f"backend='cuml' runs on CUDA tensors, got samples on {x.device}; move them with .cuda() "
                f"or use backend='torch'"
            )
        if self._search is None:  # one estimator, refitted on each iteration's centroids (a brute index is a copy)
            self._search = self._neighbors.NearestNeighbors(n_neighbors=1, algorithm="brute", metric="sqeuclidean",
                                                            output_type="cupy")
        search = self._search
        search.fit(centroids.to(torch.float32).contiguous())
        distances, labels = search.kneighbors(x.to(torch.float32).contiguous())
        labels_t = torch.from_dlpack(labels)[:, 0].to(torch.int64)
        distances_t = torch.from_dlpack(distances)[:, 0].clamp_min(0).to(x.dtype)
        return labels_t, distances_t


def resolve_backend(name: str) -> AssignBackend:
    """The backend called ``name`` (see the module docstring).

    Raises:
        ValueError: unknown name.
        ModuleNotFoundError: the backend's package is not installed (naming what to install).

    Example:
        >>> resolve_backend("auto").name
        'torch'
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    if name in ("auto", "torch"):
        return TorchBackend()
    if name == "faiss":
        return FaissBackend()
    return CumlBackend()


def available_backends() -> list[str]:
    """Names of the backends usable in this environment (without importing them)."""
    names = ["torch"]
    names += [n for n in ("faiss", "cuml") if is_available(n)]
    return names
