"""Copies of the training data, validated (issue 29's "Must show"). A script.

    python benchmarks/memorization.py planted --draws 100   # planted exact and perturbed copies, false alarms
    python benchmarks/memorization.py reference --dgm-eval DIR  # C_T and AuthPct against float64 and dgm-eval
    python benchmarks/memorization.py speed                 # 20,000 x 784 and 50,000 x 64 against a full matrix
    python benchmarks/memorization.py intervals --draws 500 # AuthPct's interval coverage, C_T's null spread

``--dgm-eval DIR``: a folder holding dgm-eval's ``dgm_eval/metrics/ct.py`` and ``authpct.py`` (for example
``git show HEAD:dgm_eval/metrics/ct.py`` from a clone of layer6ai-labs/dgm-eval); they are imported from there, not
shipped here. Writes benchmarks/results/memorization_<section>.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name, gemm_rate, peak_memory_during

import fastndb
from fastndb.kernels.neighbours import nearest_neighbours

OUT = Path(__file__).resolve().parent / "results"
RATES = (0.0, 0.01, 0.05, 0.20)


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}"


def digits() -> torch.Tensor:
    from fastndb.demo.runner import load_digits_tensor

    return load_digits_tensor()[0]


def mixture_pool(n: int, seed: int) -> torch.Tensor:
    """A 20-mode Gaussian mixture in 16-D (fixed centres), ``n`` samples."""
    centres = torch.randn(20, 16, generator=torch.Generator().manual_seed(5)) * 4
    g = torch.Generator().manual_seed(seed)
    return centres[torch.randint(0, 20, (n,), generator=g)] + torch.randn(n, 16, generator=g)


def planted_draw(pool: torch.Tensor, rate: float, g: torch.Generator, *, n_train: int, n_test: int, n_fake: int,
                 noise: float, clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``pool`` at random into train / test / fresh; each generated sample is, independently, an exact copy of
    a random training sample (probability ``rate``), a copy with Gaussian noise of norm about ``noise`` (``rate``)
    or a fresh held-out sample: the generator's copy rate is ``2 rate``. ``clamp``: keep the perturbed copies in
    [0, 1] (images). Returns train, test, fake and the kind of each fake sample (0 fresh, 1 exact, 2 perturbed)."""
    order = torch.randperm(pool.shape[0], generator=g)
    train, test = pool[order[:n_train]], pool[order[n_train : n_train + n_test]]
    fresh = pool[order[n_train + n_test :]]
    kind = torch.multinomial(torch.tensor([1 - 2 * rate, rate, rate]), n_fake, replacement=True, generator=g)
    picked = train[torch.randint(0, n_train, (n_fake,), generator=g)]
    step = torch.randn(n_fake, *pool.shape[1:], generator=g) * noise / math.sqrt(pool[0].numel())
    fake = fresh[:n_fake].clone()
    fake[kind == 1] = picked[kind == 1]
    moved = picked[kind == 2] + step[kind == 2]
    fake[kind == 2] = moved.clamp(0, 1) if clamp else moved
    return train, test, fake, kind


def nan_mean(values: list) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    arr = np.array(values, dtype=float)
    kept = arr[~np.isnan(arr)]
    return float(kept.mean()) if kept.size else math.nan


