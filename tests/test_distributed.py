"""Two gloo processes on the CPU give what one process fed the union gives: k-means, NDB.fit, NDBMetric.

The ranks run tests/ddp_worker.py once (module fixture); each test compares one scenario.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastndb
from fastndb._core.collectives import SingleProcess, resolve_collective
from fastndb.metrics import BirthdayMetric, MemorizationMetric, ModesMetric, NDBMetric, PRDCMetric
from tests.ddp_data import (
    fake_shards,
    fake_union,
    feature_net,
    held_out_shards,
    held_out_union,
    real_shards,
    real_union,
)

WORKER = Path(__file__).with_name("ddp_worker.py")
WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(rank), str(WORLD), str(out / "init"), str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for rank in range(WORLD)
    ]
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=120)[0].decode())
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the distributed workers did not finish in 120 s (a collective mismatch hangs)")
    for rank, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def test_distributed_kmeans_matches_one_process_on_the_union(ranks):
    single = fastndb.kmeans(real_union(), 12, seed=3, init_size=1200, distributed=False)
    a, b = ranks[0]["kmeans"], ranks[1]["kmeans"]
    assert torch.equal(a["centroids"], b["centroids"])  # identical bins on every rank
    torch.testing.assert_close(a["centroids"], single.centroids, rtol=1e-5, atol=1e-5)
    assert torch.equal(a["counts"], single.counts) and torch.equal(b["counts"], single.counts)
    assert a["inertia"] == pytest.approx(single.inertia, rel=1e-6)
    assert torch.equal(torch.cat([a["labels"], b["labels"]]), single.labels)  # local labels, in shard order


@pytest.mark.parametrize("name, options", [("holdout", {}), ("whitened", {"whitening": True, "max_dims": 20}),
                                           ("original", {"mode": "original"})])
def test_distributed_ndb_fit_matches_one_process(ranks, name, options):
    single = fastndb.NDB(16, seed=5, **options).fit(real_union(), distributed=False)
    a, b = ranks[0][f"ndb_{name}"], ranks[1][f"ndb_{name}"]
    assert torch.equal(a["centroids"], b["centroids"]) and torch.equal(a["real_counts"], b["real_counts"])
    torch.testing.assert_close(a["centroids"], single.centroids, rtol=1e-5, atol=1e-5)
    assert torch.equal(a["real_counts"], single.real_counts)


def _single_process_metric(**options) -> NDBMetric:
    metric = NDBMetric(num_bins=16, seed=5, **options)
    metric.update(real_union(), real=True)
    metric.update(fake_union(), real=False)
    return metric


def test_metric_under_ddp_equals_single_process(ranks):
    single = _single_process_metric()
    expected = single.compute()
    for rank in ranks:
        got = rank["metric"]
        for key in expected:
            assert torch.equal(got["values"][key], expected[key]), key
        assert torch.equal(got["fake_counts"], single.result.fake_counts)
        assert torch.equal(got["real_counts"], single.result.real_counts)
        torch.testing.assert_close(got["centroids"], single.bins.centroids, rtol=1e-5, atol=1e-5)
    # after compute() each rank holds its own counts again (torchmetrics' unsync): rank 1 streamed nothing
    assert int(ranks[0]["metric"]["local_fake_counts"].sum()) == fake_union().shape[0]
    assert int(ranks[1]["metric"]["local_fake_counts"].sum()) == 0


def test_metric_with_a_feature_under_ddp_equals_one_process_on_the_features(ranks):
    net = feature_net()
    single = NDBMetric(num_bins=16, seed=5)
    with torch.no_grad():
        single.update(torch.cat([net(b) for b in real_union().split(64)]), real=True)
        single.update(torch.cat([net(b) for b in fake_union().split(64)]), real=False)
    expected = single.compute()
    for rank in ranks:
        got = rank["featured"]
        assert all(torch.equal(got["values"][k], expected[k]) for k in expected)
        assert torch.equal(got["fake_counts"], single.result.fake_counts)
        assert torch.equal(got["real_counts"], single.result.real_counts)
        assert got["feature"] == fastndb.extractor(net).identity()  # same weights on every rank, same identity


def test_metric_second_epoch_with_kept_bins_under_ddp(ranks):
    single = _single_process_metric(reset_real_features=False)
    single.compute()
    single.reset()
    single.update(fake_union(), real=False)
    expected = single.compute()
    for rank in ranks:
        assert all(torch.equal(rank["metric_epoch2"][k], expected[k]) for k in expected)


def test_a_rank_without_real_samples_gets_the_same_bins(ranks):
    single = _single_process_metric()
    expected = single.compute()
    assert torch.equal(ranks[0]["lonely"]["centroids"], ranks[1]["lonely"]["centroids"])
    for rank in ranks:
        assert all(torch.equal(rank["lonely"]["values"][k], expected[k]) for k in expected)


def test_resolve_collective_without_a_process_group():
    assert isinstance(resolve_collective(None), SingleProcess)
    assert isinstance(resolve_collective(False), SingleProcess)
    with pytest.raises(ValueError, match="distributed=True: torch.distributed is not initialised"):
        resolve_collective(True)
    with pytest.raises(TypeError, match="distributed: expected True, False or None, got 'yes'"):
        resolve_collective("yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not initialised"):
        fastndb.kmeans(real_union(), 4, distributed=True)


def test_birthday_metric_under_ddp_tests_the_union(ranks):
    single = BirthdayMetric(num_samples=5000, threshold=3.1)
    single.update(real_union())
    expected = single.compute()
    assert float(expected["num_duplicates"]) > 0  # the threshold is wide enough to count something
    for rank in ranks:
        assert all(torch.equal(rank["birthday"][k], expected[k]) for k in expected)
        assert torch.equal(rank["birthday_pairs"], single.result.pairs)


def test_birthday_function_on_shards_equals_one_process_on_the_union(ranks):
    """Issue 28: fastndb.birthday given each rank's shard (the pair search's 6 row blocks dealt out between the two
    ranks, candidates gathered, duplicate counts summed) equals one process given the union."""
    expected = fastndb.birthday(real_union(), num_pairs=12, threshold=3.1, distributed=False, block_rows=500)
    assert expected.num_duplicates > 0
    for rank in ranks:
        got = rank["birthday_functional"]
        assert torch.equal(got["pairs"], expected.pairs) and torch.equal(got["distances"], expected.distances)
        assert got["duplicates"] == expected.num_duplicates


@pytest.mark.parametrize("name, cap", [("prdc", 10_000), ("prdc_capped", 700)])
def test_prdc_metric_under_ddp_equals_one_process_on_the_union(ranks, name, cap):
    single = PRDCMetric(nearest_k=4, max_samples=cap)
    single.update(real_union(), real=True)
    single.update(fake_union(), real=False)
    expected = single.compute()
    for rank in ranks:
        assert all(torch.equal(rank[name][k], expected[k]) for k in expected), (rank[name], expected)


@pytest.mark.parametrize("name, cap", [("modes", 10_000), ("modes_capped", 700)])
def test_modes_metric_under_ddp_equals_one_process_on_the_union(ranks, name, cap):
    """Issue 27: the counts, the bandwidth and the missing modes' examples of two gloo ranks equal one process."""
    single = ModesMetric(max_samples=cap, top=2)
    single.update(real_union(), real=True)
    single.update(fake_union(), real=False)
    expected = single.compute()
    examples = [mode.examples for mode in single.result.missing]
    for rank in ranks:  # the ranks run one thread each: GEMMs blocked otherwise round differently in the last bits
        assert all(torch.allclose(rank[name][k], expected[k], rtol=1e-9, atol=0) for k in expected), (
            rank[name], expected)
        assert len(rank[name + "_missing"]) == len(examples)
        assert all(torch.equal(a, b) for a, b in zip(rank[name + "_missing"], examples, strict=True))


