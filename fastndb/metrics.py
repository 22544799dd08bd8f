"""torchmetrics faces: :class:`NDBMetric` (used like ``FrechetInceptionDistance``, exact and O(K) under DDP),
:class:`BirthdayMetric`, :class:`PRDCMetric` (precision, recall, density, coverage), :class:`ModesMetric` (mode
counts) and :class:`MemorizationMetric` (copies of the training data).

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

import itertools
import logging
import warnings
from dataclasses import fields, replace
from typing import Any

import torch
from torch import Tensor

from fastndb._core.backends import resolve_backend
from fastndb._core.bins import FittedBins, compare_counts, count_bins, fit_bins, merge_summaries
from fastndb._core.birthday import check_options
from fastndb._core.checks import check_int, check_seed
from fastndb._core.collectives import Collective, SingleProcess, TorchDistributed
from fastndb._core.extractors import embed, label_of, resolve_feature, same_features
from fastndb._core.features import ValueSummary, check_value_range, check_value_ranges, summarize, to_float
from fastndb._core.inputs import as_batches, concatenate
from fastndb._core.optional import require
from fastndb._core.options import OPTION_NAMES, split_options
from fastndb._core.results import BirthdayResult, NDBResult
from fastndb._core.sampling import (
    FAKE_BUFFER_SALT,
    REAL_BUFFER_SALT,
    SEEDING_SALT,
    SmallestKeyBuffer,
    content_fingerprint,
)
from fastndb._core.sync import host_values
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


_STATE_KEY = "fastndb_state"
_instances = itertools.count(1)


def _keep_local(stacked: Tensor) -> Tensor:
    """``dist_reduce_fx`` of the instance key: each rank keeps its own (the key only tells metrics apart)."""
    return stacked[0] if stacked.dim() > 1 else stacked


class _Metric(_torchmetrics.Metric):
    """What the three metrics share: held samples and fitted bins live outside torchmetrics' registered states
    (bounded content-keyed buffers, bins fitted at ``compute()``), so the parts of torchmetrics' contract that
    only see registered states are written here once:

    * ``merge_state(other)`` merges the held samples and the bins' counts as one metric fed both streams would
      hold them (a state dict is refused: it cannot carry the samples);
    * ``persistent(mode)`` decides whether ``state_dict()`` carries anything (default ``False``, as torchmetrics'
      own metrics); with ``True`` it carries one entry, ``<prefix>fastndb_state``, holding the held samples, the
      bins and what the metric was built with, checked when loaded; ``load_state_dict(strict=True)`` of a
      checkpoint without that entry (saved before the metric was added, or while not persistent) loads and leaves
      the metric as it is;
    * ``set_dtype`` never turns integer counts into floats;
    * the informative message of an attribute that is not ready (``nn.Module.__getattr__`` would otherwise
      replace it with a bare "has no attribute" when the property raises ``AttributeError``).
    """

    _not_ready: dict[str, str] = {}
    _integer_states: tuple[str, ...] = ()
    _save_held = False
    _embedded_with: str | None = None  # the extractor's label when the held features were computed

    def __getattr__(self, name: str) -> Any:
        message = type(self)._not_ready.get(name)
        if message is not None:
            raise NotReadyError(message)
        return super().__getattr__(name)

    # ----------------------------------------------------------------- what the subclasses write
    def _config(self) -> dict:
        """What the held state depends on (compared by ``merge_state`` and when a checkpoint is loaded)."""
        raise NotImplementedError

    def _held_state(self) -> dict:
        raise NotImplementedError

    def _load_held_state(self, state: dict) -> None:
        raise NotImplementedError

    def _merge_held(self, other: Any) -> None:
        raise NotImplementedError

    def _has_held(self) -> bool:
        raise NotImplementedError

    # ----------------------------------------------------------------- torchmetrics' contract
    def _check_config(self, other: dict, where: str) -> None:
        mine = self._config()
        differ = [key for key in sorted(set(mine) | set(other)) if mine.get(key) != other.get(key)]
        if differ:
            shown = "; ".join(f"{key}: {other.get(key)!r} there, {mine.get(key)!r} here" for key in differ)
            raise ValueError(f"{where}: the state comes from a {type(self).__name__} built otherwise ({shown}); "
                             f"it would be counted against other settings")

    def merge_state(self, incoming_state: Any) -> None:
        """Take in the state of another metric of the same kind and settings, as if this one had been fed its
        samples too (torchmetrics' ``merge_state``).

        Raises:
            TypeError: a state dict (``metric_state`` cannot carry the held samples: pass the metric itself) or a
                metric of another class.
            ValueError: a metric built with other settings, or whose bins differ from these.
        """
        if isinstance(incoming_state, dict):
            raise TypeError(f"incoming_state: {type(self).__name__} holds samples and bins outside torchmetrics' "
                            f"registered states, which a state dict cannot carry; pass the other metric itself")
        if type(incoming_state) is not type(self):
            raise TypeError(f"incoming_state: expected a {type(self).__name__}, got {type(incoming_state).__name__}")
        self._check_config(incoming_state._config(), "merge_state")
        self._merge_held(incoming_state)
        self._update_count += incoming_state._update_count
        self._computed = None

    def persistent(self, mode: bool = False) -> None:
        """Whether ``state_dict()`` carries this metric's state (see the class docstring). Default ``False``."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode: expected True or False, got {mode!r}")
        super().persistent(mode)
        if "instance_key" in self._persistent:
            self._persistent["instance_key"] = False
        self._save_held = mode

    def state_dict(self, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:  # type: ignore[override]
        out = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        if self._save_held:
            out[prefix + _STATE_KEY] = {"config": self._config(), **self._held_state()}
        return out

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        saved = state_dict.pop(prefix + _STATE_KEY, None)
        if saved is not None:  # checked before torchmetrics sets a registered state of another shape
            self._check_config(saved.get("config", {}), "load_state_dict")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for key in self._integer_states:  # restored as the checkpoint held them (on the CPU after map_location)
            setattr(self, key, getattr(self, key).to(self.device))
        if saved is not None:
            self._embedded_with = self._config().get("feature")  # checked equal to the checkpoint's above
            self._load_held_state(saved)
            if self._has_held():
                # torchmetrics' private update counter: without it, compute() after loading a checkpoint warns that
                # update() was never called. No public API sets it; tests/test_metrics.py checks this still works
                # with the torchmetrics installed (CI installs the newest release).
                self._update_count = max(self._update_count, 1)

    def _apply(self, fn: Any, exclude_state: Any = ()) -> Any:
        """torchmetrics' ``_apply``, with integer states only moved, never cast (``set_dtype(torch.half)`` would
        make counts above 2,048 inexact)."""
        this = super()._apply(fn, exclude_state=(*exclude_state, *self._integer_states))
        for key in self._integer_states:
            if key in exclude_state:
                continue
            this._defaults[key] = this._defaults[key].to(this.device)
            setattr(this, key, getattr(this, key).to(this.device))
        return this

    def _same_network(self, extractor: Any, expected: str | None, remedy: str) -> None:
        """Refuse a batch that ``extractor`` would embed with other weights than the features or bins this metric
        holds were computed with (``expected``: their extractor's label; ``None`` when nothing is held)."""
        label = label_of(extractor)  # one digest of the network per batch
        if expected is not None and expected != label:
            same_features(expected, extractor, f"the state of this {type(self).__name__}", remedy)  # raises
        self._embedded_with = label

    def _ignore_real(self, why: str) -> None:
        """A real batch for a metric whose real side came up front: ignored, with one warning per metric."""
        if not getattr(self, "_warned_real", False):
            warnings.warn(f"{type(self).__name__}: update(imgs, real=True) is ignored: {why}", UserWarning,
                          stacklevel=4)
            self._warned_real = True

    def _forwarded(self, value: Any) -> Any:
        """Record a per-batch value as torchmetrics' ``forward`` does."""
        self._forward_cache = value
        return value


def _batch_name(real: object) -> str:
    """The name of an ``update(imgs, real)`` batch in messages (``real`` checked to be a bool)."""
    if not isinstance(real, bool):
        raise TypeError(f"real: expected True or False, got {real!r}")
    return "imgs (real)" if real else "imgs (fake)"


class NDBMetric(_Metric):
    """NDB (number of statistically different bins) as a ``torchmetrics.Metric``.

    The real side comes one of two ways:

    * **up front** (``real=`` a real tensor, array, iterable of batches or the name of a reference saved with
      :func:`fastndb.save_reference`; or ``bins=`` an already-fitted :class:`~fastndb.NDB`): the bins are fitted
      once on the whole set when the metric is built and never change; ``reset()`` and Lightning's sanity check
      cannot touch them, ``update(imgs, real=True)`` is ignored (with a warning, once), and fake samples become
      ``K`` counts as they arrive: O(K) state whatever the number of samples, a DDP sync of K integers. Under DDP
      every rank passes the same whole set (each fits the same bins; ``compute()`` checks that they agree).
    * **as ``FrechetInceptionDistance`` takes it**: ``update(imgs, real=True)`` with real samples,
      ``update(imgs, real=False)`` with generated ones, ``compute()``. The bins are fitted at ``compute()`` on the
      real samples held (across ranks under DDP). Real samples offered after a fit that the bins have not seen
      (Lightning's sanity check fits on its first batches; the epoch then brings the rest) make the next
      ``compute()`` refit on all of them, with a warning that says so; real batches the metric has seen before (a
      loop that sends the real set every epoch) are recognised by their content and ignored. Because the bins can
      still change, fake samples are held as samples (not counts) until ``reset()``, and counted at
      ``compute()``.

    Args:
        num_bins: number of k-means bins ``K`` (ignored with ``bins``).
        alpha: per-bin significance level (ignored with ``bins``).
        real: the real side up front (see above), fitted with this metric's options.
        bins: an already-fitted :class:`~fastndb.NDB`: its bins and test options are used and never dropped.
        reset_real_features: whether :meth:`reset` also drops the real samples and the bins fitted on them (the
            default, as in ``FrechetInceptionDistance``). With ``False`` they are kept across ``reset()`` and only
            the fake samples start again. Bins from ``real=`` or ``bins=`` are always kept.
        max_real_samples: most real samples held per process (a uniform sample of those passed, chosen by content
            keys with ``seed``); the same cap applies to the fake samples held.
        **kwargs: every option of :class:`~fastndb.NDB` by the same names (``seed``, ``mode``, ``value_range``,
            ``feature``, ``correction``, ...; :data:`fastndb.OPTION_NAMES`), and ``torchmetrics.Metric`` options
            (``sync_on_compute``, ``process_group``, ``distributed_available_fn``, ...). ``feature=`` works as
            ``FrechetInceptionDistance(feature=...)``: a name (``"inception"``, ``"dinov2-vits14"``, ``"digits"``,
            ...), a module or a callable; each batch is embedded at ``update`` on the metric's device and only the
            features are kept.

    Devices follow torchmetrics' convention: the metric's device (``metric.to("cuda")``). Held samples and counts
    live there; a batch on another device is moved there (its ``K`` counts, or the samples, never the other way
    round), so under NCCL every collective sees CUDA tensors once the metric is on the GPU.

    ``compute()`` returns a dict of 0-d tensors on the metric's device: ``ndb`` (int64), ``ndb_ratio``, ``js``
    and ``p_value`` (the overall chi-square test, float64). The full :class:`~fastndb.NDBResult` of the last
    ``compute()`` is :attr:`result`. ``forward(imgs, real=False)`` accumulates like ``update`` and returns the same
    dict for that batch alone against the current bins (``None`` for a real batch or before the bins exist).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> modes = torch.randn(8, 16, generator=g) * 6
        >>> def draw(n, keep=8):
        ...     return modes[torch.randint(keep, (n,), generator=g)] + torch.randn(n, 16, generator=g)
        >>> metric = NDBMetric(num_bins=16, real=draw(4000))  # fitted once, here
        >>> for _ in range(4):
        ...     metric.update(draw(500, keep=4), real=False)  # half the modes dropped: K counts kept
        >>> out = metric.compute()
        >>> sorted(out), bool(out["ndb"] >= 8)
        (['js', 'ndb', 'ndb_ratio', 'p_value'], True)
        >>> metric.reset()  # the bins stay: the next epoch streams fake samples only
        >>> metric.update(draw(2000), real=False)
        >>> bool(metric.compute()["ndb"] <= 4)
        True
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0

    fake_counts: Tensor
    instance_key: Tensor

    _not_ready = {"bins": "bins: not fitted yet; call compute() after update(imgs, real=True)",
                  "result": "result: call compute() first"}
    _integer_states = ("fake_counts", "instance_key")

    def __init__(
        self,
        num_bins: int = 100,
        alpha: float = 0.05,
        *,
        real: object = None,
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
        if real is not None:
            if bins is not None:
                raise ValueError("real, bins: pass one of them (each gives the metric its bins)")
            bins = _reference_ndb(real, num_bins, alpha, options)
            options = {}
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
        self._grown = False  # real samples the owned bins have not seen arrived after the fit
        self._fit_size = 0  # real samples (this rank) the owned bins were fitted on
        self._ranks_checked = False
        self._warned_real = self._warned_cap = False
        self._result: NDBResult | None = None
        self.add_state("fake_counts", torch.zeros(self.num_bins, dtype=torch.int64), dist_reduce_fx="sum",
                       persistent=False)
        # no two fastndb metrics share a MetricCollection compute group: their held samples are not registered
        # states, so a member of a group would never see its own updates
        self.add_state("instance_key", torch.tensor([next(_instances)], dtype=torch.int64),
                       dist_reduce_fx=_keep_local, persistent=False)

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
    def fixed_reference(self) -> bool:
        """Whether the bins came up front (``real=`` or ``bins=``): fitted once, fake samples counted on arrival."""
        return self._passed_bins is not None

    @property
    def buffered_samples(self) -> dict[str, int]:
        """How many real and fake samples are held (both 0 with a fixed reference)."""
        return {"real": len(self._real), "fake": len(self._pending_fake)}

    @property
    def buffered_nbytes(self) -> int:
        """Bytes held by the sample buffers (0 with a fixed reference)."""
        return self._real.nbytes + self._pending_fake.nbytes

    @property
    def local_fake_counts(self) -> Tensor:
        """``(K,)`` this process's own fake counts (not summed over ranks), the held fake samples counted against
        the current bins."""
        counts = self.fake_counts.clone()
        pending = self._pending_fake.samples
        if pending is not None and self.is_fitted:
            counts = counts + self._count_held(pending).to(counts.device)
        return counts

    def _count_held(self, x: Tensor) -> Tensor:
        return count_bins(self.bins.to(self.device), [x.to(self.device)], engine=self._engine, name="imgs (fake)",
                          progress=False)

    def _count(self, x: Tensor, name: str) -> Tensor:
        """Bin counts of ``x`` (on the metric's device), converted as the bins expect."""
        counted = to_float(x, self._convert) if self._passed_bins is None else x
        bins = self.bins.to(self.device)
        return count_bins(bins, [counted.to(self.device)], engine=self._engine, name=name, progress=False)

    def update(self, imgs: Any, real: bool) -> None:  # type: ignore[override]
        """Add a batch of samples ``(N, ...)``.

        Args:
            imgs: samples (tensor on any device, numpy/CuPy array); flattened to ``(N, D)``.
            real: whether they are real samples.

        Raises:
            TypeError: ``real`` is not a bool; ``imgs`` is not an array.
            ValueError: invalid samples, a number of features different from earlier batches or the bins, or a
                value range that cannot be compared with the real samples'.
        """
        self._add(imgs, real)

    def _add(self, imgs: Any, real: bool) -> Tensor | None:
        """:meth:`update`'s work; returns the fake batch as the bins see it (``None`` for a real batch)."""
        name = _batch_name(real)
        x = concatenate(as_batches(imgs, name, check_finite=False, flatten=self._extractor is None))  # one read below
        if real and self.fixed_reference:
            return self._ignore_real("the bins were fitted up front (real= or bins=) and never change")
        if self._extractor is not None:
            x = self._embed(x, name, real)
        self._check_features(x, name)
        if real:
            values = to_float(x, self._convert).to(self.device)
            if self.is_fitted:  # after a fit: batches seen before are re-sends; the rest makes the next compute refit
                new = ~self._real.known(values)
                (num_new,) = host_values(new.sum().view(1))
                if num_new == 0:
                    logger.debug("NDBMetric: %d real samples seen before ignored", x.shape[0])
                    return None
                if num_new < values.shape[0]:
                    values, x = values[new], x[new.to(x.device)]
                self._grown = True
            summary = summarize(x, self._convert, name)
            self._real_values = summary if self._real_values is None else self._real_values.merge(summary)
            self._real.add(values)
            return None
        if self.fixed_reference:
            self.fake_counts += self._count(x, name).to(self.fake_counts.device)
            return x
        summary = summarize(x, self._convert, name)
        if self._real_values is not None:
            check_value_ranges(self._real_values, summary, reference_name="imgs (real)", name=name)
        held = to_float(x, self._convert).to(self.device)
        self._pending_fake.add(held)
        if self._pending_fake.seen > self.max_real_samples and not self._warned_cap:
            warnings.warn(f"NDBMetric: more than max_real_samples={self.max_real_samples} fake samples offered on "
                          f"this process; a uniform sample of that many is counted. Pass real= (or bins=) to count "
                          f"every fake sample in O(K) memory", UserWarning, stacklevel=3)
            self._warned_cap = True
        return held

    def _embed(self, x: Tensor, name: str, real: bool) -> Tensor:
        """Features of a batch on the metric's device; the batch's own range is kept (real) or checked against the
        real samples' (fake), as without an extractor."""
        if self.fixed_reference:
            self._same_network(self._extractor, self.bins.feature, "build the metric again to fit new bins")
        else:
            held = self.is_fitted or len(self._real) > 0 or len(self._pending_fake) > 0
            self._same_network(self._extractor, self._embedded_with if held else None,
                               "call reset() with reset_real_features=True to start again with the new weights")
        reference = self.bins.input_values if self.fixed_reference else self._input_values
        check = None
        if not real and reference is not None:
            check = lambda summary, label: check_value_ranges(reference, summary,  # noqa: E731
                                                               reference_name="imgs (real)", name=label)
        features, summary = embed(x, self._extractor, self.options.value_range, name, check)
        if real:
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

    def forward(self, imgs: Any, real: bool) -> dict[str, Tensor] | None:  # type: ignore[override]
        """:meth:`update`, then the metric of this fake batch alone against the current bins (this process's
        batch, not synced), as torchmetrics' ``forward``; ``None`` for a real batch or before the bins exist."""
        batch = self._add(imgs, real)
        self._update_count += 1
        self._computed = None
        if batch is None or not self.is_fitted or self._grown:
            return self._forwarded(None)
        counts = self._count(batch, "imgs (fake)") if self.fixed_reference else self._count_held(batch)
        return self._forwarded(_ndb_outputs(compare_counts(self.bins, counts, self.test), self.fake_counts.device))

    # ----------------------------------------------------------------- compute
    def compute(self) -> dict[str, Tensor]:
        """NDB of all fake samples so far against the bins: a dict of 0-d tensors (see the class docstring).

        Without a fixed reference, the first call fits the bins on the real samples of every rank (a collective
        call under DDP), and a later call refits them when real samples they have not seen arrived since; the held
        fake samples are counted then and their counts summed over ranks. With a fixed reference the counts are
        torchmetrics' own sync of ``fake_counts``.

        Raises:
            ValueError: no real samples to fit the bins on, or no fake samples; under DDP, ranks whose fixed
                references differ.
        """
        comm = collective_of(self)
        if self.fixed_reference:
            if comm.world_size > 1 and not self._ranks_checked:
                _same_bins_on_every_rank(self.bins, comm, self.device)
                self._ranks_checked = True
            total = self.fake_counts
        else:
            self._fit_if_needed(comm)
            pending = self._pending_fake.samples
            local = (self._count_held(pending) if pending is not None
                     else torch.zeros(self.num_bins, dtype=torch.int64, device=self.device))
            total = comm.all_reduce_sum(local.to(self.fake_counts.device)) if comm.world_size > 1 else local
        try:
            result = compare_counts(self.bins, total, self.test)  # its one host read also sees an empty total
        except ValueError as err:
            if "fake_counts" in str(err):
                raise ValueError("compute: no fake samples yet; call update(imgs, real=False) first") from None
            raise
        self._result = result
        return _ndb_outputs(result, self.fake_counts.device)

    def _fit_if_needed(self, comm: Collective) -> None:
        """Fit the owned bins on the real samples held on every rank: the first time, and again when real samples
        the bins have not seen arrived since (on any rank)."""
        refit = self._grown or not self.is_fitted
        if comm.world_size > 1:
            (refit,) = host_values(comm.all_reduce_sum(torch.tensor([int(refit)], device=self.device)) > 0)
        if not refit:
            return
        local = _agreed_shard(self._real.samples, comm, self.device)
        if local is None:
            raise ValueError("compute: no real samples to fit the bins on; call update(imgs, real=True) first")
        if self.is_fitted:
            warnings.warn(f"NDBMetric: {len(self._real) - self._fit_size} real samples the bins had not seen arrived "
                          f"after they were fitted on {self._fit_size}; refitting on all {len(self._real)} held on "
                          f"this process (earlier compute() results used the smaller set). Pass real= to fit once "
                          f"on the whole set", UserWarning, stacklevel=3)
        logger.info("NDBMetric: fitting %d bins on %d of %d real samples held on this rank",
                    self.num_bins, len(self._real), self._real.seen)
        real_values = merge_summaries(self._real_values, comm, self.device)
        try:
            bins = fit_bins(local.to(self.device), self._fit_options, comm=comm, real_values=real_values,
                            progress=self.progress)
        except ValueError as err:
            if self._real.seen <= len(self._real):
                raise
            raise ValueError(f"compute: max_real_samples={self.max_real_samples} keeps {len(self._real)} of the "
                             f"{self._real.seen} real samples offered on this process, and then {err}; raise "
                             f"max_real_samples") from None
        if self._extractor is not None:
            bins = replace(bins, feature=label_of(self._extractor),
                           input_values=merge_summaries(self._input_values, comm, self.device))
        self._bins, self._grown, self._fit_size = bins, False, len(self._real)

    @property
    def result(self) -> NDBResult:
        """The full :class:`~fastndb.NDBResult` of the last ``compute()``."""
        if self._result is None:
            raise NotReadyError(self._not_ready["result"])
        return self._result

    # ------------------------------------------------------------------- state
    def reset(self) -> None:
        """Zero the fake counts and drop the held fake samples; with ``reset_real_features`` also the real samples
        and the bins fitted on them (never bins given up front)."""
        super().reset()
        self._pending_fake.clear()
        self._result = None
        self._warned_cap = False
        if self.reset_real_features and not self.fixed_reference:
            self._real.clear()
            self._real_values = self._input_values = None
            self._bins, self._grown, self._fit_size = None, False, 0

    def _config(self) -> dict:
        options = {f.name: getattr(self.options, f.name) for f in fields(self.options) if f.name != "feature"}
        options["value_range"] = None if options["value_range"] is None else list(options["value_range"])
        fixed = None if self._passed_bins is None else list(content_fingerprint(self._passed_bins.centroids)[:2])
        return {"metric": "NDBMetric", **options, "feature": label_of(self._extractor), "fixed_bins": fixed}

    def _has_held(self) -> bool:
        return self.is_fitted or len(self._real) > 0 or len(self._pending_fake) > 0

    def _held_state(self) -> dict:
        """Owned bins, held samples and value ranges (plain tensors and numbers)."""
        owned = None if self.fixed_reference or self._bins is None else self._bins.to_dict()
        return {
            "bins": owned,
            "real": self._real.state(),
            "pending_fake": self._pending_fake.state(),
            "real_values": None if self._real_values is None else self._real_values.to_dict(),
            "input_values": None if self._input_values is None else self._input_values.to_dict(),
            "grown": self._grown,
            "fit_size": self._fit_size,
        }

    def _load_held_state(self, state: dict) -> None:
        """Restore what :meth:`_held_state` saved (tensors go to the metric's device; buffers are cut to this
        metric's caps, keeping the smallest keys, as a metric with that cap would have kept)."""
        if not self.fixed_reference:
            bins = state["bins"]
            source = "load_state_dict: the checkpoint's bins"
            self._bins = None if bins is None else FittedBins.from_dict(bins, source).to(self.device)
        self._real.load_state(state["real"], self.device)
        self._pending_fake.load_state(state["pending_fake"], self.device)
        self._real_values = ValueSummary.from_dict(state.get("real_values"))
        self._input_values = ValueSummary.from_dict(state.get("input_values"))
        self._grown, self._fit_size = bool(state.get("grown", False)), int(state.get("fit_size", 0))

    def _merge_held(self, other: NDBMetric) -> None:
        if self.fixed_reference:
            self.fake_counts += other.fake_counts.to(self.fake_counts.device)
            return
        if len(other._real) and self.is_fitted:
            self._grown = True  # the other metric's real samples join: the next compute() refits on both
        self._real.merge(other._real)
        self._pending_fake.merge(other._pending_fake)
        for name in ("_real_values", "_input_values"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else mine if theirs is None else mine.merge(theirs))
        if self._bins is None and other._bins is not None and not len(self._real):
            self._bins, self._fit_size = other._bins, other._fit_size

    def plot(self, val: Any = None, ax: Any = None) -> tuple[Any, Any]:
        """Plot the bins of the last ``compute()`` (``val=None``; computed first if needed) or ``ndb_ratio`` over a
        list of outputs.

        Args:
            val: ``None`` for the bin proportions of :attr:`result`, or a list of ``compute()`` outputs (e.g.
                one per epoch) for their ``ndb_ratio`` curve.
            ax: matplotlib axes to draw on.

        Returns:
            ``(fig, ax)``, like torchmetrics' own ``plot``.
        """
        from fastndb import plot

        if val is None or isinstance(val, dict):
            if self._result is None:
                self.compute()
            return plot.bin_proportions(self.result, ax=ax)
        return plot.metric_history(list(val), key="ndb_ratio", ax=ax)


def _ndb_outputs(result: NDBResult, device: torch.device) -> dict[str, Tensor]:
    return {
        "ndb": torch.tensor(result.ndb, dtype=torch.int64, device=device),
        "ndb_ratio": torch.tensor(result.ndb_ratio, dtype=torch.float64, device=device),
        "js": torch.tensor(result.js, dtype=torch.float64, device=device),
        "p_value": torch.tensor(result.p_value, dtype=torch.float64, device=device),
    }


def _reference_ndb(real: object, num_bins: int, alpha: float, options: dict) -> NDB:
    """The fitted :class:`~fastndb.NDB` of ``NDBMetric(real=...)``: a named reference's bins, or bins fitted once on
    the whole real set given (on this process alone: under DDP each rank passes and fits the same set)."""
    from fastndb._core.references import Reference, load_reference

    if isinstance(real, str):
        real = load_reference(real)
    if isinstance(real, Reference):
        feature = options.pop("feature", None)
        return real.ndb(feature, alpha=alpha, **options)
    return NDB(num_bins, alpha, **options).fit(real, distributed=False)


def _same_bins_on_every_rank(bins: FittedBins, comm: Collective, device: torch.device) -> None:
    """Refuse fixed references that differ between ranks (counts summed over other bins would be meaningless)."""
    mine = torch.tensor([content_fingerprint(bins.centroids)[:2]], dtype=torch.int64, device=device)
    everyone, _ = comm.all_gather_cat(mine)
    if not bool((everyone == mine).all()):
        raise ValueError("real: the ranks' fixed references differ (their bins' centroids are not the same); pass "
                         "the same whole real set on every rank, or build the metric with update(imgs, real=True) "
                         "to fit across ranks")


class BirthdayMetric(_Metric):
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
    :class:`~fastndb.BirthdayResult` (indices refer to :attr:`samples`). ``forward(samples)`` accumulates like
    ``update`` and returns the same dict for that batch alone (``None`` for fewer than 2 samples).

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

    def _prepare(self, samples: Any) -> Tensor:
        """A batch as the test sees it: ``(N, D)`` on the metric's device (embedded with ``feature``)."""
        if self.feature is None:
            x = to_float(concatenate(as_batches(samples, "samples")), self.value_range).to(self.device)
        else:
            raw = concatenate(as_batches(samples, "samples", check_finite=False, flatten=False))
            self._same_network(self.feature, self._embedded_with if len(self._buffer) else None,
                               "call reset() to start again with the new weights")
            x = embed(raw, self.feature, self.value_range, "samples")[0].to(self.device)
        held = self._buffer.samples
        if held is not None and held.shape[1] != x.shape[1]:
            raise ValueError(f"samples: expected {held.shape[1]} features per sample like earlier ones, "
                             f"got {x.shape[1]}")
        return x

    def update(self, samples: Any) -> None:  # type: ignore[override]
        """Offer a batch of generated samples ``(N, ...)`` (any device; flattened)."""
        self._buffer.add(self._prepare(samples))

    def forward(self, samples: Any) -> dict[str, Tensor] | None:  # type: ignore[override]
        """:meth:`update`, then the test on this batch alone (this process's, not synced), as torchmetrics'
        ``forward``; ``None`` for fewer than 2 samples."""
        x = self._prepare(samples)
        self._buffer.add(x)
        self._update_count += 1
        self._computed = None
        if x.shape[0] < 2:
            return self._forwarded(None)
        return self._forwarded(self._test(x)[1])

    def _test(self, x: Tensor, comm: Collective | None = None) -> tuple[BirthdayResult, dict[str, Tensor]]:
        """The test of ``x``; with ``comm`` (every rank holding the same ``x``) the pair search is split."""
        from fastndb._core.birthday import _prepare, birthday_prepared

        num_pairs = min(self.num_pairs, x.shape[0] * (x.shape[0] - 1) // 2)
        prepared, unit = _prepare(x, "samples", self.metric, None, None)
        result = birthday_prepared(prepared, unit, num_pairs=num_pairs, metric=self.metric, threshold=self.threshold,
                                   confidence=0.95, block_rows=None, progress=None, comm=comm)
        device = x.device
        out = {"closest_distance": result.distances[0].to(torch.float64)}
        if result.num_duplicates is not None:
            out["num_duplicates"] = torch.tensor(float(result.num_duplicates), dtype=torch.float64, device=device)
            out["duplicate_rate"] = torch.tensor(result.duplicate_rate, dtype=torch.float64, device=device)
            out["support_estimate"] = torch.tensor(result.support_estimate, dtype=torch.float64, device=device)
        return result, out

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
        result, out = self._test(local, comm if comm.world_size > 1 else None)
        self._samples, self._result = local, result
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

    def _config(self) -> dict:
        return {"metric": "BirthdayMetric", "feature": label_of(self.feature), "seed": self.seed,
                "value_range": None if self.value_range is None else list(self.value_range)}

    def _has_held(self) -> bool:
        return len(self._buffer) > 0

    def _held_state(self) -> dict:
        return {"buffer": self._buffer.state()}

    def _load_held_state(self, state: dict) -> None:
        self._buffer.load_state(state["buffer"], self.device)

    def _merge_held(self, other: BirthdayMetric) -> None:
        self._buffer.merge(other._buffer)

    def plot(self, val: Any = None, ax: Any = None, *, image_shape: tuple[int, ...] | None = None) -> tuple[Any, Any]:
        """The closest pairs of the last ``compute()`` side by side (computed first if needed; ``val`` is
        ignored); ``image_shape`` ``(C, H, W)`` or ``(H, W)`` shows flat samples as images. Returns ``(fig, ax)``."""
        from fastndb import plot

        if self._result is None:
            self.compute()
        return plot.birthday_pairs(self.samples, self.result, ax=ax, image_shape=image_shape)


class PRDCMetric(_Metric):
    """Precision, recall, density and coverage (:func:`fastndb.prdc`) as a ``torchmetrics.Metric``.

    Used like :class:`NDBMetric`: ``update(imgs, real=True)``, ``update(imgs, real=False)``, ``compute()``; or with
    the real side up front, ``PRDCMetric(real=...)``, kept whatever ``reset()`` does (``update(imgs, real=True)``
    is then ignored, with a warning once). The metrics need the samples themselves (k-NN radii), so the state is
    samples, not counts: at most ``max_samples`` real and ``max_samples`` fake samples per process, each a uniform
    sample of those offered, chosen by content keys (the same whatever the order or batching). After a
    ``compute()``, real samples seen before (a loop that sends the real set every epoch with
    ``reset_real_features=False``) are recognised by their content and not added again. ``compute()`` gathers the
    kept samples of every rank under DDP and keeps the ``max_samples`` with the smallest keys of the union, as one
    process fed the union keeps (duplicates offered on two ranks are the one exception: each rank numbers its own
    copies), then computes on them.

    Memory per process: ``2 x max_samples x d`` values (``d`` the features per sample, after ``feature=``), plus
    16 bytes per distinct sample offered; at ``compute()`` the union, ``world_size x 2 x max_samples x d``, once,
    and the bounded working memory of :func:`fastndb.prdc`.

    Args:
        nearest_k: ``k`` of the k-NN radii.
        real: the real samples up front (tensor, array or iterable of batches), never dropped by ``reset()``.
        max_samples: most samples of each set kept (per process, and after the union).
        inclusive: ``<=`` instead of ``<`` (see :func:`fastndb.prdc`).
        reset_real_features: whether :meth:`reset` also drops the real samples (default, as FID).
        feature: embed each batch at ``update`` (as :class:`NDBMetric`); only features are kept.
        value_range: the value-range convention's range for float samples.
        seed: seed of the sample choice.
        **kwargs: ``torchmetrics.Metric`` options.

    ``compute()`` returns 0-d float64 tensors ``precision``, ``recall``, ``density``, ``coverage``; the full
    :class:`~fastndb.PRDCResult` is :attr:`result`. ``forward(imgs, real=False)`` accumulates like ``update`` and
    returns the four for that fake batch against the real samples held (``None`` for a real batch, or when too few
    samples are held).

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
        real: object = None,
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
        self._real_closed = False  # a compute() happened: real samples seen before are re-sends
        self._fixed_real = False
        self._warned_real = False
        if real is not None:
            for batch in as_batches(real, "real", check_finite=False, flatten=self.feature is None).iterator:
                self._add(batch, True)
            self._fixed_real = True

    def update(self, imgs: Any, real: bool) -> None:  # type: ignore[override]
        """Offer a batch of real or fake samples ``(N, ...)`` (any device; embedded first with ``feature``).

        Raises:
            TypeError: ``real`` is not a bool; ``imgs`` is not an array.
            ValueError: invalid samples, another number of features than earlier batches, a value range that
                cannot be compared with the real samples'.
        """
        self._add(imgs, real)

    def _add(self, imgs: Any, real: bool) -> Tensor | None:
        """:meth:`update`'s work; returns the batch as kept (``None`` when nothing was added)."""
        name = _batch_name(real)
        if real and self._fixed_real:
            return self._ignore_real("the real samples were given up front (real=)")
        raw = concatenate(as_batches(imgs, name, check_finite=False, flatten=self.feature is None))
        reference = None if real else self._values[True]
        check = None if reference is None else (
            lambda summary, label: check_value_ranges(reference, summary, reference_name="imgs (real)", name=label))
        if self.feature is not None:
            held = len(self._kept[True]) > 0 or len(self._kept[False]) > 0
            self._same_network(self.feature, self._embedded_with if held else None,
                               "build the metric again (real samples given up front)" if self._fixed_real else
                               "call reset() with reset_real_features=True to start again with the new weights")
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
        x = x.to(self.device)
        if real and self._real_closed:
            new = ~self._kept[True].known(x)
            (num_new,) = host_values(new.sum().view(1))
            if num_new == 0:
                return None
            x = x[new]
        previous = self._values[real]
        self._values[real] = summary if previous is None else previous.merge(summary)
        self._kept[real].add(x)
        return x

    def forward(self, imgs: Any, real: bool) -> dict[str, Tensor] | None:  # type: ignore[override]
        """:meth:`update`, then the four metrics of this fake batch against the real samples held on this process
        (not synced), as torchmetrics' ``forward``; ``None`` for a real batch or too few samples."""
        from fastndb._core.coverage import prdc

        return self._forward_against_held(
            imgs, real, lambda held, batch: min(held.shape[0], batch.shape[0]) > self.nearest_k,
            lambda held, batch: _prdc_outputs(prdc(held, batch, nearest_k=self.nearest_k, inclusive=self.inclusive,
                                                   subsets=0), self.device))

    def _forward_against_held(self, imgs: Any, real: bool, enough: Any, outputs: Any) -> dict[str, Tensor] | None:
        """``forward``'s work: accumulate the batch; for a fake batch, ``outputs(held real, batch)`` where
        ``enough(held real, batch)``, else ``None``."""
        batch = self._add(imgs, real)
        self._update_count += 1
        self._computed = None
        held = self._kept[True].samples
        if real or batch is None or held is None or not enough(held, batch):
            return self._forwarded(None)
        return self._forwarded(outputs(held, batch))

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
        # in key order, whatever the ranks' order: the seeded choices made on the rows (the intervals' halvings, the
        # mode counts' subsets) are then those of one process fed the union
        return local.index_select(0, torch.argsort(keys)[: self.max_samples])

    def compute(self) -> dict[str, Tensor]:
        """The four metrics on the kept samples of all ranks (see the class docstring).

        Raises:
            ValueError: no real or no fake samples, or too few for ``nearest_k``.
        """
        comm = collective_of(self)
        real, fake = self._union(True, comm), self._union(False, comm)
        if real is None or fake is None:
            missing = "real" if real is None else "fake"
            raise ValueError(f"compute: no {missing} samples yet; call update(imgs, real={missing == 'real'}) first")
        result = self._score(real, fake, comm)
        self._result = result
        self._real_closed = True
        return self._outputs(result)

    def _score(self, real: Tensor, fake: Tensor, comm: Collective) -> Any:
        """The result of the union (every rank holds the same ``real`` and ``fake``; the searches are split between
        the ranks)."""
        from fastndb._core.coverage import INTERVAL_GROUPS, prdc_prepared, prepare_pair

        x, y, unit = prepare_pair(real, fake, feature=None, value_range=None, num_samples=None, seed=0)
        return prdc_prepared(x, y, unit, nearest_k=self.nearest_k, inclusive=self.inclusive, seed=0, block_rows=None,
                             progress=None, subsets=INTERVAL_GROUPS, confidence=0.95,
                             comm=comm if comm.world_size > 1 else None)

    def _outputs(self, result: Any) -> dict[str, Tensor]:
        return _prdc_outputs(result, self.device)

    @property
    def result(self) -> Any:
        """The full result of the last ``compute()``: a :class:`~fastndb.PRDCResult` (a
        :class:`~fastndb.ModesResult` for :class:`ModesMetric`)."""
        if self._result is None:
            raise NotReadyError(self._not_ready["result"])
        return self._result

    def reset(self) -> None:
        """Drop the fake samples; with ``reset_real_features`` the real ones too (never those given as ``real=``)."""
        super().reset()
        self._kept[False].clear()
        self._values[False] = None
        self._result = None
        if self.reset_real_features and not self._fixed_real:
            self._kept[True].clear()
            self._values[True] = None
            self._real_closed = False

    def _config(self) -> dict:
        return {"metric": "PRDCMetric", "feature": label_of(self.feature), "seed": self.seed,
                "value_range": None if self.value_range is None else list(self.value_range),
                "fixed_real": self._fixed_real}

    def _has_held(self) -> bool:
        return len(self._kept[True]) > 0 or len(self._kept[False]) > 0

    def _held_state(self) -> dict:
        """Kept samples and value ranges."""
        return {"real": self._kept[True].state(), "fake": self._kept[False].state(), "closed": self._real_closed,
                "values": {str(k): None if v is None else v.to_dict() for k, v in self._values.items()}}

    def _load_held_state(self, state: dict) -> None:
        self._kept[True].load_state(state["real"], self.device)
        self._kept[False].load_state(state["fake"], self.device)
        self._real_closed = bool(state.get("closed", False))
        self._values = {True: ValueSummary.from_dict(state["values"]["True"]),
                        False: ValueSummary.from_dict(state["values"]["False"])}

    def _merge_held(self, other: PRDCMetric) -> None:
        for side in (True, False):
            if side and self._fixed_real:
                continue  # the same real set on both (the configs agree): not taken twice
            self._kept[side].merge(other._kept[side])
            mine, theirs = self._values[side], other._values[side]
            self._values[side] = theirs if mine is None else mine if theirs is None else mine.merge(theirs)

    def plot(self, val: Any = None, ax: Any = None) -> tuple[Any, Any]:
        """The four metrics of the last ``compute()`` with their intervals (``val=None``; computed first if
        needed), or one curve per metric over a list of ``compute()`` outputs. Returns ``(fig, ax)``."""
        from fastndb import plot

        if val is None or isinstance(val, dict):
            if self._result is None:
                self.compute()
            return plot.prdc_scores(self.result, ax=ax)
        values = list(val)
        fig, ax = plot.metric_history(values, key="precision", ax=ax)
        for key in ("recall", "density", "coverage"):
            plot.metric_history(values, key=key, ax=ax)
        ax.set_ylabel("value")
        ax.legend(["precision", "recall", "density", "coverage"])
        return fig, ax


def _prdc_outputs(result: Any, device: torch.device) -> dict[str, Tensor]:
    return {key: torch.tensor(value, dtype=torch.float64, device=device) for key, value in result.scores().items()}


class ModesMetric(PRDCMetric):
    """Effective mode counts and the missing modes (:func:`fastndb.modes`) as a ``torchmetrics.Metric``.

    Held like :class:`PRDCMetric` (samples, at most ``max_samples`` per side, chosen by content keys; the real side
    up front with ``real=``, or sent with ``update(imgs, real=True)``); ``compute()`` gathers the union of every rank
    in key order, so the numbers under DDP are those of one process fed the union.

    Args:
        bandwidth: :math:`\\sigma` of the kernel (``None``: the plateau rule on the real samples).
        real, max_samples, reset_real_features, feature, value_range, seed: as :class:`PRDCMetric`.
        top: missing and invented modes kept in :attr:`result`.
        **kwargs: ``torchmetrics.Metric`` options.

    ``compute()`` returns 0-d float64 tensors ``real_count``, ``fake_count``, ``ratio``, ``ratio_low``,
    ``ratio_high``, ``vendi_real``, ``vendi_fake``; the full :class:`~fastndb.ModesResult` is :attr:`result`.
    ``forward(imgs, real=False)`` accumulates and returns the counts of that fake batch against the real samples
    held (``None`` for a real batch).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = torch.randn(8, 4, generator=g) * 50
        >>> metric = ModesMetric(bandwidth=20.0)
        >>> metric.update(centres[torch.arange(800) % 8] + torch.randn(800, 4, generator=g), real=True)
        >>> metric.update(centres[torch.arange(800) % 2] + torch.randn(800, 4, generator=g), real=False)
        >>> out = metric.compute()
        >>> round(float(out["real_count"])), round(float(out["fake_count"]))
        (8, 2)
    """

    higher_is_better = True

    def __init__(
        self,
        bandwidth: float | None = None,
        *,
        real: object = None,
        max_samples: int = 10_000,
        reset_real_features: bool = True,
        feature: object = None,
        value_range: tuple[float, float] | None = None,
        seed: int = 0,
        top: int = 5,
        **kwargs: Any,
    ) -> None:
        from fastndb._core.modes import check_bandwidth

        self.bandwidth = check_bandwidth(bandwidth)
        self.top = check_int(top, "top", minimum=0)
        super().__init__(1, real=real, max_samples=max_samples, reset_real_features=reset_real_features,
                         feature=feature, value_range=value_range, seed=seed, **kwargs)

    def _modes(self, real: Tensor, fake: Tensor, comm: Collective | None = None) -> Any:
        """:func:`fastndb.modes` of the held samples; with ``comm`` (every rank holding the same union) the RKE
        counts' tiles are split between the ranks."""
        from fastndb._core.coverage import prepare_pair
        from fastndb._core.modes import NUM_FEATURES, mode_analysis

        x, y, unit = prepare_pair(real, fake, feature=None, value_range=None, num_samples=None, seed=self.seed)
        return mode_analysis(x, y, bandwidth=self.bandwidth, confidence=0.95, vendi_samples=None,
                             num_features=NUM_FEATURES, top=self.top, examples=8, seed=self.seed, unit=unit,
                             block_rows=None, progress=False, comm=comm)

    def forward(self, imgs: Any, real: bool) -> dict[str, Tensor] | None:  # type: ignore[override]
        """:meth:`update`, then the counts of this fake batch against the real samples held on this process (not
        synced); ``None`` for a real batch or fewer than 2 samples on a side."""
        return self._forward_against_held(imgs, real, lambda held, batch: min(held.shape[0], batch.shape[0]) >= 2,
                                          lambda held, batch: _modes_outputs(self._modes(held, batch), self.device))

    def _score(self, real: Tensor, fake: Tensor, comm: Collective) -> Any:
        return self._modes(real, fake, comm if comm.world_size > 1 else None)

    def _outputs(self, result: Any) -> dict[str, Tensor]:
        return _modes_outputs(result, self.device)

    def _config(self) -> dict:
        return {**super()._config(), "metric": "ModesMetric", "bandwidth": self.bandwidth}

    def plot(self, val: Any = None, ax: Any = None) -> tuple[Any, Any]:
        """The count curves of the last ``compute()`` (``val=None``; computed first if needed), or the real and
        fake counts over a list of ``compute()`` outputs. Returns ``(fig, ax)``."""
        from fastndb import plot

        if val is None or isinstance(val, dict):
            if self._result is None:
                self.compute()
            return plot.mode_curves(self.result, ax=ax)
        values = list(val)
        fig, ax = plot.metric_history(values, key="real_count", ax=ax)
        plot.metric_history(values, key="fake_count", ax=ax)
        ax.set_ylabel("effective modes (RKE)")
        ax.legend(["real", "fake"])
        return fig, ax


def _modes_outputs(result: Any, device: torch.device) -> dict[str, Tensor]:
    values = {"real_count": result.real.count, "fake_count": result.fake.count, "ratio": result.ratio,
              "ratio_low": result.ratio_low, "ratio_high": result.ratio_high, "vendi_real": result.vendi_real,
              "vendi_fake": result.vendi_fake}
    return {key: torch.tensor(value, dtype=torch.float64, device=device) for key, value in values.items()}


class MemorizationMetric(PRDCMetric):
    """Copies of the training data (:func:`fastndb.memorization`) as a ``torchmetrics.Metric``.

    The training samples are the real side: ``update(imgs, real=True)`` (or ``real=`` up front), the generated
    samples ``update(imgs, real=False)``; the held-out samples that calibrate the copy flags come up front with
    ``test=`` (the same on every rank; without them the training samples calibrate themselves, leave-one-out, and
    there is no C_T). Held like :class:`PRDCMetric` (at most ``max_samples`` per side, chosen by content keys);
    ``compute()`` gathers the union of every rank in key order and splits the neighbour searches between the ranks,
    so the numbers under DDP are those of one process fed the union.

    Args:
        test: held-out real samples (tensor, array or iterable of batches), embedded with ``feature`` at once.
        alpha: the copy flags' false-alarm rate on samples that are no copies (default 0.01).
        cells: k-means cells of C_T (default 3).
        real, max_samples, reset_real_features, feature, value_range, seed: as :class:`PRDCMetric`.
        **kwargs: ``torchmetrics.Metric`` options.

    ``compute()`` returns 0-d float64 tensors ``copy_share``, ``copy_share_low``, ``copy_share_high``,
    ``flagged_share``, ``chance_level``, ``authpct``, ``ct`` (NaN without a test set); the full
    :class:`~fastndb.MemorizationResult` is :attr:`result` (its per-sample tensors follow the held samples, in key
    order, not the order offered). ``forward(imgs, real=False)`` accumulates and returns
    the numbers of that fake batch against the training samples held (``None`` for a training batch).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> train = torch.randn(1000, 8, generator=g)
        >>> metric = MemorizationMetric(real=train, test=torch.randn(500, 8, generator=g))
        >>> metric.update(torch.cat([torch.randn(450, 8, generator=g), train[:50]]), real=False)  # 10% copies
        >>> out = metric.compute()
        >>> bool(out["copy_share_low"] > 0.05), int(metric.result.copy.sum()) >= 50
        (True, True)
    """

    higher_is_better = False

    def __init__(
        self,
        *,
        test: object = None,
        alpha: float | None = None,
        cells: int | None = None,
        real: object = None,
        max_samples: int = 10_000,
        reset_real_features: bool = True,
        feature: object = None,
        value_range: tuple[float, float] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        from fastndb._core.checks import check_open_unit
        from fastndb._core.memorization import COPY_ALPHA, CT_CELLS

        self.alpha = check_open_unit(COPY_ALPHA if alpha is None else alpha, "alpha")
        self.cells = check_int(CT_CELLS if cells is None else cells, "cells", minimum=1)
        super().__init__(1, real=real, max_samples=max_samples, reset_real_features=reset_real_features,
                         feature=feature, value_range=value_range, seed=seed, **kwargs)
        self._test: Tensor | None = None
        if test is not None:
            raw = concatenate(as_batches(test, "test", check_finite=False, flatten=self.feature is None))
            if self.feature is not None:
                x, _ = embed(raw, self.feature, self.value_range, "test")
            else:
                summarize(raw, self.value_range, "test")
                x = to_float(raw, self.value_range)
            self._test = x
        # the held-out samples enter the settings by content: states built on other test sets do not merge
        self._test_key = None if self._test is None else list(content_fingerprint(self._test)[:2])

    def _memorization(self, train: Tensor, fake: Tensor, comm: Collective | None = None) -> Any:
        """:func:`fastndb.memorization` of the held samples; with ``comm`` (every rank holding the same union) the
        searches are split between the ranks."""
        from fastndb._core.coverage import prepare_sets
        from fastndb._core.memorization import memorization_prepared

        sets = [(train, "train"), (fake, "fake")] + ([] if self._test is None else [(self._test.to(train.device),
                                                                                       "test")])
        xs, unit = prepare_sets(sets, feature=None, value_range=None, num_samples=None, seed=self.seed)
        return memorization_prepared(xs[0], xs[1], xs[2] if len(xs) > 2 else None, unit, alpha=self.alpha,
                                     confidence=0.95, cells=self.cells, seed=self.seed, block_rows=None,
                                     progress=False, comm=comm)

    def forward(self, imgs: Any, real: bool) -> dict[str, Tensor] | None:  # type: ignore[override]
        """:meth:`update`, then the numbers of this fake batch against the training samples held on this process
        (not synced); ``None`` for a training batch, fewer than 3 training samples, or too few calibrating samples
        for ``alpha`` (``compute()`` says which)."""
        def enough(held: Tensor, batch: Tensor) -> bool:  # p-values that can reach alpha, a nearest and a second
            calibration = held.shape[0] if self._test is None else self._test.shape[0]
            return held.shape[0] >= 3 and self.alpha * (calibration + 1) >= 1

        return self._forward_against_held(
            imgs, real, enough,
            lambda held, batch: _memorization_outputs(self._memorization(held, batch), self.device))

    def _score(self, real: Tensor, fake: Tensor, comm: Collective) -> Any:
        return self._memorization(real, fake, comm if comm.world_size > 1 else None)

    def _outputs(self, result: Any) -> dict[str, Tensor]:
        return _memorization_outputs(result, self.device)

    def _config(self) -> dict:
        return {**super()._config(), "metric": "MemorizationMetric", "alpha": self.alpha, "cells": self.cells,
                "test": self._test_key}

    def plot(self, val: Any = None, ax: Any = None) -> tuple[Any, Any]:
        """The copy share over a list of ``compute()`` outputs (or the last one). Returns ``(fig, ax)``."""
        from fastndb import plot

        if val is None:
            if self._result is None:
                self.compute()
            val = [self._outputs(self.result)]
        values = [val] if isinstance(val, dict) else list(val)
        fig, ax = plot.metric_history(values, key="copy_share", ax=ax)
        ax.set_ylabel("share of copies")
        return fig, ax


def _memorization_outputs(result: Any, device: torch.device) -> dict[str, Tensor]:
    values = {"copy_share": result.copy_share, "copy_share_low": result.copy_share_interval[0],
              "copy_share_high": result.copy_share_interval[1], "flagged_share": result.flagged_share,
              "chance_level": result.chance_level, "authpct": result.authpct,
              "ct": float("nan") if result.ct is None else result.ct}
    return {key: torch.tensor(value, dtype=torch.float64, device=device) for key, value in values.items()}
