"""Every bad input gives a ValueError/TypeError that names the argument, what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastndb
from fastndb import NDB, NotFittedError

GOOD = np.random.default_rng(0).normal(size=(600, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"num_bins": 1}, ValueError, r"num_bins: expected an integer >= 2, got 1"),
        ({"num_bins": 10.0}, TypeError, r"num_bins: expected an integer, got float 10.0"),
        ({"num_bins": "10"}, TypeError, r"num_bins: expected an integer, got str '10'"),
        ({"num_bins": True}, TypeError, r"num_bins: expected an integer, got bool True"),
        ({"alpha": 0}, ValueError, r"alpha: expected a number in \(0, 1\), got 0"),
        ({"alpha": 1.0}, ValueError, r"alpha: expected a number in \(0, 1\), got 1.0"),
        ({"alpha": "0.05"}, ValueError, r"alpha: expected a number in \(0, 1\), got '0.05'"),
        ({"mode": "paper"}, ValueError, r"mode: expected one of \('holdout', 'original'\), got 'paper'"),
        ({"holdout_fraction": 1.5}, ValueError, r"holdout_fraction: expected a number in \(0, 1\), got 1.5"),
        ({"correction": "bonferroni"}, ValueError, r"correction: expected one of \(None, 'holm', 'bh'\), got 'bonferroni'"),
        ({"z_threshold": -1}, ValueError, r"z_threshold: expected a number > 0 or None, got -1"),
        ({"z_threshold": 2, "correction": "holm"}, ValueError, r"z_threshold=2 and correction='holm' exclude each other"),
        ({"max_dims": 0}, ValueError, r"max_dims: expected an integer >= 1, got 0"),
        ({"backend": "gpu"}, ValueError, r"backend: expected one of \('auto', 'torch', 'faiss', 'cuml'\), got 'gpu'"),
        ({"seed": 1.5}, TypeError, r"seed: expected an integer, got float 1.5"),
    ],
)
def test_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        NDB(**{"num_bins": 10, **kwargs})
    if "num_bins" not in kwargs:
        with pytest.raises(error, match=message):
            fastndb.score(GOOD, GOOD, num_bins=10, **kwargs)


def test_numpy_integers_are_accepted_as_integers():
    assert NDB(np.int64(10), seed=np.int32(3)).num_bins == 10


@pytest.mark.parametrize(
    "real,error,message",
    [
        (np.zeros(10, np.float32), ValueError, r"real: expected samples of shape \(N, D\) or \(N, C, H, W\), got a 1-D tensor of shape \(10,\)"),
        (np.zeros((0, 4), np.float32), ValueError, r"real: expected at least one sample, got shape \(0, 4\)"),
        (np.zeros((10, 0), np.float32), ValueError, r"real: expected at least one feature per sample, got shape \(10, 0\)"),
        (np.full((300, 4), np.nan, np.float32), ValueError, r"real: expected finite values, got 1200 NaN/Inf value\(s\) \(first in sample 0\)"),
        ("images/", TypeError, r"real: expected a torch.Tensor, a numpy array, a CuPy/DLPack array, or an iterable of such batches; got str 'images/'"),
        (42, TypeError, r"real: expected a torch.Tensor, .*; got builtins.int"),
        ([[1.0, 2.0]], TypeError, r"real: expected an iterable of arrays \(or of \(x, y\) tuples\), got an iterable of builtins.list"),
        ([], ValueError, r"real: expected at least one batch, the iterable yielded none"),
        ({"x": GOOD}, TypeError, r"real: expected .*; got builtins.dict"),
        (np.array([["a", "b"]]), TypeError, r"real: expected a numeric array, got a numpy array of dtype <U1"),
        (np.ones((300, 4), bool), TypeError, r"real: expected real floating-point or integer samples, got dtype torch.bool"),
        (torch.ones(300, 4, dtype=torch.complex64), TypeError, r"real: expected real floating-point or integer samples, got dtype torch.complex64"),
    ],
)
def test_bad_real_samples(real, error, message):
    with pytest.raises(error, match=message):
        NDB(10).fit(real)


def test_inf_is_reported_with_its_sample():
    x = GOOD.copy()
    x[17, 2] = np.inf
    with pytest.raises(ValueError, match=r"expected finite values, got 1 NaN/Inf value\(s\) \(first in sample 17\)"):
        NDB(10).fit(x)


def test_too_few_real_samples():
    with pytest.raises(ValueError, match=r"real: 150 samples split into 75 to fit and 75 to hold out \(holdout_fraction=0.5\), each fewer than num_bins=100; need at least 200 real samples, or fewer bins"):
        NDB(100).fit(GOOD[:150])
    with pytest.raises(ValueError, match=r"real: expected at least num_bins=100 samples, got 50"):
        NDB(100, mode="original").fit(GOOD[:50])


def test_bad_fake_samples():
    ndb = NDB(10).fit(GOOD)
    with pytest.raises(ValueError, match=r"fake: expected 4 features per sample \(the bins' dimension\), got 5"):
        ndb.score(np.zeros((10, 5), np.float32))
    with pytest.raises(ValueError, match=r"x: expected 4 features per sample \(the bins' dimension\), got 6"):
        ndb.assign(np.zeros((10, 6), np.float32))
    bad = GOOD[:20].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"fake \(batch 1\): expected finite values"):
        ndb.update([GOOD[:20], bad])
    with pytest.raises(TypeError, match=r"fake: batch 1 is numpy.ndarray of shape \(20, 4\) but batch 0 was a torch array"):
        ndb.score([torch.from_numpy(GOOD[:20]), GOOD[:20]])
    with pytest.raises(ValueError, match=r"fake \(batch 1\): expected 4 features per sample"):
        ndb.score([GOOD[:20], np.zeros((3, 7), np.float32)])


def test_real_batches_of_different_widths():
    with pytest.raises(ValueError, match=r"real \(batch 1\): expected 4 features per sample like batch 0, got 5"):
        NDB(10).fit([GOOD, np.zeros((10, 5), np.float32)])


def test_bad_batch_leaves_streaming_state_unchanged():
    ndb = NDB(10).fit(GOOD)
    ndb.update(GOOD[:100])
    before = ndb.result().fake_counts.clone()
    with pytest.raises(ValueError):
        ndb.update(np.zeros((10, 5), np.float32))
    assert torch.equal(ndb.result().fake_counts, before)


def test_failed_fit_leaves_previous_bins():
    ndb = NDB(10).fit(GOOD)
    centroids = ndb.centroids.clone()
    with pytest.raises(ValueError):
        ndb.fit(GOOD[:15])
    assert torch.equal(ndb.centroids, centroids)


def test_not_fitted():
    with pytest.raises(NotFittedError, match=r"this NDB has no bins yet: call fit\(real\) first"):
        NDB(10).score(GOOD)
    with pytest.raises(NotFittedError):
        NDB(10).centroids


def test_mixed_array_libraries():
    with pytest.raises(TypeError, match=r"mixed array libraries in one call: real is a numpy array, fake is a torch array; convert one of them"):
        fastndb.score(GOOD, torch.from_numpy(GOOD))


def test_unknown_keyword():
    with pytest.raises(TypeError, match=r"score\(\) got unexpected keyword argument\(s\): bins"):
        fastndb.score(GOOD, GOOD, bins=10)