def test_prdc_function_on_shards_equals_one_process_on_the_union(ranks):
    """Issue 28: fastndb.prdc given each rank's shard (the searches split by row blocks between the ranks) equals one
    process given the union in rank order, exactly: the four numbers, their intervals, the per-sample outcomes."""
    real_parts, fake_parts = real_shards(WORLD), fake_shards(WORLD)
    fake_parts = [f if f.shape[0] else r[:10] for f, r in zip(fake_parts, real_parts, strict=True)]
    expected = fastndb.prdc(torch.cat(real_parts), torch.cat(fake_parts), nearest_k=4, distributed=False)
    for rank in ranks:
        got = rank["prdc_functional"]
        assert {k: got[k] for k in expected.scores()} == expected.scores()
        assert got["intervals"] == [expected.precision_interval, expected.coverage_interval]
        assert torch.equal(got["covered"], expected.real_covered)
        assert torch.equal(got["fake_density"], expected.fake_density)
        assert torch.equal(got["radii"], expected.real_radii)


def test_modes_function_on_shards_equals_one_process_on_the_union(ranks):
    """Issue 28: fastndb.modes given each rank's shard (distributed) equals one process given the union in rank
    order: the bandwidth, the counts (the RKE tiles split between the ranks), Vendi and the missing modes."""
    real_parts, fake_parts = real_shards(WORLD), fake_shards(WORLD)
    fake_parts = [f if f.shape[0] else r[:10] for f, r in zip(fake_parts, real_parts, strict=True)]
    expected = fastndb.modes(torch.cat(real_parts), torch.cat(fake_parts), top=2, distributed=False)
    for rank in ranks:
        got = rank["modes_functional"]
        assert got["bandwidth"] == expected.bandwidth and got["vendi"] == pytest.approx(expected.vendi_real, rel=1e-9)
        assert got["real"] == pytest.approx(expected.real.count, rel=1e-12)
        assert got["fake"] == pytest.approx(expected.fake.count, rel=1e-12)
        assert got["log_se"] == pytest.approx(expected.real.log_se, rel=1e-9)
        assert all(torch.equal(a, m.examples) for a, m in zip(got["missing"], expected.missing, strict=True))


