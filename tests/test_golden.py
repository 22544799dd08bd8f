"""Results on a fixed data set are identical to the stored ones (bins, counts, p-values, pairs, k-means).

Counts, pair indices, NDB and the p-values (a function of the counts) must match exactly. Centroids, distances and
the inertia come out of float32 GEMMs and reductions whose last bits may depend on the CPU's instruction set, so
they are compared to 1e-6 relative.
"""

from __future__ import annotations

import json

import pytest

from tests.golden import CASES, PATH, compute

FLOAT_FIELDS = {"centroid_sum", "centroid_0", "distances", "inertia"}


def _floats(value):
    return [float.fromhex(v) for v in value] if isinstance(value, list) else float.fromhex(value)


def test_results_identical_to_the_stored_ones():
    stored = json.loads(PATH.read_text())
    now = compute()
    assert set(stored) == set(CASES) | {"birthday", "kmeans"}
    for name, fields in stored.items():
        for field, value in fields.items():
            if field in FLOAT_FIELDS:
                assert _floats(now[name][field]) == pytest.approx(_floats(value), rel=1e-6, abs=1e-9), (name, field)
            else:
                assert now[name][field] == value, (name, field)
