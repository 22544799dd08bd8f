"""Copies of the training data (issue 29): the exact neighbour search, the copy flags, AuthPct and C_T against
float64 brute-force re-implementations of their definitions, the calibration, errors and the faces."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

import fastndb
from fastndb._core.memorization import average_ranks, beta_binomial_upper, conformal_p_values
from fastndb.kernels.neighbours import nearest_neighbours


def _data(seed: int, n: int, d: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float() * scale


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Float64 distances from the squared differences (torch.cdist's default expansion rounds exact copies above
    0), the square root taken last, as the definition reads."""
    return ((a.double()[:, None] - b.double()[None]) ** 2).sum(-1).sqrt()


def _brute(train: torch.Tensor, fake: torch.Tensor, test: torch.Tensor | None, alpha: float) -> dict:
    """The definitions, in float64 with full distance matrices (dgm-eval's AuthPct, the conformal flags)."""
    a, b = train.double(), fake.double()
    to_fake = _cdist(b, a)
    own = _cdist(a, a)
    own.fill_diagonal_(math.inf)
    d_fake = to_fake.sort(dim=1).values
    d_own = own.sort(dim=1).values

    def ratio(d: torch.Tensor) -> torch.Tensor:
        return torch.where(d[:, 1] > 0, d[:, 0] / d[:, 1], torch.zeros_like(d[:, 0]))

    if test is None:
        calibration = ratio(d_own)
    else:
        calibration = ratio(_cdist(test.double(), a).sort(dim=1).values)
    s = ratio(d_fake)
    p = torch.tensor([(1 + int((calibration <= v).sum())) / (calibration.numel() + 1) for v in s.tolist()],
                     dtype=torch.float64)
    nearest = to_fake.argmin(dim=1)
    real_min = own.min(dim=1).values  # each training sample's nearest other
    authentic = real_min[nearest] < to_fake.min(dim=1).values
    return {"d1": d_fake[:, 0], "d2": d_fake[:, 1], "ratio": s, "p": p, "copy": p <= alpha, "nearest": nearest,
            "authpct": 100 * float(authentic.double().mean())}


@pytest.mark.parametrize("seed", range(6))
def test_nearest_neighbours_equal_float64_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n, q, d = 50 + 37 * seed, 40 + 11 * seed, [1, 3, 17, 64, 200, 5][seed]
    scale = 10.0 ** (-6 + 2.4 * seed)
    reference = torch.randn(n, d, generator=g) * scale
    reference[5:12] = reference[3]  # duplicates
    queries = torch.cat([torch.randn(q, d, generator=g) * scale, reference[:6]])
    for k, exclude, x in ((1, False, queries), (3, False, queries), (2, True, reference), (n - 1, True, reference)):
        got = nearest_neighbours(x, reference, k, exclude_self=exclude, block_rows=16)
        full = ((x.double()[:, None] - reference.double()[None]) ** 2).sum(-1)
        if exclude:
            full.fill_diagonal_(math.inf)
        assert torch.equal(got.sq, full.sort(dim=1).values[:, :k])
        assert torch.equal(full.gather(1, got.index), got.sq)  # the rows named lie at the distances given
        if exclude:
            assert not (got.index == torch.arange(x.shape[0])[:, None]).any()


