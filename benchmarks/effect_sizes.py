"""The effect sizes and the verdict, validated by simulation (issue 24's "Must show").

    python benchmarks/effect_sizes.py counts     # missing-mass bias, interval coverage, power: histograms (minutes)
    python benchmarks/effect_sizes.py pipeline   # the same through k-means bins on Gaussian mixtures (tens of min)
    python benchmarks/effect_sizes.py coverage   # the split-half intervals of precision/recall/density/coverage
    python benchmarks/effect_sizes.py null       # false alarms of the old and the new headline over null splits
    python benchmarks/effect_sizes.py duplicates # the duplicate rate's interval and the duplicate tests, null
    python benchmarks/effect_sizes.py emptied    # the emptied-bin mass's interval against its truth
    python benchmarks/effect_sizes.py small      # the missing mass's interval at few generated samples per bin
    python benchmarks/effect_sizes.py coverage_se --draws 100  # variance estimates of the coverage metrics
    python benchmarks/effect_sizes.py all

``counts``: bin histograms drawn from known shares (``K`` bins with Gamma(10) shares, the spread of k-means bins
on real data), with a planted missing mass: ``whole`` drops empty whole bins (a dropped mode that fills its own
bins), ``mixed`` drops empty a bin and then half-empty the next, alternately (modes that share bins with kept
ones); the generator's mass goes to the kept bins in proportion. The truth is exact. At the default sizes of
``fastndb.score`` for 2,500 real vs 2,500 generated samples (holdout: 1,250 reference counts, K = 62) and for
10,000 vs 10,000 (5,000 reference counts, K = 100), 500 draws each.

``pipeline``: the whole path. Real and generated samples from a mixture of 40 equal Gaussian modes in 8-D
(2.5% each); the generator drops 0, 1, 2, 4 or 12 modes (0, 2.5, 5, 10, 30% of the mass); ``fastndb.NDB`` fits
the bins on each draw's real set (default K) and scores the generated set. The truth is the missing mass over
the draw's own bins, :math:`\\sum_b (r_b - f_b)_+` with :math:`r_b = \\sum_m w_m P(b | m)` and the
generator's :math:`f_b` likewise, :math:`P(b | m)` from 2,000 fresh samples per mode.

``coverage``: the coverage metrics' intervals against their truth, three mixtures at N = 1,000 and 2,000 a side
(``--size N`` runs one size): under the null the expected coverage is known exactly (and density's is 1); else
the truth is the mean over the independent draws at full size.

``null``: the headline of the report before this change (the union of five signs; its rules copied below as
:func:`old_headline`) against the new verdict, over random splits of one data set into "real" and "fake":
scikit-learn's digits (pixels, and ``feature="digits"``) at two sizes and two K, and a Gaussian mixture; the
report's settings (coverage on all samples, the birthday test on up to 1,000 with the 1% real nearest-neighbour
threshold against as many real samples).

Writes benchmarks/results/effect_sizes_<section>.{txt,json}.
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
from _common import cpu_name

import fastndb
from fastndb._core.options import default_num_bins
from fastndb._core.statistics import compare_histograms
from fastndb._core.verdict import binomial_tail, compare_duplicates, decide, duplicate_permutation_test

OUT = Path(__file__).resolve().parent / "results"
TARGETS = (0.0, 0.02, 0.05, 0.10, 0.30)
TOLERANCES = (0.01, 0.02)
SIZES = ({"label": "2,500 vs 2,500", "num_bins": 62, "num_real": 1250, "num_fake": 2500},
         {"label": "10,000 vs 10,000", "num_bins": 100, "num_real": 5000, "num_fake": 10000})


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}"


def planted(k: int, target: float, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    """True real and generated bin shares with about ``target`` of the real mass missing, and the exact truth."""
    r = rng.gamma(10.0, size=k)
    r /= r.sum()
    f = r.copy()
    if target > 0:
        need = target
        for i, b in enumerate(rng.permutation(k)):
            take = r[b] * (1.0 if kind == "whole" or i % 2 == 0 else 0.5)
            if take > 1.5 * need and i > 0:
                break
            f[b] -= take
            need -= take
            if need <= 0:
                break
        kept = f >= r - 1e-15
        f[kept] += (1 - f.sum()) * r[kept] / r[kept].sum()
    f /= f.sum()
    return r, f, float(np.clip(r - f, 0, None).sum())


def summarise(rows: list[dict]) -> dict:
    truth = np.array([r["truth"] for r in rows])
    est = np.array([r["estimate"] for r in rows])
    low = np.array([r["low"] for r in rows])
    high = np.array([r["high"] for r in rows])
    out = {"draws": len(rows), "truth": float(truth.mean()), "bias": float((est - truth).mean()),
           "bias_se": float((est - truth).std(ddof=1) / math.sqrt(len(rows))), "sd": float(est.std(ddof=1)),
           "coverage": float(np.mean((low <= truth + 1e-9) & (truth - 1e-9 <= high))),
           "below": float(np.mean(high < truth - 1e-9)), "above": float(np.mean(low > truth + 1e-9)),
           "width": float((high - low).mean()), "excludes_0": float(np.mean(low > 0))}
    for tol in TOLERANCES:
        out[f"missing_at_{tol:g}"] = float(np.mean([r["differs"] and r["low"] > tol for r in rows]))
    if "plug_in" in rows[0]:
        out["plug_in_bias"] = float(np.mean([r["plug_in"] for r in rows]) - truth.mean())
    if "bins_covered" in rows[0]:
        out["bin_interval_coverage"] = float(np.mean([r["bins_covered"] for r in rows]))
    return out


def row_text(label: str, s: dict) -> str:
    tol = " | ".join(f"{100 * s[f'missing_at_{t:g}']:.0f}%" for t in TOLERANCES)
    extra = f" | {100 * s['bin_interval_coverage']:.1f}%" if "bin_interval_coverage" in s else ""
    return (f"| {label} | {100 * s['truth']:.1f}% | {s['bias']:+.4f} ({s['bias_se']:.4f}) | {s['sd']:.4f} | "
            f"{100 * s['coverage']:.1f}% | {100 * s['below']:.1f}% / {100 * s['above']:.1f}% | {s['width']:.3f} | "
            f"{tol}{extra} |")


HEADER = ("| setting | truth | bias (se) | sd | coverage | truth above / below the interval | width | "
          + " | ".join(f"decided missing at tol {t:g}" for t in TOLERANCES))


def counts_section(draws: int) -> dict:
    results, lines = {}, []
    for size in SIZES:
        for kind in ("whole", "mixed"):
            lines += ["", f"{size['label']} (K = {size['num_bins']}, {size['num_real']} reference and "
                      f"{size['num_fake']} generated counts), {kind} drops, {draws} draws", "",
                      HEADER + " | per-bin difference intervals covering |", "|" + " --- |" * 10]
            for target in TARGETS:
                rng = np.random.default_rng(int(1000 * target) + 7)
                rows = []
                for d in range(draws):
                    r, f, truth = planted(size["num_bins"], target, rng, kind)
                    real = torch.from_numpy(rng.multinomial(size["num_real"], r))
                    fake = torch.from_numpy(rng.multinomial(size["num_fake"], f))
                    result = compare_histograms(real, fake, alpha=0.05, seed=d)
                    verdict = decide(result)
                    m = result.missing
                    diff = torch.from_numpy(f - r)
                    covered = ((result.difference_low <= diff + 1e-12) & (diff - 1e-12 <= result.difference_high))
                    rows.append({"truth": truth, "estimate": m.estimate, "low": m.low, "high": m.high,
                                 "plug_in": m.plug_in, "differs": verdict.differs,
                                 "bins_covered": float(covered.double().mean())})
                s = summarise(rows)
                results[f"{size['label']}|{kind}|{target}"] = s
                lines.append(row_text(f"{100 * target:.0f}% planted", s))
                print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def mixture(num_modes: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(num_modes, dim, generator=torch.Generator().manual_seed(seed)) * 6.0


def draw(means: torch.Tensor, weights: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    which = torch.multinomial(weights, n, replacement=True, generator=g)
    return means[which] + torch.randn(n, means.shape[1], generator=g)


def pipeline_section(draws: int) -> dict:
    num_modes, dim = 40, 8
    means = mixture(num_modes, dim, 5)
    results, lines = {}, []
    for size in ({"label": "2,500 vs 2,500", "n": 2500}, {"label": "10,000 vs 10,000", "n": 10000}):
        lines += ["", f"{size['label']}: mixture of {num_modes} Gaussian modes in {dim}-D, default K, {draws} draws",
                  "", HEADER + " |", "|" + " --- |" * 9]
        for dropped in (0, 1, 2, 4, 12):
            rows = []
            began = time.perf_counter()
            for d in range(draws):
                g = torch.Generator().manual_seed(100_000 * dropped + d)
                real_w = torch.full((num_modes,), 1.0 / num_modes, dtype=torch.float64)
                fake_w = real_w.clone()
                fake_w[torch.randperm(num_modes, generator=g)[:dropped]] = 0
                fake_w /= fake_w.sum()
                real = draw(means, real_w, size["n"], g)
                fake = draw(means, fake_w, size["n"], g)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ndb = fastndb.NDB(default_num_bins(size["n"], num_fake=size["n"]), seed=d, progress=False).fit(real)
                    result = ndb.score(fake)
                per_mode = torch.stack([
                    torch.bincount(ndb.assign(means[m] + torch.randn(2000, dim, generator=g)).cpu(),
                                   minlength=result.num_bins).double() / 2000 for m in range(num_modes)])
                truth = float(((real_w @ per_mode) - (fake_w @ per_mode)).clamp_min(0).sum())
                verdict = decide(result)
                m = result.missing
                rows.append({"truth": truth, "estimate": m.estimate, "low": m.low, "high": m.high,
                             "plug_in": m.plug_in, "differs": verdict.differs})
            s = summarise(rows)
            s["seconds_per_draw"] = (time.perf_counter() - began) / draws
            results[f"{size['label']}|{dropped}"] = s
            lines.append(row_text(f"{dropped} of {num_modes} modes dropped", s))
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


COVERAGE_SETTINGS = ((20, 8, 0), (8, 32, 0), (20, 8, 4))  # modes, dimensions, modes the generator drops
COVERAGE_SIZES = (1000, 2000)


def coverage_setting(num_modes: int, dim: int, dropped: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mixture's means and the real and generated mode weights (equal, the first ``dropped`` modes emptied)."""
    real_w = torch.full((num_modes,), 1.0 / num_modes, dtype=torch.float64)
    fake_w = real_w.clone()
    fake_w[:dropped] = 0
    return mixture(num_modes, dim, 9), real_w, fake_w / fake_w.sum()