def test_metric_with_the_real_side_up_front_under_ddp(ranks):
    """Issue 25: NDBMetric(real=...) on every rank equals one process; counts summed by torchmetrics' own sync."""
    single = NDBMetric(num_bins=16, seed=5, real=real_union())
    single.update(fake_union(), real=False)
    expected = single.compute()
    for rank in ranks:
        assert all(torch.equal(rank["fixed"]["values"][k], expected[k]) for k in expected)
        assert torch.equal(rank["fixed"]["fake_counts"], single.result.fake_counts)
        assert rank["differing"] is not None and "the ranks' fixed references differ" in rank["differing"]


def _copies_of_rank(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return torch.cat([fake, real[:40]]) if fake.shape[0] else real[:10]


def test_memorization_on_shards_equals_one_process_on_the_union(ranks):
    """Issue 29: fastndb.memorization given each rank's shards (the nearest-neighbour searches split by query row
    blocks, one all-reduce each) equals one process given the unions in rank order, bit for bit."""
    real_parts, fake_parts = real_shards(WORLD), fake_shards(WORLD)
    copies = [_copies_of_rank(f, r) for f, r in zip(fake_parts, real_parts, strict=True)]
    expected = fastndb.memorization(torch.cat(real_parts), torch.cat(copies), torch.cat(held_out_shards(WORLD)),
                                    distributed=False)
    assert expected.num_copies >= 40
    for rank in ranks:
        got = rank["memorization_functional"]
        assert {k: got[k] for k in expected.scores()} == pytest.approx(expected.scores(), nan_ok=True, abs=0)
        assert torch.equal(got["copy"], expected.copy) and torch.equal(got["nearest"], expected.nearest_train)
        assert torch.equal(got["p"], expected.p_value) and got["interval"] == expected.copy_share_interval


def test_memorization_metric_under_ddp_equals_one_process_on_the_union(ranks):
    """Issue 29: MemorizationMetric under DDP (the kept samples gathered in key order, the searches split) equals one
    process fed the union."""
    single = MemorizationMetric(test=held_out_union())
    single.update(real_union(), real=True)
    for fake, real in zip(fake_shards(WORLD), real_shards(WORLD), strict=True):
        single.update(_copies_of_rank(fake, real), real=False)
    expected = single.compute()
    for rank in ranks:
        got = rank["memorization_metric"]
        for key, value in expected.items():
            assert torch.equal(got[key], value) or (torch.isnan(got[key]) and torch.isnan(value)), key
