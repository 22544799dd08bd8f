"""Options, defined once: the bin options (what shapes the bins), the test options (how bins are compared) and
``progress``. ``score``, ``NDB``, ``NDBMetric`` and the command line all take exactly these names, validate them
here, and key both bin caches on :meth:`BinOptions.key`.

Each field carries its help text and, for the command line, its flag; ``fastndb.cli`` builds its flags from these
fields, and a test checks that every face accepts the same names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fastndb._core.backends import BACKENDS
from fastndb._core.checks import check_int, check_nonnegative, check_open_unit, check_positive_or_none, check_seed
from fastndb._core.extractors import NAMES, Extractor, resolve_feature
from fastndb._core.features import check_value_range
from fastndb._core.statistics import CORRECTIONS

MODES = ("holdout", "original")


def _option(default: Any, text: str, **cli: Any) -> Any:
    """A field with its default, its help text and its command-line flag's argparse settings."""
    return field(default=default, metadata={"help": text, "cli": cli})


@dataclass(frozen=True)
class BinOptions:
    """What shapes the bins; two fits with equal options on equal real data give the same bins.

    Attributes:
        num_bins: number of k-means bins ``K >= 2``.
        mode: ``"holdout"`` (calibrated) or ``"original"`` (the paper's design, for reproducing it).
        seed: seed of the holdout split, the feature subset and k-means, in ``[0, 2**63)``.
        holdout_fraction: share of real samples held out for the reference counts (``holdout`` mode).
        whitening: standardise features with the real mean and std (+1e-6) before binning, as the original.
        max_dims: cluster on a seeded random subset of this many features.
        max_iter: most k-means iterations.
        tol: k-means stopping tolerance (relative inertia decrease).
        backend: assignment engine, ``"auto"`` | ``"torch"`` | ``"faiss"`` | ``"cuml"``.
        value_range: ``(low, high)`` of samples that are not ``uint8``/``uint16`` images, mapped to [0, 1].
        feature: the space the bins live in (:mod:`fastndb._core.extractors`): ``None`` for the raw values, a name
            (``"digits"``, ``"inception"``, ...), a ``torch.nn.Module``, a callable or a ``fastndb.extractor(...)``;
            held as the resolved :class:`~fastndb.Extractor`. ``value_range`` applies to the samples before it.
    """

    num_bins: int = _option(100, "number of k-means bins K (>= 2)", type=int)
    mode: str = _option("holdout", "holdout: calibrated; original: the paper's design", choices=MODES)
    seed: int = _option(0, "seed of the split, the feature subset and k-means", type=int)
    holdout_fraction: float = _option(0.5, "share of real samples held out for the reference counts", type=float)
    whitening: bool = _option(False, "standardise features with the real mean and std first", action="store_true")
    max_dims: int | None = _option(None, "cluster on a seeded random subset of this many features", type=int)
    max_iter: int = _option(300, "most k-means iterations", type=int)
    tol: float = _option(1e-4, "k-means stopping tolerance (relative inertia decrease)", type=float)
    backend: str = _option("auto", "assignment engine", choices=BACKENDS)
    value_range: tuple[float, float] | None = _option(
        None, "range of float samples, mapped to [0, 1] like uint8 images (e.g. -1 1 for tanh outputs)",
        type=float, nargs=2, metavar=("LOW", "HIGH"),
    )
    feature: Extractor | None = _option(
        None, "embed the samples with this network first (the bins live in its feature space): "
        + ", ".join(NAMES), flag="--features", choices=tuple(NAMES), metavar="NAME",
    )

    def __post_init__(self) -> None:
        checked = {
            "num_bins": check_int(self.num_bins, "num_bins", minimum=2),
            "seed": check_seed(self.seed),
            "holdout_fraction": check_open_unit(self.holdout_fraction, "holdout_fraction"),
            "whitening": self.whitening,
            "max_dims": None if self.max_dims is None else check_int(self.max_dims, "max_dims", minimum=1),
            "max_iter": check_int(self.max_iter, "max_iter", minimum=1),
            "tol": check_nonnegative(self.tol, "tol"),
            "value_range": check_value_range(self.value_range),
            "feature": resolve_feature(self.feature),
        }
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.whitening, bool):
            raise TypeError(f"whitening: expected True or False, got {self.whitening!r}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def key(self) -> tuple:
        """The cache key of these options (every field: all of them shape the bins; the extractor by its key)."""
        return tuple((f.name, self.feature.key() if f.name == "feature" and self.feature is not None
                      else getattr(self, f.name)) for f in fields(self))

    def to_dict(self) -> dict:
        """Fields as a plain dict (``value_range`` as a list, the extractor by its identity), for JSON and the disk
        cache.

        Raises:
            ValueError: the extractor is a plain callable, which has no identity outside this process.
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would deep-copy a network
        out["value_range"] = None if self.value_range is None else list(self.value_range)
        out["feature"] = None if self.feature is None else self.feature.identity()
        return out

    def without_features(self) -> BinOptions:
        """The options the bins see once the samples are features: no extractor and no value range (the range
        applies to the samples before the extractor)."""
        return replace(self, feature=None, value_range=None)


@dataclass(frozen=True)
class TestOptions:
    """How the bins' shares are compared; changing them never refits the bins.

    Attributes:
        alpha: per-bin significance level in ``(0, 1)``.
        correction: ``None`` | ``"holm"`` | ``"bh"`` multiple-testing correction of the per-bin p-values.
        z_threshold: flag bins with ``|z| > z_threshold`` instead of ``p < alpha`` (the original's option).
        tolerance: the missing mass accepted, in ``[0, 1)``: the verdict says "missing" only when the missing
            mass's interval lies above it (:mod:`fastndb._core.verdict`).
    """

    __test__ = False  # not a pytest test class

    alpha: float = _option(0.05, "per-bin significance level in (0, 1)", type=float)
    correction: str | None = _option(None, "multiple-testing correction over the K bins", choices=("holm", "bh"))
    z_threshold: float | None = _option(
        None, "flag |z| > this instead of p < alpha (the original's option)", type=float
    )
    tolerance: float = _option(0.01, "missing mass accepted: 'missing' only when its interval lies above this",
                               type=float)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_open_unit(self.alpha, "alpha"))
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction: expected one of {CORRECTIONS}, got {self.correction!r}")
        threshold = check_positive_or_none(self.z_threshold, "z_threshold")
        if threshold is not None and self.correction is not None:
            raise ValueError(
                f"z_threshold={self.z_threshold} and correction={self.correction!r} exclude each other: a z threshold "
                f"replaces the p-value rule that the correction adjusts"
            )
        object.__setattr__(self, "z_threshold", threshold)
        from fastndb._core.verdict import check_tolerance

        object.__setattr__(self, "tolerance", check_tolerance(self.tolerance))


BIN_OPTION_NAMES = tuple(f.name for f in fields(BinOptions))
TEST_OPTION_NAMES = tuple(f.name for f in fields(TestOptions))
OPTION_NAMES = (*BIN_OPTION_NAMES, *TEST_OPTION_NAMES, "progress")
"""Every option name ``score``, ``NDB``, ``NDBMetric`` and the command line accept."""


def split_options(options: dict[str, Any], *, where: str) -> tuple[BinOptions, TestOptions, bool | None]:
    """Validated :class:`BinOptions`, :class:`TestOptions` and ``progress`` from keyword options (defaults for the
    missing ones).

    Raises:
        TypeError: an unknown option (naming it and ``where`` it was passed).
        ValueError: an option out of its range (naming it).

    Example:
        >>> bins, test, progress = split_options({"num_bins": 10, "alpha": 0.01}, where="score()")
        >>> bins.num_bins, test.alpha, progress
        (10, 0.01, None)
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"{where} got unexpected keyword argument(s): {', '.join(unknown)}; "
                        f"the options are {', '.join(OPTION_NAMES)}")
    bin_options = BinOptions(**{name: options[name] for name in BIN_OPTION_NAMES if name in options})
    test_options = TestOptions(**{name: options[name] for name in TEST_OPTION_NAMES if name in options})
    progress = options.get("progress")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    return bin_options, test_options, progress


DEFAULT_BINS_RULE = ("min(100, N/40) for N real samples, and at most M/20 for M fake samples where they are known: "
                     "about 20 reference and 20 fake samples per bin")


def default_num_bins(num_real: int, holdout_fraction: float = 0.5, mode: str = "holdout",
                     num_fake: int | None = None) -> int:
    """K from the sample sizes, where none is given (the command line, the report, the collapse monitor): about 20
    reference samples per bin (held out in ``holdout`` mode, all of them in ``original``) and, when the number of
    fake samples is known, about 20 of them per bin; at most 100 and at least 2, so the per-bin z-test is reliable:
    ``min(100, N / 40, M / 20)`` in the default holdout mode.

    The fake-sample cap comes from the ground-truth experiment (docs/ground_truth.md): one missing mode among 25 was
    found in 20 of 20 seeds with about 20 fake samples per bin, in 10 of 20 with 10, never with 5.

    Example:
        >>> default_num_bins(1797), default_num_bins(50_000), default_num_bins(100)
        (44, 100, 2)
        >>> default_num_bins(1000, mode="original")
        50
        >>> default_num_bins(50_000, num_fake=500)  # a small fake set: fewer, fuller bins
        25
    """
    reference = num_real if mode == "original" else int(num_real * holdout_fraction)
    k = min(100, reference // 20)
    if num_fake is not None:
        k = min(k, num_fake // 20)
    return max(2, k)


def option_defaults() -> dict[str, Any]:
    """Every option with its default (``progress``: ``None``)."""
    defaults = BinOptions()
    return {**{f.name: getattr(defaults, f.name) for f in fields(defaults)}, **asdict(TestOptions()), "progress": None}


def option_flag(name: str) -> tuple[str, dict[str, Any]]:
    """``(flag, argparse keyword arguments)`` of one option (see :func:`cli_flags`)."""
    return next(flag for flag in cli_flags() if flag[1]["dest"] == name)


def cli_flags(*, bins_from_data: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """``(flag, argparse keyword arguments)`` for every bin and test option, built from the fields' metadata, with
    the default shown in the help. ``bins_from_data``: ``--num-bins`` defaults to ``None``, for K from the number
    of real samples (:func:`default_num_bins`), as the commands that read the real samples first do."""
    out = []
    defaults = option_defaults()
    if bins_from_data:
        defaults["num_bins"] = None
    for option_fields in (fields(BinOptions), fields(TestOptions)):
        for f in option_fields:
            cli = dict(f.metadata["cli"])
            flag = cli.pop("flag", "--" + f.name.replace("_", "-"))
            default = defaults[f.name]
            shown = " ".join(str(v) for v in default) if isinstance(default, tuple) else default
            if f.name == "num_bins" and default is None:
                shown = DEFAULT_BINS_RULE
            cli.update(dest=f.name, default=default, help=f"{f.metadata['help']} (default: {shown})")
            out.append((flag, cli))
    return out