def test_nearest_neighbours_shards_sum_to_the_whole_and_stay_bounded_on_identical_samples():
    x = _data(1, 300, 8)
    whole = nearest_neighbours(x, x, 2, exclude_self=True, block_rows=64)
    parts = [nearest_neighbours(x, x, 2, exclude_self=True, block_rows=64, shard=(r, 3)) for r in range(3)]
    assert torch.equal(sum(p.sq for p in parts), whole.sq) and torch.equal(sum(p.index for p in parts), whole.index)
    same = torch.ones(500, 4)
    out = nearest_neighbours(same, same, 2, exclude_self=True, block_rows=64)
    assert torch.equal(out.sq, torch.zeros(500, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"k: expected 1 <= k <= 499"):
        nearest_neighbours(same, same, 500, exclude_self=True)


@pytest.mark.parametrize("with_test", [True, False])
def test_flags_and_authpct_equal_the_definitions(with_test):
    train, test = _data(2, 400, 6), _data(3, 200, 6)
    fake = torch.cat([_data(4, 150, 6), train[:20], train[20:40] + 0.01 * _data(5, 20, 6)])
    out = fastndb.memorization(train, fake, test if with_test else None, alpha=0.05)
    ref = _brute(train, fake, test if with_test else None, 0.05)
    torch.testing.assert_close(out.nearest_distance, ref["d1"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.second_distance, ref["d2"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.ratio, ref["ratio"], rtol=1e-12, atol=1e-12)
    assert torch.equal(out.p_value, ref["p"]) and torch.equal(out.copy, ref["copy"])
    assert torch.equal(out.nearest_train, ref["nearest"])
    assert out.authpct == pytest.approx(ref["authpct"], abs=1e-12)
    assert out.calibration == ("test" if with_test else "train") and out.num_test == (200 if with_test else 0)
    assert bool(out.copy[150:170].all())  # exact copies: ratio 0, below every held-out ratio
    flagged = int(out.copy.sum())
    assert out.num_copies == flagged and out.flagged_share == flagged / 190
    t = 200 if with_test else 400
    assert out.chance_level == math.floor(0.05 * (t + 1)) / (t + 1)
    assert (out.ct is not None) == with_test


def test_authpct_chance_level_is_the_held_out_authpct():
    """With a test set, the chance level is AuthPct of the test samples; without, each training sample against the
    others (its nearest other's own nearest other, itself left out)."""
    train, test = _data(6, 300, 4), _data(7, 250, 4)
    out = fastndb.memorization(train, _data(8, 100, 4), test, alpha=0.05)
    assert out.authpct_chance == pytest.approx(_brute(train, test, None, 0.05)["authpct"], abs=1e-12)
    loo = fastndb.memorization(train, _data(8, 100, 4), alpha=0.05)
    a = train.double()
    own = _cdist(a, a)
    own.fill_diagonal_(math.inf)
    hits = 0
    for i in range(a.shape[0]):
        j = int(own[i].argmin())
        others = own[j].clone()
        others[i] = math.inf
        hits += int(float(others.min()) < float(own[i, j]))
    assert loo.authpct_chance == pytest.approx(100 * hits / a.shape[0], abs=1e-12)


def test_ct_equals_the_published_definition_with_scipy():
    """C_T as Meehan et al.'s code computes it: Mann-Whitney per k-means cell (scipy), to the training samples of
    the cell, the continuity-corrected z, weighted by the test share over the cells with more than 20 fakes."""
    g = torch.Generator().manual_seed(9)
    centres = torch.randn(3, 5, generator=g) * 8
    pick = lambda n: centres[torch.arange(n) % 3] + torch.randn(n, 5, generator=g)  # noqa: E731
    train, test = pick(600), pick(300)
    fake = torch.cat([pick(200), train[:100] + 0.05 * torch.randn(100, 5, generator=g)])
    out = fastndb.memorization(train, fake, test, cells=3, seed=2)
    cells = fastndb.kmeans(train, 3, seed=2, distributed=False)
    centroids = cells.centroids.double()
    label = lambda x: _cdist(x.double(), centroids).argmin(dim=1)  # noqa: E731
    t_cell, p_cell, q_cell = cells.labels, label(test), label(fake)
    num, den = 0.0, 0.0
    for c in range(3):
        ref = train[t_cell == c].double()
        lq = _cdist(fake[q_cell == c].double(), ref).min(dim=1).values.numpy()
        lp = _cdist(test[p_cell == c].double(), ref).min(dim=1).values.numpy()
        m, n = len(lq), len(lp)
        if m <= 20:
            continue
        u = mannwhitneyu(lq, lp, alternative="less").statistic
        z = (u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12)
        num += n / 300 * z
        den += n / 300
    assert out.ct == pytest.approx(num / den, abs=1e-9)
    assert out.ct < -1 and out.ct_p_value < 0.05  # the perturbed copies pull it below 0


def test_average_ranks_and_helpers_equal_scipy():
    from scipy.stats import betabinom, rankdata

    v = torch.tensor([3.0, 1.0, 3.0, 2.0, 2.0, 2.0, 0.5])
    assert average_ranks(v).tolist() == rankdata(v.numpy()).tolist()
    assert beta_binomial_upper(7, 40, 3.0, 97.0, torch.device("cpu")) == pytest.approx(betabinom.sf(6, 40, 3, 97),
                                                                                        rel=1e-9)
    p = conformal_p_values(torch.tensor([0.0, 0.2, 0.9]), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert p.tolist() == [0.2, 0.6, 1.0]


def test_false_alarms_on_fresh_samples_near_the_chance_level():
    """Under "no copies" (fake drawn like the held-out data), the flagged share averages the chance level: the
    conformal guarantee. 40 draws of 300 fakes; the standard error of the mean share is about 0.003."""
    shares, verdicts = [], 0
    for draw in range(40):
        train, test, fake = _data(100 + draw, 600, 5), _data(200 + draw, 300, 5), _data(300 + draw, 300, 5)
        out = fastndb.memorization(train, fake, test, alpha=0.05)
        shares.append(out.flagged_share)
        verdicts += out.copying
    chance = math.floor(0.05 * 301) / 301
    assert abs(np.mean(shares) - chance) < 0.012
    assert verdicts <= 3  # the one-sided test at 2.5%: about 1 of 40


def test_copy_share_interval_covers_planted_exact_copies():
    train, test = _data(11, 2000, 8), _data(12, 1000, 8)
    for share in (0.0, 0.01, 0.05, 0.2):
        copies = int(share * 1000)
        fake = torch.cat([_data(13, 1000 - copies, 8), train[:copies]])
        out = fastndb.memorization(train, fake, test)
        low, high = out.copy_share_interval
        assert low <= share <= high, (share, out)
        if share != 0.01:  # 10 copies among 1,000 beside about 10 chance flags: too few to decide at alpha = 0.01
            assert out.copying == (share > 0)


def test_scale_invariance_and_dtypes():
    train, test = _data(14, 300, 6), _data(15, 200, 6)
    fake = torch.cat([_data(16, 100, 6), train[:10]])
    base = fastndb.memorization(train, fake, test)
    for scale in (1e-30, 1e6, 1e30):
        scaled = fastndb.memorization(train * scale, fake * scale, test * scale)
        assert torch.equal(scaled.copy, base.copy)
        torch.testing.assert_close(scaled.ratio, base.ratio, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scaled.nearest_distance / scale, base.nearest_distance, rtol=1e-5, atol=0)
    wide = fastndb.memorization(train.double(), fake.double(), test.double())
    assert torch.equal(wide.copy, base.copy)


def test_uint8_images_and_inference_mode():
    g = torch.Generator().manual_seed(17)
    train = torch.randint(0, 256, (300, 1, 8, 8), generator=g, dtype=torch.uint8)
    fake = torch.cat([torch.randint(0, 256, (50, 1, 8, 8), generator=g, dtype=torch.uint8), train[:5]])
    with torch.inference_mode():
        out = fastndb.memorization(train, fake, alpha=0.05)
    assert bool(out.copy[50:].all()) and out.nearest_train[50:].tolist() == [0, 1, 2, 3, 4]
    assert float(out.nearest_distance[50:].max()) == 0.0


def test_identical_samples_cannot_be_told_apart_and_say_so():
    """Every training sample the same: held-out samples copy them too, so no copy can be flagged beyond chance."""
    train, fake = torch.ones(200, 3), torch.ones(50, 3)
    out = fastndb.memorization(train, fake, alpha=0.05)
    assert out.num_copies == 0 and not out.copying and out.copy_share_interval[0] == 0.0


@pytest.mark.filterwarnings("ignore:value ranges differ")
def test_errors_name_the_argument():
    train, fake = _data(18, 100, 4), _data(19, 50, 4)
    with pytest.raises(ValueError, match=r"alpha: expected at least 1 / \(T \+ 1\) = 0.0099.*100 training"):
        fastndb.memorization(train, fake, alpha=0.005)
    with pytest.raises(ValueError, match=r"alpha: expected at least .* 9 test"):
        fastndb.memorization(train, fake, train[:9] + 0.5, alpha=0.05)
    with pytest.raises(ValueError, match="train: expected at least 3"):
        fastndb.memorization(train[:2], fake)
    with pytest.raises(ValueError, match="fake: expected at least one sample"):
        fastndb.memorization(train, fake[:0])
    with pytest.raises(ValueError, match="test: expected at least one sample"):
        fastndb.memorization(train, fake, fake[:0])
    with pytest.raises(ValueError, match="fake: expected 4 features"):
        fastndb.memorization(train, _data(20, 50, 5))
    with pytest.raises(ValueError, match="test: expected 4 features"):
        fastndb.memorization(train, fake, _data(20, 50, 5))
    with pytest.raises(ValueError, match="cells: expected at most the 100 training samples"):
        fastndb.memorization(train, fake, fake, cells=101, alpha=0.05)
    with pytest.raises(ValueError, match="alpha"):
        fastndb.memorization(train, fake, alpha=1.5)
    with pytest.raises(ValueError, match="alpha: expected a number in"):
        fastndb.memorization(train, fake, alpha="0.1")
    with pytest.raises(TypeError, match="mixed array libraries"):
        fastndb.memorization(train, fake.numpy())
    bad = fake.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="fake"):
        fastndb.memorization(train, bad)
    far = torch.cat([_data(21, 100, 2), _data(22, 100, 2) + 100])
    with pytest.raises(ValueError, match="cells: k-means cell .* holds no test samples"):
        fastndb.memorization(far, _data(23, 30, 2), _data(24, 60, 2), cells=2, alpha=0.05)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), m=st.integers(1, 30), d=st.integers(1, 6), copies=st.integers(0, 5),
       exponent=st.integers(-8, 8), seed=st.integers(0, 2**16))
def test_property_flags_and_distances_agree_with_brute_force(n, m, d, copies, exponent, seed):
    g = torch.Generator().manual_seed(seed)
    train = (torch.randint(-3, 4, (n, d), generator=g).double() * 10.0**exponent)  # ties and duplicates
    fake = torch.cat([torch.randint(-3, 4, (m, d), generator=g).double() * 10.0**exponent, train[:copies]])
    alpha = max(0.3, 1.0 / (n + 1))
    if alpha >= 1:
        return
    out = fastndb.memorization(train, fake, alpha=alpha, block_rows=7)
    ref = _brute(train, fake, None, alpha)
    torch.testing.assert_close(out.nearest_distance, ref["d1"], rtol=1e-12, atol=0)
    torch.testing.assert_close(out.second_distance, ref["d2"], rtol=1e-12, atol=0)
    assert torch.equal(out.copy, ref["copy"])
    d1 = _cdist(fake.double(), train.double())
    assert torch.equal(d1.gather(1, out.nearest_train[:, None])[:, 0], d1.min(dim=1).values)  # a nearest row


def test_result_serialises_and_orders_the_closest():
    train, test = _data(25, 300, 4), _data(26, 100, 4)
    fake = torch.cat([_data(27, 150, 4), train[7:9]])
    out = fastndb.memorization(train, fake, test, alpha=0.05)
    data = json.loads(json.dumps(out.to_dict(python=True)))
    assert data["num_copies"] == out.num_copies and len(data["copy"]) == 152
    assert sorted(out.closest(2).tolist()) == [150, 151]
    assert set(out.scores()) == {"copy_share", "flagged_share", "chance_level", "authpct", "ct"}
    assert "generated samples" in out.summary() and "C_T" in out.summary() and "MemorizationResult(" in repr(out)
    with pytest.warns(UserWarning, match="no C_T: no k-means cell holds more than 20 of the 52"):
        few = fastndb.memorization(train, fake[:52], test, alpha=0.05)
    assert few.ct is None and "no C_T" in few.summary()


def test_feature_space():
    net = torch.nn.Sequential(torch.nn.Linear(6, 4))
    train, test = _data(28, 300, 6), _data(29, 150, 6)
    fake = torch.cat([_data(30, 80, 6), train[:10]])
    out = fastndb.memorization(train, fake, test, feature=net, alpha=0.05)
    with torch.no_grad():
        plain = fastndb.memorization(net(train), net(fake), net(test), alpha=0.05)
    assert torch.equal(out.copy, plain.copy) and bool(out.copy[80:].all())


def test_metric_equals_the_function_and_forward():
    from fastndb.metrics import MemorizationMetric

    train, test = _data(31, 400, 5), _data(32, 200, 5)
    fake = torch.cat([_data(33, 150, 5), train[:15]])
    metric = MemorizationMetric(test=test, alpha=0.05)
    for start in range(0, 400, 130):
        metric.update(train[start : start + 130], real=True)
    out = metric.forward(fake, real=False)
    assert out is not None and set(out) >= {"copy_share", "authpct", "ct"}
    values = metric.compute()
    expected = fastndb.memorization(train, fake, test, alpha=0.05)
    for key in ("copy_share", "flagged_share", "chance_level", "authpct", "ct"):
        assert float(values[key]) == pytest.approx(expected.scores()[key], abs=1e-12)
    assert metric.result.num_copies == expected.num_copies
    metric.reset()
    with pytest.raises(ValueError, match="no real samples"):
        metric.compute()
    without = MemorizationMetric(real=train)
    without.update(fake, real=False)
    assert math.isnan(float(without.compute()["ct"]))
    with pytest.raises(ValueError, match="alpha"):
        MemorizationMetric(alpha=2.0)


def test_cli_memorization(tmp_path, capsys):
    from fastndb.cli import main

    train, test = _data(34, 400, 16).numpy(), _data(35, 200, 16).numpy()
    fake = np.concatenate([_data(36, 150, 16).numpy(), train[:12]])
    for name, value in (("train", train), ("test", test), ("fake", fake)):
        np.save(tmp_path / f"{name}.npy", value)
    args = ["memorization", str(tmp_path / "train.npy"), str(tmp_path / "fake.npy"), "--test",
            str(tmp_path / "test.npy"), "--top", "3", "--pairs", str(tmp_path / "pairs.png"), "--grid-shape", "4", "4"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "more than chance" in text and text.count("COPY") == 3 and "nearest training 0" in text
    assert (tmp_path / "pairs.png").stat().st_size > 0
    assert main(["memorization", str(tmp_path / "train.npy"), str(tmp_path / "fake.npy"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calibration"] == "train" and data["num_copies"] >= 12


def test_report_shows_the_copies_with_file_names(tmp_path):
    from fastndb import report

    g = torch.Generator().manual_seed(37)
    real = torch.rand(400, 1, 8, 8, generator=g)
    fake = torch.cat([torch.rand(200, 1, 8, 8, generator=g), real[10:13]])
    names = [f"real_{i}.png" for i in range(400)]
    fake_names = [f"fake_{i}.png" for i in range(203)]
    built = report.build(real, fake, names=names, fake_names=fake_names, birthday_samples=None,
                         coverage_samples=None, modes_samples=None, examples=3)
    md = built.to_markdown()
    assert "## Copies of the training data" in md
    for i in range(3):
        assert f"fake\\_{200 + i}.png | real\\_{10 + i}.png | 0 | 0 | yes" in md
    assert "copies" in built.images and "Copies of the training data" in built.to_html()
    skipped = report.build(real, fake, pictures=False, birthday_samples=None, coverage_samples=None,
                           modes_samples=None, memorization_samples=None)
    assert skipped.memorization is None and "Copies" not in skipped.to_markdown()


@pytest.mark.parametrize("world", [2, 3])
def test_dealt_out_pairs_of_tiles_merge_to_one_process(world):
    """Issue 28: with ``gather``, a set's search against itself deals its pairs of tiles out between the ranks and
    merges their candidates; the ranks' answers summed equal one process's, bit for bit (radii and 2-NN)."""
    from fastndb.kernels import neighbours as nb

    x = _data(40, 1500, 8)
    x[:30] = x[30:60]  # ties and duplicates
    one = nb.kth_neighbour_sq(x, 5, block_rows=128)
    nn = nb.nearest_neighbours(x, x, 2, exclude_self=True, block_rows=128)

    def gather_for(exclude: bool):
        def gather(t: torch.Tensor) -> torch.Tensor:  # every rank's share, in rank order, as all_gather_cat gives
            shares = [nb._symmetric_candidates(x, nb.squared_norms(x), t.shape[1], 128, exclude_self=exclude,
                                               pairs=(r, world)) for r in range(world)]
            return torch.cat([s[1] if t.dtype == torch.int64 else s[0] for s in shares])
        return gather

    radii = sum(nb.kth_neighbour_sq(x, 5, block_rows=128, shard=(r, world), gather=gather_for(False))
                for r in range(world))
    parts = [nb.nearest_neighbours(x, x, 2, exclude_self=True, block_rows=128, shard=(r, world),
                                   gather=gather_for(True)) for r in range(world)]
    assert torch.equal(radii, one)
    assert torch.equal(sum(p.sq for p in parts), nn.sq) and torch.equal(sum(p.index for p in parts), nn.index)


def test_metric_contract_held_out_set_and_early_forward():
    """merge_state and load_state_dict refuse a state built on another test set (of the same size, too); forward
    says None, not an error, while too few samples calibrate the flags; compute() then names alpha."""
    from fastndb.metrics import MemorizationMetric

    train, fake = _data(40, 300, 4), _data(41, 100, 4)
    one = MemorizationMetric(test=_data(42, 200, 4), alpha=0.05)
    other = MemorizationMetric(test=_data(43, 200, 4), alpha=0.05)
    other.update(train, real=True)
    with pytest.raises(ValueError, match="merge_state: the state comes from a MemorizationMetric built otherwise"):
        one.merge_state(other)
    other.persistent(True)
    with pytest.raises(ValueError, match="load_state_dict: the state comes from a MemorizationMetric built"):
        one.load_state_dict(other.state_dict())
    same = MemorizationMetric(test=_data(42, 200, 4), alpha=0.05)
    same.merge_state(other.__class__(test=_data(42, 200, 4), alpha=0.05))  # the same test set: accepted

    early = MemorizationMetric()  # alpha = 0.01 needs 99 training samples to calibrate leave-one-out
    early.update(train[:50], real=True)
    assert early.forward(fake, real=False) is None
    with pytest.raises(ValueError, match="alpha: expected at least 1 / \\(T \\+ 1\\)"):
        early.compute()
    early.update(train[50:], real=True)
    assert early.forward(fake, real=False) is not None


def test_metric_merge_state_dict_and_collection():
    """torchmetrics' contract: two metrics fed halves and merged equal one fed everything; a persistent state dict
    restores the numbers; the metric computes inside a MetricCollection."""
    from torchmetrics import MetricCollection

    from fastndb.metrics import MemorizationMetric

    train, test = _data(44, 400, 5), _data(45, 200, 5)
    fake = torch.cat([_data(46, 150, 5), train[:15]])
    a, b, whole = (MemorizationMetric(test=test, alpha=0.05) for _ in range(3))
    a.update(train[:200], real=True), a.update(fake[:80], real=False)
    b.update(train[200:], real=True), b.update(fake[80:], real=False)
    whole.update(train, real=True), whole.update(fake, real=False)
    a.merge_state(b)
    expected = whole.compute()
    merged = a.compute()
    assert all(torch.equal(merged[k], expected[k]) or bool(torch.isnan(merged[k]) & torch.isnan(expected[k]))
               for k in expected)
    whole.persistent(True)
    restored = MemorizationMetric(test=test, alpha=0.05)
    restored.load_state_dict(whole.state_dict())
    again = restored.compute()
    assert all(torch.equal(again[k], expected[k]) for k in ("copy_share", "authpct", "ct"))
    together = MetricCollection({"copies": MemorizationMetric(test=test, alpha=0.05)})
    together.update(train, real=True)
    together.update(fake, real=False)
    assert float(together.compute()["copy_share"]) == float(expected["copy_share"])
