"""torchmetrics faces: :class:`NDBMetric` (used like ``FrechetInceptionDistance``, exact and O(K) under DDP),
:class:`BirthdayMetric` and :class:`PRDCMetric` (precision, recall, density, coverage).

Needs torchmetrics (``pip install fastndb[torchmetrics]``); importing this module without it raises
``ModuleNotFoundError`` naming that extra. ``import fastndb`` never imports it.

State, chosen for scale:

* fake samples become per-bin counts as soon as bins exist: one ``(K,)`` int64 state with
  ``dist_reduce_fx="sum"``, so memory is O(K) whatever the number of samples, and a DDP sync moves K integers;
* real samples are held only until the bins are fitted (at the first :meth:`~NDBMetric.compute`), at most
  ``max_real_samples`` per process: a uniform sample chosen by content keys (:mod:`fastndb._core.sampling`), so which
  samples are kept does not depend on their order or batching. Fake samples that arrive before the bins exist
  are held the same way (same cap) and counted when the bins are fitted;
* the bins themselves are fitted across ranks under DDP (:meth:`fastndb.NDB.fit` with a distributed collective):
  every rank ends with the same bins, those one process fitting the union of the shards would get.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from fastndb._core.backends import resolve_backend
from fastndb._core.bins import FittedBins, compare_counts, count_bins, fit_bins, merge_summaries
from fastndb._core.birthday import birthday, check_options
from fastndb._core.checks import check_int, check_seed
from fastndb._core.collectives import Collective, SingleProcess, TorchDistributed
from fastndb._core.extractors import embed, label_of, resolve_feature, same_features
from fastndb._core.features import ValueSummary, check_value_range, check_value_ranges, summarize, to_float
from fastndb._core.inputs import as_batches, concatenate
from fastndb._core.optional import require
from fastndb._core.options import OPTION_NAMES, split_options
from fastndb._core.results import BirthdayResult, NDBResult
from fastndb._core.sampling import FAKE_BUFFER_SALT, REAL_BUFFER_SALT, SEEDING_SALT, SmallestKeyBuffer
from fastndb._ndb import NDB

_torchmetrics = require("torchmetrics", "fastndb.metrics")
logger = logging.getLogger(__name__)

_DTYPE_CODES = {torch.float32: 1, torch.float64: 2}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}


def _metric_init(metric: Any, where: str, kwargs: dict) -> None:
    """``torchmetrics.Metric.__init__`` with an unknown keyword refused as a ``TypeError`` naming it, as
    ``fastndb.score`` and ``NDB`` do (torchmetrics raises a ``ValueError``)."""
    try:
        _torchmetrics.Metric.__init__(metric, **kwargs)
    except ValueError as err:
        if "Unexpected keyword arguments" not in str(err):
            raise
        unknown = ", ".join(sorted(kwargs))
        raise TypeError(f"{where} got unexpected keyword argument(s): {unknown}; the options are "
                        f"{', '.join(OPTION_NAMES)}, and torchmetrics' Metric options") from None


def collective_of(metric: Any) -> Collective:
    """The ranks a metric computes over, from torchmetrics' public settings: ``sync_on_compute``,
    ``distributed_available_fn`` and ``process_group``."""
    available = metric.distributed_available_fn
    if metric.sync_on_compute and callable(available) and available():
        return TorchDistributed(metric.process_group)
    return SingleProcess()


def _agreed_shard(local: Tensor | None, comm: Collective, device: torch.device) -> Tensor | None:
    """This rank's ``(n, D)`` samples in the widest dtype any rank holds (an empty ``(0, D)`` tensor on a rank with
    none), so that the ranks' shards can be gathered; ``None`` when no rank holds any. A collective call."""
    described = torch.tensor([0, 0] if local is None else [local.shape[1], _DTYPE_CODES.get(local.dtype, 1)],
                             dtype=torch.int64, device=device)
    everyone, _ = comm.all_gather_cat(described[None, :])
    features, dtype_code = (int(v) for v in everyone.max(dim=0).values)
    if features == 0:
        return None
    dtype = _CODE_DTYPES[dtype_code]
    return torch.empty((0, features), dtype=dtype, device=device) if local is None else local.to(dtype)


class NotReadyError(AttributeError, ValueError):
    """An attribute that exists only after ``compute()`` (``bins``, ``result``, ``samples``) was read before it.

    An ``AttributeError``, so that ``hasattr(metric, "bins")`` is ``False`` and ``getattr(metric, "bins", None)``
    returns ``None`` as introspection (Lightning, ``torch.jit``) expects, and a ``ValueError`` as before."""


