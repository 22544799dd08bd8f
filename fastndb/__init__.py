"""fastndb: fast, calibrated mode-collapse tests for generative models.

The NDB score (Richardson & Weiss 2018) on PyTorch tensors, on the device they live on::

    import fastndb
    result = fastndb.score(real, fake)        # bins fitted once per real set, then cached
    result.ndb, result.ndb_ratio, result.js, result.p_value
    pairs = fastndb.birthday(fake, threshold=fastndb.duplicate_threshold(real))   # birthday-paradox test

Data flow: ``inputs`` (validation, zero-copy wrapping) -> ``features`` (flatten, whitening, dimension subset)
-> ``kmeans`` (bins; ``collectives``/``sampling`` for distributed, order-free fitting) -> ``backends``/``kernels``
(assignment, pairwise search) -> ``statistics`` -> ``results`` -> faces (``ndb.NDB``, ``api.score``,
``birthday``, ``metrics`` (torchmetrics), ``plot``, ``cli``).
"""

from fastndb._api import cache_info, clear_cache, score
from fastndb._core.birthday import birthday, duplicate_threshold
from fastndb._core.kmeans import KMeansResult, kmeans
from fastndb._ndb import NDB, FittedBins, NotFittedError
from fastndb._core.results import BirthdayResult, NDBResult

__version__ = "0.1.0"

__all__ = [
    "NDB",
    "BirthdayResult",
    "FittedBins",
    "KMeansResult",
    "NDBResult",
    "NotFittedError",
    "__version__",
    "birthday",
    "cache_info",
    "clear_cache",
    "duplicate_threshold",
    "kmeans",
    "score",
]