def planted_section(args) -> dict:
    draws = args.draws
    lines = ["", f"planted copies: each generated sample is an exact copy of a training sample (probability r), a "
                 f"copy with Gaussian noise (r; norm 10% of the median nearest-neighbour distance of the training "
                 f"set) or a fresh held-out sample: a copy rate of 2r; alpha = 0.01 per sample, {draws} random "
                 f"splits per row; the test set calibrates the flags", "",
             "| data | r | exact found | perturbed found | fresh flagged (chance) | copy share, mean | "
             "interval covers 2r | verdict 'copies' | AuthPct | C_T |", "|" + " --- |" * 10]
    results = {}
    pixels = digits()
    digit_sizes = dict(n_train=900, n_test=450, n_fake=440, clamp=True)
    spaces = {
        "mixture, 20 modes in 16-D": (mixture_pool(6000, 1), None, dict(n_train=3000, n_test=1500, n_fake=1500)),
        "digits, pixels": (pixels, None, digit_sizes),
        "digits, feature='digits'": (pixels.reshape(-1, 1, 8, 8), "digits", digit_sizes),
    }
    for label, (pool, feature, sizes) in spaces.items():
        sample = pool[:1000].reshape(1000, -1)
        nn = nearest_neighbours(sample, sample, 1, exclude_self=True).sq.sqrt()
        noise = 0.1 * float(nn.median())
        for rate in RATES:
            rows = []
            for d in range(draws):
                g = torch.Generator().manual_seed(10_000 * int(100 * rate) + d)
                train, test, fake, kind = planted_draw(pool, rate, g, noise=noise, **sizes)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = fastndb.memorization(train, fake, test, feature=feature, seed=d)
                flags = out.copy.cpu()
                truth = 2 * rate
                low, high = out.copy_share_interval
                rows.append({
                    "exact": float(flags[kind == 1].double().mean()) if (kind == 1).any() else math.nan,
                    "perturbed": float(flags[kind == 2].double().mean()) if (kind == 2).any() else math.nan,
                    "fresh": float(flags[kind == 0].double().mean()), "chance": out.chance_level,
                    "share": out.copy_share, "covers": low <= truth <= high, "copying": out.copying,
                    "authpct": out.authpct, "ct": math.nan if out.ct is None else out.ct,
                })
            mean = {key: nan_mean([r[key] for r in rows]) for key in rows[0]}
            results[f"{label}|{rate}"] = {"mean": mean, "draws": rows}
            pct = lambda v: "-" if math.isnan(v) else f"{100 * v:.1f}%"  # noqa: E731
            lines.append(f"| {label} | {100 * rate:.0f}% | {pct(mean['exact'])} | {pct(mean['perturbed'])} | "
                         f"{pct(mean['fresh'])} ({pct(mean['chance'])}) | {pct(mean['share'])} | "
                         f"{pct(mean['covers'])} | {pct(mean['copying'])} | {mean['authpct']:.1f} | "
                         f"{mean['ct']:+.2f} |")
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def _brute_ct(train, test, fake, t_cell, p_cell, q_cell, cells) -> float:
    num = den = 0.0
    from scipy.stats import mannwhitneyu

    for c in range(cells):
        ref = train[t_cell == c].double()
        lq = torch.cdist(fake[q_cell == c].double(), ref, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
        lp = torch.cdist(test[p_cell == c].double(), ref, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
        m, n = len(lq), len(lp)
        if m <= 20:
            continue
        u = mannwhitneyu(lq.numpy(), lp.numpy(), alternative="less").statistic
        num += n / test.shape[0] * (u - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12)
        den += n / test.shape[0]
    return num / den


def reference_section(args) -> dict:
    """C_T and AuthPct: fastndb against a float64 brute-force re-implementation of the papers' definitions, and
    against dgm-eval's own functions (given the same k-means cells for C_T, and with their own k-means)."""
    dgm = None
    if args.dgm_eval:
        sys.path.insert(0, str(Path(args.dgm_eval)))
        import authpct as dgm_authpct  # dgm-eval's file, imported from the folder given
        import ct as dgm_ct
        from scipy.stats import mannwhitneyu

        # their Zu passes (m, 1) arrays, so scipy returns a length-1 array that NumPy 2 refuses to store in a
        # scalar slot: the same test on the flattened arrays (nothing else changes)
        dgm_ct.mannwhitneyu = lambda x, y, **kw: mannwhitneyu(np.ravel(x), np.ravel(y), **kw)
        dgm = (dgm_authpct, dgm_ct)
    lines = ["", "C_T and AuthPct: fastndb against a float64 brute force of the definitions and dgm-eval's code "
                 "(compute_authpct; C_T on the same cells; compute_CTscore with its own k-means, n_init = 10)", "",
             "| data | copies | AuthPct fastndb | brute force | dgm-eval | C_T fastndb | brute force | dgm-eval C_T, "
             "same cells | dgm-eval compute_CTscore |", "|" + " --- |" * 9]
    results = {}
    pixels = digits()
    cases = {"mixture 16-D": mixture_pool(6000, 2), "digits pixels": pixels}
    for label, pool in cases.items():
        for rate in (0.0, 0.05, 0.2):
            g = torch.Generator().manual_seed(int(1000 * rate) + 7)
            n = pool.shape[0]
            sizes = dict(n_train=n // 2, n_test=n // 4, n_fake=n // 4 - 10)
            nn = nearest_neighbours(pool[:1000], pool[:1000], 1, exclude_self=True)  # flat pools here
            train, test, fake, _ = planted_draw(pool, rate, g, noise=0.1 * float(nn.sq.sqrt().median()), **sizes)
            out = fastndb.memorization(train, fake, test, seed=3)
            a, b = train.double(), fake.double()
            to_fake = torch.cdist(b, a, compute_mode="donot_use_mm_for_euclid_dist")
            own = torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist")
            own.fill_diagonal_(math.inf)
            brute_auth = 100 * float((own.min(1).values[to_fake.argmin(1)] < to_fake.min(1).values).double().mean())
            cells = fastndb.kmeans(train, 3, seed=3, distributed=False)
            centroids = cells.centroids.double()
            t_cell = cells.labels
            p_cell, q_cell = (torch.cdist(x.double(), centroids).argmin(1) for x in (test, fake))
            brute_ct = _brute_ct(train, test, fake, t_cell, p_cell, q_cell, 3)
            row = {"authpct": out.authpct, "authpct_brute": brute_auth, "ct": out.ct, "ct_brute": brute_ct}
            if dgm is not None:
                row["authpct_dgm"] = dgm[0].compute_authpct(train.numpy(), fake.numpy())
                row["ct_dgm_same_cells"] = float(dgm[1].C_T(test.numpy(), p_cell.numpy(), fake.numpy(),
                                                            q_cell.numpy(), train.numpy(), t_cell.numpy(),
                                                            tau=20 / fake.shape[0]))
                np.random.seed(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row["ct_dgm"] = float(dgm[1].compute_CTscore(train.numpy(), test.numpy(), fake.numpy()))
            results[f"{label}|{rate}"] = row
            def cell(key: str, fmt: str, row: dict = row) -> str:
                return format(row[key], fmt) if key in row else "not run"

            lines.append(f"| {label} | {100 * rate:.0f}% + {100 * rate:.0f}% | {row['authpct']:.4f} | "
                         f"{row['authpct_brute']:.4f} | {cell('authpct_dgm', '.4f')} | {row['ct']:+.6f} | "
                         f"{row['ct_brute']:+.6f} | {cell('ct_dgm_same_cells', '+.6f')} | {cell('ct_dgm', '+.4f')} |")
            print(lines[-1], flush=True)
    for other in ("authpct_brute", "authpct_dgm", "ct_brute", "ct_dgm_same_cells"):
        ours = "authpct" if other.startswith("authpct") else "ct"
        gaps = [abs(r[ours] - r[other]) for r in results.values() if other in r]
        if gaps:
            lines.append(f"largest |fastndb - {other}|: {max(gaps):.3g} over {len(gaps)} cases")
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def speed_section(args) -> dict:
    lines = ["", "speed and peak heap memory: fastndb.memorization (train N, fake N, test N / 2: three exact 2-NN "
                 "searches, AuthPct, C_T on 3 cells) against a full-matrix torch baseline of the same searches "
                 "(cdist of each pair of sets, topk of 2; float32)", "",
             "| N x D | method | seconds | peak memory | note |", "|" + " --- |" * 5]
    results = []
    torch.set_num_threads(os.cpu_count() or 1)
    rate = gemm_rate("cpu")
    lines.insert(1, f"measured float32 GEMM rate: {rate / 1e9:.0f} GFLOP/s; floor: the three searches' products, "
                    f"2 D (N^2 + N^2 + N^2 / 2) flops, at that rate")

    def record(shape, method, seconds, peak, note=""):
        results.append({"shape": shape, "method": method, "seconds": seconds, "peak_bytes": peak, "note": note})
        mem = "-" if peak is None else f"{peak / 2**20:.0f} MiB"
        sec = seconds if isinstance(seconds, str) else f"{seconds:.2f}"
        lines.append(f"| {shape} | {method} | {sec} | {mem} | {note} |")
        print(lines[-1], flush=True)

    for n, d in ((20_000, 784), (50_000, 64)):
        shape = f"{n:,} x {d}"
        g = torch.Generator().manual_seed(n)
        train, fake, test = torch.rand(n, d, generator=g), torch.rand(n, d, generator=g), torch.rand(n // 2, d,
                                                                                                   generator=g)
        fake[: n // 20] = train[: n // 20]
        began = time.perf_counter()
        out, peak = peak_memory_during(lambda a=train, b=fake, c=test: fastndb.memorization(a, b, c))
        seconds = time.perf_counter() - began
        floor = 2 * d * 2.5 * n * n / rate
        record(shape, "fastndb.memorization (tiled, exact)", seconds, peak,
               f"{out.num_copies} flagged; {floor / seconds:.2f} of the GEMM floor ({floor:.2f} s)")
        same = torch.zeros(n, d)
        began = time.perf_counter()
        _, peak = peak_memory_during(lambda a=same, b=same[: n // 2]: fastndb.memorization(a, b, alpha=0.01))
        record(shape, "fastndb.memorization, all samples identical", time.perf_counter() - began, peak,
               "the worst case")
        matrix_bytes = n * n * 4
        if 3 * matrix_bytes < 12 * 2**30:
            def full(train=train, fake=fake, test=test):
                for q, self_set in ((fake, False), (train, True), (test, False)):
                    dist = torch.cdist(q, train)
                    if self_set:
                        dist.fill_diagonal_(float("inf"))
                    dist.topk(2, dim=1, largest=False)
                    del dist
            began = time.perf_counter()
            _, peak = peak_memory_during(full)
            record(shape, "torch full matrix (cdist + topk)", time.perf_counter() - began, peak,
                   "rounded distances, no C_T or flags")
        else:
            record(shape, "torch full matrix (cdist + topk)", "not run", None,
                   f"needs the {matrix_bytes / 2**30:.1f} GiB N x N matrix and cdist's copies on a 24 GiB machine")
    return {"results": results, "lines": lines}


def intervals_section(args) -> dict:
    """AuthPct's Wilson interval is conditional on the training set: with the training and test sets fixed, fresh
    generated sets are drawn ``draws`` times and the interval is checked against the truth (AuthPct of 200,000
    generated samples). C_T's null standard deviation (the formula) against the spread of C_T over the draws."""
    lines = ["", f"AuthPct's 95% interval and C_T under 'no copies' (the generator samples like the data), training "
                 f"and test sets fixed, {args.draws} generated sets per row", "",
             "| data | generated per draw | AuthPct truth | interval covers | C_T sd, formula | C_T sd, measured | "
             "C_T one-sided alarms at 2.5% |", "|" + " --- |" * 7]
    results = {}
    for label, pool in (("mixture, 20 modes in 16-D", mixture_pool(260_000, 3)), ("digits, pixels", None)):
        if pool is None:
            pixels = digits()
            order = torch.randperm(pixels.shape[0], generator=torch.Generator().manual_seed(4))
            train, test, rest = pixels[order[:900]], pixels[order[900:1300]], pixels[order[1300:]]
            # the generator: the held-out rest (497 digits) drawn with replacement, so its AuthPct is the truth
            truth_set, m = rest, 300
        else:
            train, test, truth_set, rest = pool[:3000], pool[3000:4500], pool[4500:204_500], pool[204_500:]
            m = 1000
        truth = fastndb.memorization(train, truth_set, alpha=0.01).authpct
        covered, cts, sds = 0, [], []
        for d in range(args.draws):
            g = torch.Generator().manual_seed(d)
            fake = rest[torch.randint(0, rest.shape[0], (m,), generator=g)] if pool is None else \
                rest[torch.randperm(rest.shape[0], generator=g)[:m]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fastndb.memorization(train, fake, test, alpha=0.01)
            low, high = out.authpct_interval
            covered += low <= truth <= high
            cts.append(out.ct)
            sds.append(out.ct_null_sd)
        cts = np.array(cts)
        row = {"truth": truth, "coverage": covered / args.draws, "ct_sd_formula": float(np.mean(sds)),
               "ct_sd": float(cts.std(ddof=1)), "ct_alarms": float(np.mean(cts < -1.96 * np.array(sds)))}
        results[label] = row
        lines.append(f"| {label} | {m} | {truth:.2f} | {100 * row['coverage']:.1f}% | {row['ct_sd_formula']:.3f} | "
                     f"{row['ct_sd']:.3f} | {100 * row['ct_alarms']:.1f}% |")
        print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


SECTIONS = {"intervals": intervals_section, "planted": planted_section, "reference": reference_section,
            "speed": speed_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--dgm-eval", help="folder holding dgm-eval's ct.py and authpct.py")
    args = parser.parse_args()
    began = time.perf_counter()
    out = SECTIONS[args.section](args)
    header = (f"memorization, section {args.section}: {machine()}; {time.perf_counter() - began:.0f} s; "
              f"memorization.py {' '.join(sys.argv[1:])}")
    OUT.mkdir(exist_ok=True)
    (OUT / f"memorization_{args.section}.txt").write_text("\n".join([header, *out["lines"]]) + "\n")
    (OUT / f"memorization_{args.section}.json").write_text(json.dumps(
        {"header": header, "results": out["results"]}, indent=1, default=float))
    print(header)


if __name__ == "__main__":
    main()