class _ReadyAttributes:
    """Keeps the informative message of a property that is not ready: ``nn.Module.__getattr__`` would otherwise
    replace it with a bare "has no attribute" when the property raises ``AttributeError``."""

    _not_ready: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        message = type(self)._not_ready.get(name)
        if message is not None:
            raise NotReadyError(message)
        return super().__getattr__(name)  # type: ignore[misc]


class NDBMetric(_ReadyAttributes, _torchmetrics.Metric):
    """NDB (number of statistically different bins) as a ``torchmetrics.Metric``.

    Usage follows ``FrechetInceptionDistance``: ``update(imgs, real=True)`` with real samples,
    ``update(imgs, real=False)`` with generated ones, ``compute()``. Bins are fitted on the real samples at the
    first ``compute()`` (across ranks under DDP) or passed in already fitted (``bins=``), in which case a
    training loop only ever streams fake samples.

    Args:
        num_bins: number of k-means bins ``K`` (ignored with ``bins``).
        alpha: per-bin significance level (ignored with ``bins``).
        bins: an already-fitted :class:`~fastndb.NDB`: its bins and test options are used and never dropped.
        reset_real_features: whether :meth:`reset` also drops the fitted bins and the real samples (the default,
            as in ``FrechetInceptionDistance``). With ``False`` the bins are kept across ``reset()`` and only the
            fake counts start again: fit once, evaluate every epoch.
        max_real_samples: most real samples held per process before the bins are fitted (a uniform sample of
            those passed, chosen by content keys with ``seed``); the same cap applies to fake samples that arrive
            before the bins.
        **kwargs: every option of :class:`~fastndb.NDB` by the same names (``seed``, ``mode``, ``value_range``,
            ``feature``, ``correction``, ...; :data:`fastndb.OPTION_NAMES`), and ``torchmetrics.Metric`` options
            (``sync_on_compute``, ``process_group``, ``distributed_available_fn``, ...). ``feature=`` works as
            ``FrechetInceptionDistance(feature=...)``: a name (``"inception"``, ``"dinov2-vits14"``, ``"digits"``,
            ...), a module or a callable; each batch is embedded at ``update`` on the metric's device and only the
            features (real, until the bins exist) and then the bin counts are kept.

    Devices follow torchmetrics' convention: the metric's device (``metric.to("cuda")``). Samples held before the
    bins exist and the counts live there; a batch on another device is moved there (its ``K`` counts, or the
    held samples, never the other way round), so under NCCL every collective sees CUDA tensors once the metric is
    on the GPU.

    ``compute()`` returns a dict of 0-d tensors on the metric's device: ``ndb`` (int64), ``ndb_ratio``, ``js``
    and ``p_value`` (the overall chi-square test, float64). The full :class:`~fastndb.NDBResult` of the last
    ``compute()`` is :attr:`result`. ``forward`` only updates (a per-batch NDB would need bins per batch) and
    returns ``None``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> modes = torch.randn(8, 16, generator=g) * 6
        >>> def draw(n, keep=8):
        ...     return modes[torch.randint(keep, (n,), generator=g)] + torch.randn(n, 16, generator=g)
        >>> metric = NDBMetric(num_bins=16, reset_real_features=False)
        >>> for _ in range(4):
        ...     metric.update(draw(1000), real=True)
        ...     metric.update(draw(500, keep=4), real=False)  # half the modes dropped
        >>> out = metric.compute()
        >>> sorted(out), bool(out["ndb"] >= 8)
        (['js', 'ndb', 'ndb_ratio', 'p_value'], True)
        >>> metric.reset()  # bins kept: the next epoch streams fake samples only
        >>> metric.update(draw(2000), real=False)
        >>> bool(metric.compute()["ndb"] <= 4)
        True
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0

    fake_counts: Tensor

    _not_ready = {"bins": "bins: not fitted yet; call compute() after update(imgs, real=True)",
                  "result": "result: call compute() first"}

    def __init__(
        self,
        num_bins: int = 100,
        alpha: float = 0.05,
        *,
        bins: NDB | None = None,
        reset_real_features: bool = True,
        max_real_samples: int = 100_000,
        **kwargs: Any,
    ) -> None:
        options = {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}
        _metric_init(self, "NDBMetric()", kwargs)
        if not isinstance(reset_real_features, bool):
            raise TypeError(f"reset_real_features: expected a bool, got {reset_real_features!r}")
        self.reset_real_features = reset_real_features
        self.max_real_samples = check_int(max_real_samples, "max_real_samples", minimum=1)
        if bins is not None:
            if not isinstance(bins, NDB):
                raise TypeError(f"bins: expected a fitted fastndb.NDB, got {type(bins).__name__}")
            if not bins.is_fitted:
                raise ValueError("bins: the NDB passed has no bins yet; call its fit(real) first, or leave bins=None")
            if options:
                raise ValueError(
                    f"bins: the options {sorted(options)} belong to the NDB you passed; set them there instead"
                )
            self.options, self.test, self.progress = bins.options, bins.test, bins.progress
        else:
            self.options, self.test, self.progress = split_options(
                {"num_bins": num_bins, "alpha": alpha, **options}, where="NDBMetric()"
            )
        self._passed_bins = None if bins is None else bins.bins
        self._bins: FittedBins | None = self._passed_bins
        self._extractor = self.options.feature
        # owned bins see samples already mapped to [0, 1] here (value_range applied at update), so they take none;
        # with an extractor the samples become features at update, and value_range applies before it
        self._convert = self.options.value_range if bins is None and self._extractor is None else None
        self._fit_options = self.options.without_features()
        self._engine = resolve_backend(self.options.backend)
        self._real_values: ValueSummary | None = None  # of what the bins see (the features, with an extractor)
        self._input_values: ValueSummary | None = None  # with an extractor: the real samples' own range
        self.num_bins = self.options.num_bins
        self.seed = self.options.seed
        self._real = SmallestKeyBuffer(self.max_real_samples, self.seed, REAL_BUFFER_SALT)
        self._pending_fake = SmallestKeyBuffer(self.max_real_samples, self.seed, FAKE_BUFFER_SALT)
        self._pending_counts: Tensor | None = None  # local counts of fakes that came before the bins
        self._result: NDBResult | None = None
        self.add_state("fake_counts", torch.zeros(self.num_bins, dtype=torch.int64), dist_reduce_fx="sum",
                       persistent=True)

    # ------------------------------------------------------------------ update
    @property
    def bins(self) -> FittedBins:
        """The fitted bins (after the first ``compute()``, or those passed in)."""
        if self._bins is None:
            raise NotReadyError(self._not_ready["bins"])
        return self._bins

    @property
    def is_fitted(self) -> bool:
        """Whether the bins exist (after the first ``compute()``, or when passed in)."""
        return self._bins is not None

    @property
    def buffered_samples(self) -> dict[str, int]:
        """How many real and fake samples are held (both 0 once the bins exist and pending fakes are counted)."""
        return {"real": len(self._real), "fake": len(self._pending_fake)}

    @property
    def buffered_nbytes(self) -> int:
        """Bytes held by the sample buffers (0 once the bins exist and pending fakes are counted)."""
        return self._real.nbytes + self._pending_fake.nbytes

    @property
    def local_fake_counts(self) -> Tensor:
        """``(K,)`` this process's own fake counts (not summed over ranks), including the fakes held until the bins
        existed."""
        if self._pending_counts is None:
            return self.fake_counts.clone()
        return self.fake_counts + self._pending_counts.to(self.fake_counts.device)

    def _count(self, x: Tensor, name: str) -> Tensor:
        """Bin counts of ``x`` (on the metric's device), converted as the bins expect."""
        counted = to_float(x, self._convert) if self._passed_bins is None else x
        bins = self.bins.to(self.device)
        return count_bins(bins, [counted.to(self.device)], engine=self._engine, name=name, progress=False)

    def update(self, imgs: Any, real: bool) -> None:  # type: ignore[override]
        """Add a batch of samples ``(N, ...)``: real ones until the bins exist, fake ones at any time.

        Args:
            imgs: samples (tensor on any device, numpy/CuPy array); flattened to ``(N, D)``.
            real: whether they are real samples.

        Raises:
            TypeError: ``real`` is not a bool; ``imgs`` is not an array.
            ValueError: invalid samples, a number of features different from earlier batches or the bins, or a
                value range that cannot be compared with the real samples'.
        """
        if not isinstance(real, bool):
            raise TypeError(f"real: expected True or False, got {real!r}")
        if self._pending_counts is not None:  # counts of fakes held before the bins: local state from here on
            self.fake_counts += self._pending_counts.to(self.fake_counts.device)
            self._pending_counts = None
        name = "imgs (real)" if real else "imgs (fake)"
        x = concatenate(as_batches(imgs, name, check_finite=False, flatten=self._extractor is None))  # one read below
        if real and self.is_fitted:  # as FID with reset_real_features=False: real batches after the fit cost nothing
            logger.debug("NDBMetric: bins already fitted; %d real samples ignored", x.shape[0])
            return
        if self._extractor is not None:
            x = self._embed(x, name, real)
        self._check_features(x, name)
        if real:
            summary = summarize(x, self._convert, name)
            self._real_values = summary if self._real_values is None else self._real_values.merge(summary)
            self._real.add(to_float(x, self._convert).to(self.device))
        elif self.is_fitted:
            self.fake_counts += self._count(x, name).to(self.fake_counts.device)
        else:
            summary = summarize(x, self._convert, name)
            if self._real_values is not None:
                check_value_ranges(self._real_values, summary, reference_name="imgs (real)", name=name)
            self._pending_fake.add(to_float(x, self._convert).to(self.device))

    def _embed(self, x: Tensor, name: str, real: bool) -> Tensor:
        """Features of a batch on the metric's device; the batch's own range is kept (real) or checked against the
        real samples' (fake), as without an extractor."""
        reference = self.bins.input_values if self.is_fitted else self._input_values
        check = None
        if not real and reference is not None:
            check = lambda summary, label: check_value_ranges(reference, summary,  # noqa: E731
                                                               reference_name="imgs (real)", name=label)
        features, summary = embed(x, self._extractor, self.options.value_range, name, check)
        if real and not self.is_fitted:
            self._input_values = summary if self._input_values is None else self._input_values.merge(summary)
        return features.to(self.device)

    def _check_features(self, x: Tensor, name: str) -> None:
        expected = None
        if self.is_fitted:
            expected, source = self.bins.num_features, "the bins"
        else:
            for buffer, kind in ((self._real, "real"), (self._pending_fake, "fake")):
                if buffer.samples is not None:
                    expected, source = buffer.samples.shape[1], f"earlier {kind} samples"
                    break
        if expected is not None and x.shape[1] != expected:
            raise ValueError(f"{name}: expected {expected} features per sample like {source}, got {x.shape[1]}")

    def forward(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Same as :meth:`update` (returns ``None``: NDB needs bins, not one batch)."""
        self.update(*args, **kwargs)

    # ----------------------------------------------------------------- compute
    def _collective(self) -> Collective:
        """The ranks this metric computes over, by torchmetrics' own public settings (``sync_on_compute``,
        ``process_group``, ``distributed_available_fn``), so that fitting and torchmetrics' sync always agree."""
        return collective_of(self)

    def compute(self) -> dict[str, Tensor]:
        """NDB of all fake samples so far against the bins: a dict of 0-d tensors (see the class docstring).

        The first call fits the bins on the real samples of every rank (a collective call under DDP). Fake samples
        held from before the bins are counted then; their counts are summed over ranks here, those of later
        batches by torchmetrics' own sync of ``fake_counts``.

        Raises:
            ValueError: no real samples to fit the bins on, or no fake samples.
        """
        comm = self._collective()
        if not self.is_fitted:
            local = _agreed_shard(self._real.samples, comm, self.device)
            if local is None:
                raise ValueError("compute: no real samples to fit the bins on; call update(imgs, real=True) first")
            logger.info("NDBMetric: fitting %d bins on %d of %d real samples held on this rank",
                        self.num_bins, len(self._real), self._real.seen)
            real_values = merge_summaries(self._real_values, comm, self.device)
            bins = fit_bins(local.to(self.device), self._fit_options, comm=comm, real_values=real_values,
                            progress=self.progress)
            if self._extractor is not None:
                bins = replace(bins, feature=label_of(self._extractor),
                               input_values=merge_summaries(self._input_values, comm, self.device))
            self._bins = bins
            self._real.clear()
        pending = self._pending_fake.samples
        if pending is not None:
            counts = count_bins(self.bins.to(self.device), [pending.to(self.device)], engine=self._engine,
                                name="imgs (fake)", progress=False)
            self._pending_counts = counts if self._pending_counts is None else self._pending_counts + counts
            self._pending_fake.clear()
        total = self.fake_counts
        if comm.world_size > 1 or self._pending_counts is not None:
            local_pending = (self._pending_counts if self._pending_counts is not None
                             else torch.zeros_like(self.fake_counts)).to(self.fake_counts.device)
            total = total + comm.all_reduce_sum(local_pending)
        try:
            result = compare_counts(self.bins, total, self.test)  # its one host read also sees an empty total
        except ValueError as err:
            if "fake_counts" in str(err):
                raise ValueError("compute: no fake samples yet; call update(imgs, real=False) first") from None
            raise
        self._result = result
        device = self.fake_counts.device
        return {
            "ndb": torch.tensor(result.ndb, dtype=torch.int64, device=device),
            "ndb_ratio": torch.tensor(result.ndb_ratio, dtype=torch.float64, device=device),
            "js": torch.tensor(result.js, dtype=torch.float64, device=device),
            "p_value": torch.tensor(result.p_value, dtype=torch.float64, device=device),
        }

    @property
    def result(self) -> NDBResult:
        """The full :class:`~fastndb.NDBResult` of the last ``compute()``."""
        if self._result is None:
            raise NotReadyError(self._not_ready["result"])
        return self._result

    # ------------------------------------------------------------------- state
    def reset(self) -> None:
        """Zero the fake counts; with ``reset_real_features`` also drop the real samples and bins you did not pass."""
        super().reset()
        self._pending_fake.clear()
        self._pending_counts = None
        self._result = None
        if self.reset_real_features:
            self._real.clear()
            self._real_values = self._input_values = None
            self._bins = self._passed_bins

    def get_extra_state(self) -> dict:
        """Bins and held samples for ``state_dict`` (plain tensors and numbers)."""
        return {
            "bins": self._bins.to_dict() if self._bins is not None else None,
            "real": self._real.state(),
            "pending_fake": self._pending_fake.state(),
            "pending_counts": self._pending_counts,
            "real_values": None if self._real_values is None else self._real_values.to_dict(),
            "input_values": None if self._input_values is None else self._input_values.to_dict(),
        }

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved (tensors go to the metric's device).

        torchmetrics restores ``fake_counts`` as the checkpoint holds it (on the CPU after ``map_location="cpu"``);
        it is moved to the metric's device here too, so counts, bins and held samples never sit on two devices.
        """
        self.fake_counts = self.fake_counts.to(self.device)
        bins = state["bins"]
        self._bins = None if bins is None else FittedBins.from_dict(bins).to(self.device)
        self._real.load_state(state["real"])
        self._pending_fake.load_state(state["pending_fake"])
        pending = state.get("pending_counts")
        self._pending_counts = None if pending is None else pending.to(self.device)
        self._real_values = ValueSummary.from_dict(state.get("real_values"))
        self._input_values = ValueSummary.from_dict(state.get("input_values"))
        if self._bins is not None:
            same_features(self._bins.feature, self._extractor, "the checkpoint's bins")
        if self.is_fitted or len(self._real) or len(self._pending_fake):
            # torchmetrics' private update counter: without it, compute() after loading a checkpoint warns that
            # update() was never called. No public API sets it; tests/test_metrics.py checks this still works with
            # the torchmetrics installed (CI installs the newest release).
            self._update_count = max(self._update_count, 1)

    def plot(self, val: Any = None, ax: Any = None) -> tuple[Any, Any]:
        """Plot the bins of the last ``compute()`` (``val=None``) or ``ndb_ratio`` over a list of outputs.

        Args:
            val: ``None`` for the bin proportions of :attr:`result`, or a list of ``compute()`` outputs (e.g.
                one per epoch) for their ``ndb_ratio`` curve.
            ax: matplotlib axes to draw on.

        Returns:
            ``(fig, ax)``, like torchmetrics' own ``plot``.
        """
        from fastndb import plot

        if val is None or isinstance(val, dict):
            return plot.bin_proportions(self.result, ax=ax)
        return plot.metric_history(list(val), key="ndb_ratio", ax=ax)


class BirthdayMetric(_ReadyAttributes, _torchmetrics.Metric):
    """The birthday-paradox test (:func:`fastndb.birthday`) as a ``torchmetrics.Metric``.

    ``update(samples)`` offers generated samples; at most ``num_samples`` are kept per process (a uniform sample
    of those offered, chosen by content keys, so the result does not depend on the order or batching);
    ``compute()`` gathers the kept samples of every rank under DDP (``world_size x num_samples x D`` values,
    once) and runs the test on their union. Unlike :class:`NDBMetric` the state is samples, not counts: the test
    needs the samples themselves. ``reset()`` drops them.

    Args:
        num_samples: ``s`` per process, the size of the sample the test draws.
        threshold: duplicate threshold (see :func:`fastndb.duplicate_threshold`); ``None``: closest pairs only.
        num_pairs: closest pairs kept in :attr:`result`.
        metric: ``"l2"`` or ``"cosine"``.
        seed: seed of the sample choice.
        value_range: ``(low, high)`` of samples that are not ``uint8``/``uint16`` images, mapped to [0, 1] (the
            library's convention, :mod:`fastndb._core.features`); pass the same to
            :func:`~fastndb.duplicate_threshold`.
        feature: test the samples' features instead (as :func:`fastndb.birthday`); each batch is embedded at
            ``update`` and only features are kept. Take the threshold with the same ``feature``.
        **kwargs: ``torchmetrics.Metric`` options.

    ``compute()`` returns 0-d float64 tensors: ``closest_distance``, and with a threshold ``num_duplicates``,
    ``duplicate_rate`` and ``support_estimate`` (``inf`` without duplicates). :attr:`result` is the full
    :class:`~fastndb.BirthdayResult` (indices refer to :attr:`samples`).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> support = torch.randn(300, 8, generator=g)  # a generator that only knows 300 outputs
        >>> metric = BirthdayMetric(num_samples=600, threshold=1e-6)
        >>> for _ in range(3):
        ...     metric.update(support[torch.randint(300, (200,), generator=g)])
        >>> out = metric.compute()
        >>> 100 < float(out["support_estimate"]) < 900
        True
    """

    higher_is_better = True  # a larger support estimate is better
    is_differentiable = False
    full_state_update = False

    _not_ready = {"result": "result: call compute() first", "samples": "samples: call compute() first"}

    def __init__(
        self,
        num_samples: int = 10_000,
        *,
        threshold: float | None = None,
        num_pairs: int = 20,
        metric: str = "l2",
        seed: int = 0,
        value_range: tuple[float, float] | None = None,
        feature: object = None,
        **kwargs: Any,
    ) -> None:
        _metric_init(self, "BirthdayMetric()", kwargs)
        self.value_range = check_value_range(value_range)
        self.feature = resolve_feature(feature)
        self.num_samples = check_int(num_samples, "num_samples", minimum=2)
        self.threshold = threshold
        self.num_pairs = check_int(num_pairs, "num_pairs", minimum=1)
        self.metric = metric
        self.seed = check_seed(seed)
        check_options(metric, threshold)  # now, not at the first compute()
        self._buffer = SmallestKeyBuffer(self.num_samples, self.seed, SEEDING_SALT)
        self._samples: Tensor | None = None
        self._result: BirthdayResult | None = None

    def update(self, samples: Any) -> None:  # type: ignore[override]
        """Offer a batch of generated samples ``(N, ...)`` (any device; flattened)."""
        if self.feature is None:
            x = to_float(concatenate(as_batches(samples, "samples")), self.value_range).to(self.device)
        else:
            raw = concatenate(as_batches(samples, "samples", check_finite=False, flatten=False))
            x = embed(raw, self.feature, self.value_range, "samples")[0].to(self.device)
        held = self._buffer.samples
        if held is not None and held.shape[1] != x.shape[1]:
            raise ValueError(f"samples: expected {held.shape[1]} features per sample like earlier ones, "
                             f"got {x.shape[1]}")
        self._buffer.add(x)

    def forward(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Same as :meth:`update` (returns ``None``)."""
        self.update(*args, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        """Run the test on the kept samples of all ranks (see the class docstring).

        Raises:
            ValueError: fewer than 2 samples over all ranks.
        """
        comm = collective_of(self)
        held = self._buffer.samples
        local = _agreed_shard(None if held is None else held.to(self.device), comm, self.device)
        if local is not None and comm.world_size > 1:
            local, _ = comm.all_gather_cat(local)
        if local is None or local.shape[0] < 2:
            raise ValueError("compute: expected at least 2 samples; call update(samples) first")
        num_pairs = min(self.num_pairs, local.shape[0] * (local.shape[0] - 1) // 2)
        result = birthday(local, num_pairs=num_pairs, metric=self.metric, threshold=self.threshold)
        self._samples, self._result = local, result
        device = local.device
        out = {"closest_distance": result.distances[0].to(torch.float64)}
        if result.num_duplicates is not None:
            out["num_duplicates"] = torch.tensor(float(result.num_duplicates), dtype=torch.float64, device=device)
            out["duplicate_rate"] = torch.tensor(result.duplicate_rate, dtype=torch.float64, device=device)
            out["support_estimate"] = torch.tensor(result.support_estimate, dtype=torch.float64, device=device)
        return out

    @property
    def result(self) -> BirthdayResult:
        """The full :class:`~fastndb.BirthdayResult` of the last ``compute()``."""
        if self._result is None:
            raise NotReadyError(self._not_ready["result"])
        return self._result

    @property
    def samples(self) -> Tensor:
        """The samples the last ``compute()`` tested (what :attr:`result`'s indices refer to)."""
        if self._samples is None:
            raise NotReadyError(self._not_ready["samples"])
        return self._samples

    def reset(self) -> None:
        """Drop the kept samples."""
        super().reset()
        self._buffer.clear()
        self._samples = self._result = None

    def get_extra_state(self) -> dict:
        """Kept samples for ``state_dict``."""
        return {"buffer": self._buffer.state()}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._buffer.load_state(state["buffer"])
        if len(self._buffer):
            self._update_count = max(self._update_count, 1)  # torchmetrics' private counter: see NDBMetric

    def plot(self, val: Any = None, ax: Any = None) -> tuple[Any, Any]:
        """The closest pairs of the last ``compute()`` side by side (``val`` is ignored); returns ``(fig, ax)``."""
        from fastndb import plot

        return plot.birthday_pairs(self.samples, self.result, ax=ax)


class PRDCMetric(_ReadyAttributes, _torchmetrics.Metric):
    """Precision, recall, density and coverage (:func:`fastndb.prdc`) as a ``torchmetrics.Metric``.

    Used like :class:`NDBMetric`: ``update(imgs, real=True)``, ``update(imgs, real=False)``, ``compute()``. The
    metrics need the samples themselves (k-NN radii), so the state is samples, not counts: at most
    ``max_samples`` real and ``max_samples`` fake samples per process, each a uniform sample of those offered,
    chosen by content keys (the same whatever the order or batching). ``compute()`` gathers the kept samples of
    every rank under DDP and keeps the ``max_samples`` with the smallest keys of the union, as one process fed the
    union keeps (duplicates offered on two ranks are the one exception: each rank numbers its own copies), then
    computes on them.

    Memory per process: ``2 x max_samples x d`` values (``d`` the features per sample, after ``feature=``), plus
    16 bytes per distinct sample offered; at ``compute()`` the union, ``world_size x 2 x max_samples x d``, once,
    and the bounded working memory of :func:`fastndb.prdc`.

    Args:
        nearest_k: ``k`` of the k-NN radii.
        max_samples: most samples of each set kept (per process, and after the union).
        inclusive: ``<=`` instead of ``<`` (see :func:`fastndb.prdc`).
        reset_real_features: whether :meth:`reset` also drops the real samples (default, as FID).
        feature: embed each batch at ``update`` (as :class:`NDBMetric`); only features are kept.
        value_range: the value-range convention's range for float samples.
        seed: seed of the sample choice.
        **kwargs: ``torchmetrics.Metric`` options.

    ``compute()`` returns 0-d float64 tensors ``precision``, ``recall``, ``density``, ``coverage``; the full
    :class:`~fastndb.PRDCResult` is :attr:`result`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> metric = PRDCMetric(nearest_k=5)
        >>> for _ in range(2):
        ...     metric.update(torch.randn(300, 8, generator=g), real=True)
        ...     metric.update(torch.randn(300, 8, generator=g).abs(), real=False)  # one orthant only
        >>> out = metric.compute()
        >>> sorted(out), bool(out["coverage"] < 0.3)
        (['coverage', 'density', 'precision', 'recall'], True)
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    _not_ready = {"result": "result: call compute() first"}

    def __init__(
        self,
        nearest_k: int = 5,
        *,
        max_samples: int = 10_000,
        inclusive: bool = False,
        reset_real_features: bool = True,
        feature: object = None,
        value_range: tuple[float, float] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        _metric_init(self, "PRDCMetric()", kwargs)
        self.nearest_k = check_int(nearest_k, "nearest_k", minimum=1)
        self.max_samples = check_int(max_samples, "max_samples", minimum=2)
        if not isinstance(inclusive, bool):
            raise TypeError(f"inclusive: expected True or False, got {inclusive!r}")
        if not isinstance(reset_real_features, bool):
            raise TypeError(f"reset_real_features: expected a bool, got {reset_real_features!r}")
        self.inclusive, self.reset_real_features = inclusive, reset_real_features
        self.feature = resolve_feature(feature)
        self.value_range = check_value_range(value_range)
        self.seed = check_seed(seed)
        self._kept = {True: SmallestKeyBuffer(self.max_samples, self.seed, REAL_BUFFER_SALT),
                         False: SmallestKeyBuffer(self.max_samples, self.seed, FAKE_BUFFER_SALT)}
        self._values: dict[bool, ValueSummary | None] = {True: None, False: None}
        self._result: Any = None

    def update(self, imgs: Any, real: bool) -> None:  # type: ignore[override]
        """Offer a batch of real or fake samples ``(N, ...)`` (any device; embedded first with ``feature``).

        Raises:
            TypeError: ``real`` is not a bool; ``imgs`` is not an array.
            ValueError: invalid samples, another number of features than earlier batches, a value range that
                cannot be compared with the real samples'.
        """
        if not isinstance(real, bool):
            raise TypeError(f"real: expected True or False, got {real!r}")
        name = "imgs (real)" if real else "imgs (fake)"
        raw = concatenate(as_batches(imgs, name, check_finite=False, flatten=self.feature is None))
        reference = None if real else self._values[True]
        check = None if reference is None else (
            lambda summary, label: check_value_ranges(reference, summary, reference_name="imgs (real)", name=label))
        if self.feature is not None:
            x, summary = embed(raw, self.feature, self.value_range, name, check)
        else:
            summary = summarize(raw, self.value_range, name)
            if check is not None:
                check(summary, name)
            x = to_float(raw, self.value_range)
        held = self._kept[real].samples
        if held is not None and held.shape[1] != x.shape[1]:
            raise ValueError(f"{name}: expected {held.shape[1]} features per sample like earlier ones, got "
                             f"{x.shape[1]}")
        other = self._kept[not real].samples
        if other is not None and other.shape[1] != x.shape[1]:
            raise ValueError(f"{name}: expected {other.shape[1]} features per sample like the "
                             f"{'fake' if real else 'real'} samples, got {x.shape[1]}")
        previous = self._values[real]
        self._values[real] = summary if previous is None else previous.merge(summary)
        self._kept[real].add(x.to(self.device))

    def forward(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Same as :meth:`update` (returns ``None``)."""
        self.update(*args, **kwargs)

    def _union(self, real: bool, comm: Collective) -> Tensor | None:
        """The kept samples of every rank, cut to the ``max_samples`` smallest keys of the union (a collective)."""
        buffer = self._kept[real]
        held = buffer.samples
        local = _agreed_shard(None if held is None else held.to(self.device), comm, self.device)
        if local is None:
            return None
        keys = buffer.state()["keys"]
        keys = torch.empty(0, dtype=torch.int64, device=self.device) if keys is None else keys.to(self.device)
        if comm.world_size > 1:
            local, _ = comm.all_gather_cat(local)
            keys, _ = comm.all_gather_cat(keys)
        if local.shape[0] > self.max_samples:
            local = local.index_select(0, torch.topk(keys, self.max_samples, largest=False).indices)
        return local

    def compute(self) -> dict[str, Tensor]:
        """The four metrics on the kept samples of all ranks (see the class docstring).

        Raises:
            ValueError: no real or no fake samples, or too few for ``nearest_k``.
        """
        from fastndb._core.coverage import prdc

        comm = collective_of(self)
        real, fake = self._union(True, comm), self._union(False, comm)
        if real is None or fake is None:
            missing = "real" if real is None else "fake"
            raise ValueError(f"compute: no {missing} samples yet; call update(imgs, real={missing == 'real'}) first")
        result = prdc(real, fake, nearest_k=self.nearest_k, inclusive=self.inclusive)
        self._result = result
        return {key: torch.tensor(value, dtype=torch.float64, device=self.device)
                for key, value in result.scores().items()}

    @property
    def result(self) -> Any:
        """The full :class:`~fastndb.PRDCResult` of the last ``compute()``."""
        if self._result is None:
            raise NotReadyError(self._not_ready["result"])
        return self._result

    def reset(self) -> None:
        """Drop the fake samples; with ``reset_real_features`` the real ones too."""
        super().reset()
        self._kept[False].clear()
        self._values[False] = None
        self._result = None
        if self.reset_real_features:
            self._kept[True].clear()
            self._values[True] = None

    def get_extra_state(self) -> dict:
        """Kept samples and value ranges for ``state_dict``."""
        return {"real": self._kept[True].state(), "fake": self._kept[False].state(),
                "values": {str(k): None if v is None else v.to_dict() for k, v in self._values.items()}}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._kept[True].load_state(state["real"])
        self._kept[False].load_state(state["fake"])
        self._values = {True: ValueSummary.from_dict(state["values"]["True"]),
                        False: ValueSummary.from_dict(state["values"]["False"])}
        if len(self._kept[True]) or len(self._kept[False]):
            self._update_count = max(self._update_count, 1)  # torchmetrics' private counter: see NDBMetric
