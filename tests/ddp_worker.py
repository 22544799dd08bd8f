"""One rank of the 2-process gloo job that tests/test_distributed.py launches (not a test module itself).

Usage: python ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR

Every rank runs the same scenarios on its shard of shared, seeded data and saves what it got to
OUT_DIR/rank{RANK}.pt; the test compares those files with a single process fed the union.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastndb  # noqa: E402
from fastndb.metrics import BirthdayMetric, MemorizationMetric, ModesMetric, NDBMetric, PRDCMetric  # noqa: E402
from tests.ddp_data import (  # noqa: E402
    fake_shards,
    feature_net,
    held_out_shards,
    held_out_union,
    real_shards,
    real_union,
)


def main() -> None:
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    real = real_shards(world)[rank]
    fake = fake_shards(world)[rank]
    out: dict = {}

    # init_size below the union (3,000 rows) so that the seeding sample is a strict subset gathered over the ranks
    clusters = fastndb.kmeans(real, 12, seed=3, init_size=1200)  # distributed=None: auto, the group is initialised
    out["kmeans"] = {"centroids": clusters.centroids, "counts": clusters.counts, "inertia": clusters.inertia,
                     "labels": clusters.labels}

    for name, options in {"holdout": {}, "whitened": {"whitening": True, "max_dims": 20},
                          "original": {"mode": "original"}}.items():
        ndb = fastndb.NDB(16, seed=5, **options).fit(real)
        out[f"ndb_{name}"] = {"centroids": ndb.centroids, "real_counts": ndb.real_counts}

    # the metric: real and fake in batches of different sizes; this rank's fake may be empty
    metric = NDBMetric(num_bins=16, seed=5, reset_real_features=False)
    for start in range(0, real.shape[0], 333):
        metric.update(real[start : start + 333], real=True)
    for start in range(0, fake.shape[0], 250):
        metric.update(fake[start : start + 250], real=False)
    values = metric.compute()
    out["metric"] = {
        "values": values,
        "fake_counts": metric.result.fake_counts,
        "real_counts": metric.result.real_counts,
        "centroids": metric.bins.centroids,
        "local_fake_counts": metric.local_fake_counts,  # after compute: this rank's own counts again
    }
    # second epoch with kept bins: fake only
    metric.reset()
    if fake.shape[0]:
        metric.update(fake, real=False)
    out["metric_epoch2"] = metric.compute()

    # in a feature space: each rank embeds its own batches, the bins are fitted on the union of the features
    featured = NDBMetric(num_bins=16, seed=5, feature=feature_net())
    for start in range(0, real.shape[0], 333):
        featured.update(real[start : start + 333], real=True)
    if fake.shape[0]:
        featured.update(fake, real=False)
    out["featured"] = {"values": featured.compute(), "fake_counts": featured.result.fake_counts,
                       "real_counts": featured.result.real_counts, "feature": featured.bins.feature}

    # a rank with no real samples at all still gets the bins
    lonely = NDBMetric(num_bins=16, seed=5)
    if rank == 0:
        lonely.update(torch.cat(real_shards(world)), real=True)
    if fake.shape[0]:
        lonely.update(fake, real=False)
    out["lonely"] = {"values": lonely.compute(), "centroids": lonely.bins.centroids}

    # the real side up front: every rank fits the same whole set once; fake counts summed by torchmetrics' sync
    fixed = NDBMetric(num_bins=16, seed=5, real=real_union())
    for start in range(0, fake.shape[0], 250):
        fixed.update(fake[start : start + 250], real=False)
    out["fixed"] = {"values": fixed.compute(), "fake_counts": fixed.result.fake_counts}
    # ranks given different real sets (their own shards) as a fixed reference: refused on every rank
    differing = NDBMetric(num_bins=16, seed=5, real=real)
    differing.update(fake if fake.shape[0] else real[:10], real=False)
    try:
        differing.compute()
        out["differing"] = None
    except ValueError as err:
        out["differing"] = str(err)

    # the birthday metric gathers the kept samples of all ranks
    birthday_metric = BirthdayMetric(num_samples=5000, threshold=3.1)
    birthday_metric.update(real)
    out["birthday"] = birthday_metric.compute()
    out["birthday_pairs"] = birthday_metric.result.pairs
    # fastndb.birthday on each rank's shard: the union gathered, the pair search's row blocks dealt out
    pairs = fastndb.birthday(real, num_pairs=12, threshold=3.1, distributed=True, block_rows=500)
    out["birthday_functional"] = {"pairs": pairs.pairs, "distances": pairs.distances,
                                  "duplicates": pairs.num_duplicates}

    # coverage metrics: samples gathered from every rank, the union's smallest keys kept (here: all of them)
    coverage = PRDCMetric(nearest_k=4)
    coverage.update(real, real=True)
    if fake.shape[0]:
        coverage.update(fake, real=False)
    out["prdc"] = coverage.compute()
    capped = PRDCMetric(nearest_k=4, max_samples=700)  # more than the cap in all: the union is cut to it
    capped.update(real, real=True)
    if fake.shape[0]:
        capped.update(fake, real=False)
    out["prdc_capped"] = capped.compute()

    # fastndb.prdc on each rank's shard: the union gathered, the k-NN searches and ball tests split by row blocks
    shared = fastndb.prdc(real, fake if fake.shape[0] else real[:10], nearest_k=4, distributed=True)
    out["prdc_functional"] = {**shared.scores(), "intervals": [shared.precision_interval, shared.coverage_interval],
                              "covered": shared.real_covered, "fake_density": shared.fake_density,
                              "radii": shared.real_radii}

    # fastndb.modes on each rank's shard: the union gathered in rank order, the RKE tiles split between the ranks
    sharded = fastndb.modes(real, fake if fake.shape[0] else real[:10], top=2, distributed=True)
    out["modes_functional"] = {"real": sharded.real.count, "fake": sharded.fake.count, "bandwidth": sharded.bandwidth,
                               "vendi": sharded.vendi_real, "log_se": sharded.real.log_se,
                               "missing": [m.examples for m in sharded.missing]}

    # mode counts: the union in key order, the bandwidth rule and the subsets seeded on it
    for name, cap in (("modes", 10_000), ("modes_capped", 700)):
        counts = ModesMetric(max_samples=cap, top=2)
        counts.update(real, real=True)
        if fake.shape[0]:
            counts.update(fake, real=False)
        out[name] = counts.compute()
        out[name + "_missing"] = [mode.examples for mode in counts.result.missing]

    # copies of the training data: the functional call on each rank's shards, and the metric with the test set up
    # front; the searches split by query row blocks between the ranks
    copies = torch.cat([fake, real[:40]]) if fake.shape[0] else real[:10]
    shared = fastndb.memorization(real, copies, held_out_shards(world)[rank], distributed=True)
    out["memorization_functional"] = {**shared.scores(), "copy": shared.copy, "nearest": shared.nearest_train,
                                      "p": shared.p_value, "interval": shared.copy_share_interval}
    held = MemorizationMetric(test=held_out_union())
    held.update(real, real=True)
    held.update(copies, real=False)
    out["memorization_metric"] = held.compute()

    torch.save(out, out_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
