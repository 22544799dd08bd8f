"""The property-style sweep extended to the newer entry points (issue 26): ``prdc`` against a float64 brute-force
reference, ``report.build`` against ``score``, named references against the bins they were fitted with, and
``feature=`` with modules of other dtypes and in train mode. Every call returns what the reference computes or
raises a ValueError/TypeError naming the argument (the strategies of tests/test_properties.py)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastndb
from tests.test_properties import _as_float64, sample_sets

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAMES = ("real", "fake", "samples", "num_bins", "nearest_k", "value_range", "names", "fake_names", "feature", "x",
         "reference")
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _named(err: Exception) -> bool:
    return bool(re.match(rf"^({'|'.join(NAMES)})\b", str(err))) or str(err).startswith("imgs (")


def _prdc_reference(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Precision, recall, density and coverage of Naeem et al. (2020) from float64 distances, as the prdc package
    defines them (radius: distance to the k-th nearest other sample; strict inequalities)."""
    x = _as_float64(real.reshape(real.shape[0], -1))
    y = _as_float64(fake.reshape(fake.shape[0], -1))

    def sq(a, b):
        with np.errstate(over="ignore", invalid="ignore"):
            return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    r_x = np.sort(sq(x, x), axis=1)[:, k]
    r_y = np.sort(sq(y, y), axis=1)[:, k]
    d = sq(x, y)  # (N, M)
    precision = float((d < r_x[:, None]).any(axis=0).mean())
    recall = float((d < r_y[None, :]).any(axis=1).mean())
    density = float((d < r_x[:, None]).sum(axis=0).mean() / k)
    coverage = float((d.min(axis=1) < r_x).mean())
    return precision, recall, density, coverage


@SETTINGS
@given(sets=sample_sets(max_rows=120), k=st.integers(1, 6))
def test_prdc_agrees_with_a_float64_reference_or_names_the_argument(sets, k):
    real, fake, _ = sets
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = fastndb.prdc(real, fake, nearest_k=k, subsets=0)
    except (ValueError, TypeError) as err:
        assert _named(err), err
        return
    expected = _prdc_reference(real, fake, k)
    assert (got.precision, got.recall, got.density, got.coverage) == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(sets=sample_sets(max_rows=200), num_bins=st.integers(2, 5))
def test_report_build_equals_score_or_names_the_argument(sets, num_bins):
    from fastndb import report

    real, fake, seed = sets
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = report.build(real, fake, num_bins=num_bins, seed=seed % 100, pictures=False,
                                 birthday_samples=50, coverage_samples=50, nearest_k=2)
            expected = fastndb.score(real, fake, num_bins=num_bins, seed=seed % 100, cache=False)
    except (ValueError, TypeError) as err:
        assert _named(err), err
        return
    assert torch.equal(built.ndb.fake_counts, expected.fake_counts) and built.ndb.ndb == expected.ndb
    assert built.to_markdown().startswith("# fastndb report") and "<html" in built.to_html()


@SETTINGS
@given(sets=sample_sets(max_rows=200), num_bins=st.integers(2, 5))
def test_a_reference_scores_as_its_bins_or_names_the_argument(sets, num_bins, tmp_path_factory):
    import os

    real, fake, seed = sets
    home = tmp_path_factory.mktemp("home")
    before = os.environ.get("FASTNDB_HOME")
    os.environ["FASTNDB_HOME"] = str(home)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fastndb.save_reference("sweep", real, num_bins=num_bins, seed=seed % 100)
            got = fastndb.score(fastndb.load_reference("sweep"), fake)
            expected = fastndb.score(real, fake, num_bins=num_bins, seed=seed % 100, cache=False)
    except (ValueError, TypeError) as err:
        assert _named(err), err
        return
    finally:
        if before is None:
            os.environ.pop("FASTNDB_HOME", None)
        else:
            os.environ["FASTNDB_HOME"] = before
    assert torch.equal(got.fake_counts, expected.fake_counts) and torch.equal(got.real_counts, expected.real_counts)


@SETTINGS
@given(sets=sample_sets(max_rows=200), dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
       train=st.booleans(), num_bins=st.integers(2, 4))
def test_feature_modules_of_any_dtype_and_mode_or_names_the_argument(sets, dtype, train, num_bins):
    real, fake, seed = sets
    d = int(np.prod(real.shape[1:]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 1000)
        module = nn.Sequential(nn.Flatten(), nn.Linear(d, 6), nn.BatchNorm1d(6), nn.Dropout(0.3),
                               nn.Linear(6, 3)).to(dtype)
    module.train(train)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = fastndb.score(real, fake, num_bins=num_bins, feature=module, cache=False)
    except (ValueError, TypeError) as err:
        assert _named(err), err
        return
    assert module.training == train and all(torch.equal(v, state[k]) for k, v in module.state_dict().items())

    def features(x: np.ndarray) -> torch.Tensor:  # eval mode, the module's dtype, batches of 64 rows padded
        t = torch.from_numpy(_as_float64(x)).to(dtype)
        module.eval()
        with torch.no_grad():
            out = []
            for start in range(0, t.shape[0], 64):
                batch = t[start : start + 64]
                padded = torch.cat([batch, batch[-1:].expand(64 - batch.shape[0], *batch.shape[1:])])
                part = module(padded)[: batch.shape[0]]
                out.append(part if part.dtype in (torch.float32, torch.float64) else part.float())
        module.train(train)
        return torch.cat(out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = fastndb.score(features(real), features(fake), num_bins=num_bins, cache=False)
    assert torch.equal(got.fake_counts, expected.fake_counts) and torch.equal(got.real_counts, expected.real_counts)
