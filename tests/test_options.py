"""One options model: ``score``, ``NDB``, ``NDBMetric`` and the command line take exactly the same option names,
validate them the same way, and a cache hit applies the calling call's test options and progress setting."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import torch

import fastndb
from fastndb import OPTION_NAMES, BinOptions, TestOptions
from fastndb.cli import build_parser
from tests.conftest import mixture

# one valid, non-default value per option (value_range needs data in that range: the data below lie in [-9, 9])
NON_DEFAULT = {"num_bins": 6, "mode": "original", "seed": 3, "holdout_fraction": 0.4, "whitening": True,
               "max_dims": 3, "max_iter": 50, "tol": 1e-3, "backend": "torch", "value_range": (-9.0, 9.0),
               "feature": torch.nn.Flatten(), "alpha": 0.01, "correction": "holm", "z_threshold": None, "tolerance": 0.05,
               "progress": False}


def _cli_option_names() -> set[str]:
    score = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "score")[1]
    dests = {action.dest for action in score._actions}
    return (dests & set(OPTION_NAMES)) | ({"progress"} if "quiet" in dests else set())


def test_every_face_accepts_exactly_the_option_names():
    assert set(NON_DEFAULT) == set(OPTION_NAMES)
    assert _cli_option_names() == set(OPTION_NAMES)
    real = torch.from_numpy(mixture(600, 5, seed=0)).clamp(-9, 9)
    fake = torch.from_numpy(mixture(300, 5, seed=1)).clamp(-9, 9)
    for name, value in NON_DEFAULT.items():
        fastndb.score(real, fake, cache=False, **{"num_bins": 5, name: value})
        fastndb.NDB(**{"num_bins": 5, name: value}).fit(real).score(fake)
    pytest.importorskip("torchmetrics")
    from fastndb.metrics import NDBMetric

    for name, value in NON_DEFAULT.items():
        metric = NDBMetric(**{"num_bins": 5, name: value})
        metric.update(real, real=True)
        metric.update(fake, real=False)
        metric.compute()


@pytest.mark.parametrize("face", ["score", "NDB", "NDBMetric"])
def test_unknown_options_are_refused_by_name(face):
    real = torch.randn(200, 3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): num_bin\b.*the options are num_bins"):
        if face == "score":
            fastndb.score(real, real, num_bin=5)
        elif face == "NDB":
            fastndb.NDB(num_bin=5)
        else:
            pytest.importorskip("torchmetrics")
            from fastndb.metrics import NDBMetric

            NDBMetric(num_bin=5)


def test_defaults_are_defined_once_and_shown_by_the_cli():
    defaults = {**asdict(BinOptions()), **asdict(TestOptions())}
    assert fastndb.NDB().options == BinOptions() and fastndb.NDB().test == TestOptions()
    score = build_parser()._subparsers._group_actions[0].choices["score"]
    help_text = re.sub(r"\s+", " ", score.format_help())
    for flag, value in (("--num-bins NUM_BINS", re.escape("min(100, N/40)")), ("--alpha ALPHA", 0.05),
                        ("--holdout-fraction", 0.5)):
        assert re.search(rf"{re.escape(flag)}.*?\(default: {value}", help_text), flag
    args = build_parser().parse_args(["score", "a", "b"])
    for name, value in defaults.items():
        # the command line takes K from the number of real samples (fastndb._core.options.default_num_bins)
        assert getattr(args, name) == (None if name == "num_bins" else value), name


def test_cache_hit_applies_this_calls_test_options_and_progress(capsys):
    pytest.importorskip("tqdm")
    fastndb.clear_cache()
    real, fake = torch.from_numpy(mixture(2000, 8, seed=0)), torch.from_numpy(mixture(900, 8, seed=1, keep_modes=6))
    first = fastndb.score(real, fake, num_bins=10, progress=False)
    capsys.readouterr()
    second = fastndb.score(real, fake, num_bins=10, correction="holm", progress=True)
    assert "assigning" in capsys.readouterr().err  # this call's progress, though the bins came from the cache
    assert fastndb.cache_info()["entries"] == 1
    assert torch.equal(first.fake_counts, second.fake_counts) and second.correction == "holm"
    fastndb.clear_cache()
