"""fastndb: fast, calibrated mode-collapse tests for generative models.

The NDB score (Richardson & Weiss 2018), the birthday-paradox test (Arora & Zhang 2017) and the coverage metrics
(precision, recall, density, coverage) on PyTorch tensors, on the device they live on::

    import fastndb
    result = fastndb.score(real, fake)        # bins fitted once per real set, then cached
    result.ndb, result.ndb_ratio, result.js, result.p_value
    pairs = fastndb.birthday(fake, threshold=fastndb.duplicate_threshold(real))   # birthday-paradox test
    fastndb.score(real, fake, feature="inception")   # in an embedding space (a name, a module or a callable)
    fastndb.prdc(real, fake).coverage                # precision, recall, density, coverage, exact and tiled
    fastndb.modes(real, fake).missing               # mode counts (RKE, Vendi) and the modes the generator misses
    fastndb.memorization(train, fake, test).copy    # generated samples that copy a training sample

The public API is what ``__all__`` lists here, plus the faces that need optional packages, imported by their
module: ``fastndb.metrics`` (torchmetrics), ``fastndb.plot`` (matplotlib), ``fastndb.cli`` (the ``fastndb``
command) and ``fastndb.demo`` (the DCGAN demo, the training loop and its collapse monitor). Everything under
``fastndb._core`` is internal; its layout follows the data: inputs -> features -> bins -> assignment ->
statistics -> results (see docs/architecture.md).
"""

from fastndb._api import cache_info, clear_cache, score
from fastndb._core.bins import FittedBins
from fastndb._core.birthday import birthday, duplicate_threshold
from fastndb._core.coverage import prdc
from fastndb._core.effects import detectable_missing_mass, missing_mass
from fastndb._core.elbow import ElbowResult, elbow
from fastndb._core.extractors import NAMES as FEATURE_NAMES
from fastndb._core.extractors import Extractor, extractor
from fastndb._core.kmeans import KMeansResult, kmeans
from fastndb._core.memorization import memorization
from fastndb._core.modes import modes
from fastndb._core.options import OPTION_NAMES, BinOptions, TestOptions
from fastndb._core.references import Reference, list_references, load_reference, remove_reference, save_reference
from fastndb._core.results import (
                                   BirthdayResult,
                                   MemorizationResult,
                                   MissingMass,
                                   Mode,
                                   ModeCount,
                                   ModesResult,
                                   NDBResult,
                                   PRDCResult,
)
from fastndb._core.statistics import compare_histograms, expected_null_js
from fastndb._core.verdict import DuplicateComparison, Verdict, compare_duplicates, decide
from fastndb._ndb import NDB, NotFittedError

__version__ = "0.1.0"

__all__ = [
    "FEATURE_NAMES",
    "NDB",
    "OPTION_NAMES",
    "BinOptions",
    "BirthdayResult",
    "DuplicateComparison",
    "ElbowResult",
    "Extractor",
    "FittedBins",
    "KMeansResult",
    "MemorizationResult",
    "MissingMass",
    "Mode",
    "ModeCount",
    "ModesResult",
    "NDBResult",
    "NotFittedError",
    "PRDCResult",
    "Reference",
    "TestOptions",
    "Verdict",
    "__version__",
    "birthday",
    "cache_info",
    "clear_cache",
    "compare_duplicates",
    "compare_histograms",
    "decide",
    "detectable_missing_mass",
    "duplicate_threshold",
    "elbow",
    "expected_null_js",
    "extractor",
    "kmeans",
    "list_references",
    "load_reference",
    "memorization",
    "missing_mass",
    "modes",
    "prdc",
    "remove_reference",
    "save_reference",
    "score",
]