def coverage_section(draws: int, sizes: tuple[int, ...] = COVERAGE_SIZES) -> dict:
    """The four intervals of ``fastndb.prdc`` (split halves, 10 halvings) against their truth, per setting and size:
    the exact chance level for coverage and 1 for density under the null, else the mean over the draws (its own
    error is the metric's sd / sqrt(draws), a twentieth of the interval's half-width at 500 draws)."""
    names = ("precision", "recall", "density", "coverage")
    lines = ["", f"coverage metrics (k = 5), N real vs N generated samples from Gaussian mixtures, {draws} draws per "
             "row; 95% intervals by split halves (10 random halvings of both sets)", "",
             "| N | setting | metric | truth | mean | interval covers the truth | mean width |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    results = {}
    for n in sizes:
        for num_modes, dim, dropped in COVERAGE_SETTINGS:
            means, real_w, fake_w = coverage_setting(num_modes, dim, dropped)
            values = {name: [] for name in names}
            intervals = {name: [] for name in names}
            for d in range(draws):
                g = torch.Generator().manual_seed(7_000 + 1000 * dropped + d)
                out = fastndb.prdc(draw(means, real_w, n, g), draw(means, fake_w, n, g), seed=d)
                for name in names:
                    values[name].append(getattr(out, name))
                    intervals[name].append(getattr(out, f"{name}_interval"))
                null = out.expected_null_coverage
            label = f"{num_modes} modes in {dim}-D, {dropped} dropped"
            for name in names:
                truth = (null if dropped == 0 and name == "coverage" else
                         1.0 if dropped == 0 and name == "density" else float(np.mean(values[name])))
                covered = float(np.mean([lo <= truth <= hi for lo, hi in intervals[name]]))
                width = float(np.mean([hi - lo for lo, hi in intervals[name]]))
                results[f"{n}|{label}|{name}"] = {"truth": truth, "mean": float(np.mean(values[name])),
                                                  "sd": float(np.std(values[name], ddof=1)), "covered": covered,
                                                  "width": width}
                lines.append(f"| {n} | {label} | {name} | {truth:.4f} | {np.mean(values[name]):.4f} | "
                             f"{100 * covered:.1f}% | {width:.4f} |")
                print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def old_headline(ndb, coverage, duplicates: int | None, null_duplicates: int | None) -> bool:
    """Whether the report's verdict before issue 24 headlined "Different from the real data" (its rules, copied)."""
    tail = binomial_tail(ndb.ndb, ndb.num_bins, ndb.alpha)
    under = int((ndb.different & (ndb.z < 0)).sum())
    far_ndb = ndb.ndb > ndb.expected_false_positives and tail < 0.01
    beyond = int(((ndb.p_values < ndb.alpha / ndb.num_bins) & (ndb.z < 0)).sum())
    js_ratio = ndb.js / ndb.expected_null_js if ndb.expected_null_js > 0 else math.inf
    findings = bool(beyond and not (far_ndb and under)) or (far_ndb and under > 0) or (far_ndb and ndb.ndb > under)
    findings |= js_ratio > 3 and not far_ndb
    if coverage is not None:
        null = coverage.expected_null_coverage
        findings |= (null - coverage.coverage) / math.sqrt(max(null * (1 - null), 1e-12) / coverage.num_real) > 3
    if duplicates is not None and null_duplicates is not None:
        findings |= duplicates > 3 * max(null_duplicates, 1)
    return findings


def null_section(splits: int) -> dict:
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images.reshape(-1, 64).astype(np.float32) / 16)
    images = digits.reshape(-1, 1, 8, 8)
    from fastndb.demo.synthetic import gaussian_mixture

    gm = torch.from_numpy(gaussian_mixture(6000, 16, num_modes=25, seed=3))
    settings = [
        {"label": "digits pixels, 1,000 vs 797, K = 10", "data": digits, "real": 1000, "k": 10, "feature": None},
        {"label": "digits pixels, 1,000 vs 797, K = 25 (default)", "data": digits, "real": 1000, "k": None,
         "feature": None},
        {"label": "digits pixels, 600 vs 600, K = 15 (default)", "data": digits, "real": 600, "fake": 600, "k": None,
         "feature": None},
        {"label": "digits, feature=\"digits\", 1,000 vs 797, K = 25", "data": images, "real": 1000, "k": None,
         "feature": "digits"},
        {"label": "Gaussian mixture (25 modes, 16-D), 2,500 vs 2,500, K = 62", "data": gm[:5000], "real": 2500,
         "k": None, "feature": None},
    ]
    lines = ["", f"headline false alarms over {splits} random null splits (alpha = 0.05; the report's settings: "
             "coverage on all samples, birthday test on up to 1,000)", "",
             "| data | old headline \"Different\" | new: differs (combined test) | new: decided \"missing\" "
             "(tol 0.01) | new: \"within tolerance\" | new: inconclusive | missing-mass interval excludes 0 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    results = {}
    for setting in settings:
        x = setting["data"]
        counts = {"old": 0, "differs": 0, "missing": 0, "within tolerance": 0, "inconclusive": 0, "excludes_0": 0}
        began = time.perf_counter()
        for s in range(splits):
            order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(s))
            real = x[order[:setting["real"]]]
            fake = x[order[setting["real"]:setting["real"] + setting.get("fake", x.shape[0])]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                k = setting["k"] or default_num_bins(real.shape[0], num_fake=fake.shape[0])
                ndb = fastndb.NDB(k, seed=s, feature=setting["feature"], progress=False).fit(real)
                result = ndb.score(fake)
                cov = fastndb.prdc(real, fake, seed=s, feature=setting["feature"])
                size = min(1000, real.shape[0], fake.shape[0])
                threshold = fastndb.duplicate_threshold(real, num_samples=size, seed=s, feature=setting["feature"])
                pairs = fastndb.birthday(fake[:size], threshold=threshold, feature=setting["feature"])
                null_dups = fastndb.birthday(real[-size:], threshold=threshold,
                                             feature=setting["feature"]).num_duplicates
            counts["old"] += old_headline(result, cov, pairs.num_duplicates, null_dups)
            permutation_p = duplicate_permutation_test(fake[:size], real[-size:], threshold, seed=s,
                                                       feature=setting["feature"])
            verdict = decide(result, coverage=cov, duplicates=compare_duplicates(pairs, null_dups, size,
                                                                                 permutation_p=permutation_p))
            counts["differs"] += verdict.differs
            counts[verdict.decision] += 1
            counts["excludes_0"] += result.missing.low > 0
        rates = {key: value / splits for key, value in counts.items()}
        rates["seconds_per_split"] = (time.perf_counter() - began) / splits
        results[setting["label"]] = rates
        lines.append(f"| {setting['label']} | {100 * rates['old']:.1f}% | {100 * rates['differs']:.1f}% | "
                     f"{100 * rates['missing']:.1f}% | {100 * rates['within tolerance']:.1f}% | "
                     f"{100 * rates['inconclusive']:.1f}% | {100 * rates['excludes_0']:.1f}% |")
        print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def duplicates_section(draws: int) -> dict:
    """The duplicate rate's Garwood interval and the duplicate tests under the null: samples are draws from
    ``atoms`` far-apart points (jitter far below the threshold), uniform or Zipf-weighted (clusters of copies), so
    the true duplicate rate is exactly :math:`\\sum_a w_a^2`."""
    s_size, atoms, dim = 500, 5000, 8
    centres = torch.randn(atoms, dim, generator=torch.Generator().manual_seed(1)) * 100
    lines = ["", f"duplicates among {s_size} samples drawn from {atoms} atoms in {dim}-D (jitter 1e-3, threshold 0.1), "
             f"{draws} draws; fake and real drawn alike (the null)", "",
             "| atom weights | true rate | mean count | Garwood interval covers the rate | Poisson test p < 0.05 | "
             "permutation test p < 0.05 |", "| --- | --- | --- | --- | --- | --- |"]
    results = {}
    for label, weights in (("uniform", torch.ones(atoms, dtype=torch.float64)),
                           ("Zipf (clusters of copies)", 1.0 / torch.arange(1, atoms + 1, dtype=torch.float64))):
        weights = weights / weights.sum()
        truth = float((weights**2).sum())
        covered = poisson_rejects = permutation_rejects = 0
        counts = []
        for d in range(draws):
            g = torch.Generator().manual_seed(20_000 + d)
            fake, real = (centres[torch.multinomial(weights, s_size, replacement=True, generator=g)]
                          + 1e-3 * torch.randn(s_size, dim, generator=g) for _ in range(2))
            fb, rb = fastndb.birthday(fake, threshold=0.1), fastndb.birthday(real, threshold=0.1)
            low, high = fb.duplicate_rate_interval
            covered += low <= truth <= high
            counts.append(fb.num_duplicates)
            poisson_rejects += compare_duplicates(fb, rb.num_duplicates, s_size).p_value < 0.05
            permutation_rejects += duplicate_permutation_test(fake, real, 0.1, seed=d, draws=999) < 0.05
        row = {"truth": truth, "mean_count": float(np.mean(counts)), "covered": covered / draws,
               "poisson_rejects": poisson_rejects / draws, "permutation_rejects": permutation_rejects / draws}
        results[label] = row
        lines.append(f"| {label} | {truth:.3g} | {row['mean_count']:.1f} | {100 * row['covered']:.1f}% | "
                     f"{100 * row['poisson_rejects']:.1f}% | {100 * row['permutation_rejects']:.1f}% |")
        print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def emptied_section(draws: int) -> dict:
    """The emptied-bin mass and its Wilson interval against its truth: the real mass of the bins whose generated
    share is below a quarter of their real share (the rule's population version)."""
    from fastndb._core.effects import missing_mass

    results, lines = {}, []
    for size in SIZES:
        for kind in ("whole", "mixed"):
            lines += ["", f"{size['label']} (K = {size['num_bins']}), {kind} drops, {draws} draws", "",
                      "| planted | emptied mass (truth) | mean estimate | interval covers | mean width |",
                      "| --- | --- | --- | --- | --- |"]
            for target in TARGETS:
                rng = np.random.default_rng(int(1000 * target) + 11)
                truths, estimates, covered, widths = [], [], 0, []
                for d in range(draws):
                    r, f, _ = planted(size["num_bins"], target, rng, kind)
                    truth = float(r[f < 0.25 * r].sum())
                    m = missing_mass(torch.from_numpy(rng.multinomial(size["num_real"], r)),
                                     torch.from_numpy(rng.multinomial(size["num_fake"], f)), seed=d)
                    truths.append(truth)
                    estimates.append(m.emptied_mass)
                    covered += m.emptied_low - 1e-12 <= truth <= m.emptied_high + 1e-12
                    widths.append(m.emptied_high - m.emptied_low)
                row = {"truth": float(np.mean(truths)), "estimate": float(np.mean(estimates)),
                       "covered": covered / draws, "width": float(np.mean(widths))}
                results[f"{size['label']}|{kind}|{target}"] = row
                lines.append(f"| {100 * target:.0f}% | {row['truth']:.4f} | {row['estimate']:.4f} | "
                             f"{100 * row['covered']:.1f}% | {row['width']:.4f} |")
                print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def small_section(draws: int) -> dict:
    """The missing mass's interval at small sample sizes (few generated samples per bin), where the score interval
    gives way to the distribution-free one below 10 samples per bin: whole-bin drops of equal bins."""
    from fastndb._core.effects import missing_mass

    results, lines = {}, []
    for k in (10, 50):
        lines += ["", f"K = {k} equal bins, {20 * k} reference counts, whole-bin drops, {draws} draws", "",
                  "| generated samples | per bin | planted 0 | planted 10% | planted 30% | mean width at 30% |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for n_f in (k, 2 * k, 5 * k, 10 * k, 20 * k, 100 * k):
            rng = np.random.default_rng(n_f + k)
            cells, width = [], 0.0
            for target in (0.0, 0.1, 0.3):
                r = np.full(k, 1.0 / k)
                f = r.copy()
                f[: round(target * k)] = 0
                f /= f.sum()
                truth = float(np.clip(r - f, 0, None).sum())
                covered = 0
                for d in range(draws):
                    m = missing_mass(torch.from_numpy(rng.multinomial(20 * k, r)),
                                     torch.from_numpy(rng.multinomial(n_f, f)), seed=d)
                    covered += m.low - 1e-12 <= truth <= m.high + 1e-12
                    width += (m.high - m.low) / draws if target == 0.3 else 0.0
                cells.append(covered / draws)
            results[f"{k}|{n_f}"] = {"coverage": cells, "width_30": width}
            lines.append(f"| {n_f} | {n_f / k:.0f} | " + " | ".join(f"{100 * c:.1f}%" for c in cells)
                         + f" | {width:.3f} |")
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def coverage_se_section(draws: int) -> dict:
    """How well variance estimates of the coverage metrics match their sampling spread: the ratio of the mean
    standard error to the empirical standard deviation over ``draws`` draws, for the delete-a-group jackknife
    (10 groups, radii recomputed; shipped before split halves), half-sampling (20 random halves of both sets,
    their spread taken as the full-size standard error) and split halves as shipped (10 halvings, independent
    half-size pairs, on the angular scale for precision, recall and coverage: their ratios are on that scale). A
    ratio above 1 is an interval too wide (the 95% interval then covers more than 95%)."""
    from fastndb._core.coverage import angular
    from fastndb.kernels.neighbours import ball_counts, kth_neighbour_sq

    k, groups, halves = 5, 10, 20
    names = ("precision", "recall", "density", "coverage")

    def four(a, b):
        balls = ball_counts(a, kth_neighbour_sq(a, k), b, kth_neighbour_sq(b, k))
        return [float((balls.b_count > 0).double().mean()), float(balls.a_in_b.double().mean()),
                float(balls.b_count.double().sum() / (k * b.shape[0])), float(balls.a_any.double().mean())]

    def on_scale(rows):
        return angular(torch.tensor(rows, dtype=torch.float64)).numpy()

    results, lines = {}, ["", f"ratio of the mean standard error to the empirical sd, k = {k}, n = 1,000 a side, "
                              f"{draws} draws", "",
                          "| setting | method | " + " | ".join(names) + " |", "|" + " --- |" * 6]
    for num_modes, dim, dropped in COVERAGE_SETTINGS:
        means, real_w, fake_w = coverage_setting(num_modes, dim, dropped)
        values, ses = [], {"jackknife": [], "half-sampling": [], "split halves (shipped)": []}
        for d in range(draws):
            g = torch.Generator().manual_seed(7_000 + 1000 * dropped + d)
            x, y = draw(means, real_w, 1000, g), draw(means, fake_w, 1000, g)
            out = fastndb.prdc(x, y, nearest_k=k, seed=d)
            values.append([getattr(out, name) for name in names])
            ses["split halves (shipped)"].append(list(out.interval_se))
            split = torch.Generator().manual_seed(d)
            rg, fg = torch.randperm(1000, generator=split) % groups, torch.randperm(1000, generator=split) % groups
            reps = on_scale([four(x[rg != j], y[fg != j]) for j in range(groups)])
            ses["jackknife"].append(np.sqrt((groups - 1) / groups * ((reps - reps.mean(0)) ** 2).sum(0)))
            reps = on_scale([four(x[torch.randperm(1000, generator=split)[:500]],
                                  y[torch.randperm(1000, generator=split)[:500]]) for _ in range(halves)])
            ses["half-sampling"].append(reps.std(0, ddof=1))
        sd = on_scale(values).std(0, ddof=1)
        label = f"{num_modes} modes in {dim}-D, {dropped} dropped"
        for method, rows in ses.items():
            ratio = np.array(rows).mean(0) / sd
            results[f"{label}|{method}"] = dict(zip(names, ratio.tolist(), strict=True))
            lines.append(f"| {label} | {method} | " + " | ".join(f"{r:.2f}" for r in ratio) + " |")
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


SECTIONS = {"counts": counts_section, "pipeline": pipeline_section, "coverage": coverage_section,
            "null": null_section, "duplicates": duplicates_section, "emptied": emptied_section,
            "small": small_section, "coverage_se": coverage_se_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=(*SECTIONS, "all"))
    parser.add_argument("--draws", type=int, help="draws (splits for null); default 500, pipeline 500, null 200")
    parser.add_argument("--size", type=int, help="coverage: this N alone (results effect_sizes_coverage_<N>)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    for name in SECTIONS if args.section == "all" else (args.section,):
        draws = args.draws or {"null": 200, "duplicates": 300}.get(name, 500)
        began = time.perf_counter()
        if name == "coverage" and args.size:
            out = coverage_section(draws, (args.size,))
            name = f"coverage_{args.size}"
        else:
            out = SECTIONS[name](draws)
        header = f"effect sizes, section {name}: {machine()}; {time.perf_counter() - began:.0f} s; {' '.join(sys.argv)}"
        (OUT / f"effect_sizes_{name}.txt").write_text("\n".join([header, *out["lines"]]) + "\n")
        (OUT / f"effect_sizes_{name}.json").write_text(json.dumps({"machine": machine(), "draws": draws,
                                                                    "results": out["results"]}, indent=1))


if __name__ == "__main__":
    main()
