"""Demo: NDB on scikit-learn's bundled 8x8 digits, real samples against generators that drop digits.

The "generators" resample a pool of real digits disjoint from the reference set and add pixel noise, so a
healthy one draws from (nearly) the real distribution while the others never produce some digit classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastndb._optional import require
from fastndb.ndb import NDB
from fastndb.results import NDBResult


@dataclass(frozen=True)
class DemoRow:
    """One generator's outcome."""

    generator: str
    dropped: tuple[int, ...]
    result: NDBResult


def load_digits_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(1797, 64)`` float32 in [0, 1] and ``(1797,)`` int64 labels."""
    datasets = require("sklearn", "the digits demo").datasets
    digits = datasets.load_digits()
    return torch.from_numpy(digits.data).float() / 16.0, torch.from_numpy(digits.target).long()


def run_digits_demo(
    *, num_bins: int = 10, num_fake: int = 2000, noise: float = 0.03, seed: int = 0,
    drops: tuple[tuple[int, ...], ...] = ((), (3, 8), (0, 1, 2, 3, 4)),
) -> list[DemoRow]:
    """Fit NDB bins on 1000 real digits and score one generator per entry of ``drops``.

    Args:
        num_bins: NDB bins.
        num_fake: samples drawn from each generator.
        noise: std of the Gaussian pixel noise the generators add (pixels are in [0, 1]).
        seed: seed of the split, the generators and NDB.
        drops: for each generator, the digit classes it never produces.
    """
    x, y = load_digits_tensor()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    real, pool_x, pool_y = x[order[:1000]], x[order[1000:]], y[order[1000:]]
    ndb = NDB(num_bins, seed=seed).fit(real)
    rows = []
    for dropped in drops:
        keep = ~torch.isin(pool_y, torch.tensor(dropped, dtype=torch.int64))
        candidates = pool_x[keep]
        picks = torch.randint(len(candidates), (num_fake,), generator=generator)
        fake = (candidates[picks] + noise * torch.randn(num_fake, x.shape[1], generator=generator)).clamp(0, 1)
        name = "healthy (all digits)" if not dropped else f"drops digits {','.join(map(str, dropped))}"
        rows.append(DemoRow(name, tuple(dropped), ndb.score(fake)))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    """The demo's table as text."""
    header = f"{'generator':<26} {'NDB':>4} {'NDB/K':>6} {'expected by chance':>19} {'JS':>8}"
    lines = [f"{header} {'p (histograms differ)':>22}"]
    for row in rows:
        r = row.result
        lines.append(
            f"{row.generator:<26} {r.ndb:>4} {r.ndb_ratio:>6.2f} {r.expected_false_positives:>19.2f} "
            f"{r.js:>8.4f} {r.p_value:>22.3g}"
        )
    return "\n".join(lines)
