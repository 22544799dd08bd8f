"""fastndb: fast, calibrated mode-collapse tests for generative models.

The NDB score (Richardson & Weiss 2018) on PyTorch tensors, on the device they live on::

    import fastndb
    result = fastndb.score(real, fake)        # bins fitted once per real set, then cached
    result.ndb, result.ndb_ratio, result.js, result.p_value

Data flow: ``inputs`` (validation, zero-copy wrapping) -> ``features`` (flatten, whitening, dimension subset)
-> ``kmeans`` (bins) -> ``backends``/``kernels`` (assignment) -> ``statistics`` -> ``results`` ->
faces (``ndb.NDB``, ``api.score``, ``cli``).
"""

from fastndb.api import cache_info, clear_cache, score
from fastndb.kmeans import KMeansResult, kmeans
from fastndb.ndb import NDB, FittedBins, NotFittedError
from fastndb.results import NDBResult

__version__ = "0.1.0"

__all__ = [
    "NDB",
    "FittedBins",
    "KMeansResult",
    "NDBResult",
    "NotFittedError",
    "__version__",
    "cache_info",
    "clear_cache",
    "kmeans",
    "score",
]
