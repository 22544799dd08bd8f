"""Mode counts and missing modes, validated (issue 27's "Must show"). A script.

    python benchmarks/modes.py mixtures      # separated Gaussian mixtures, M = 1 ... 1,000; unequal weights
    python benchmarks/modes.py exactness     # tiled vs float64 full matrix; Fourier Vendi error against r
    python benchmarks/modes.py intervals     # coverage of the RKE count's and the ratio's 95% intervals
    python benchmarks/modes.py bandwidth     # the counts against the bandwidth on digits and mixtures
    python benchmarks/modes.py missing       # digits: oracle drops and a DCGAN trained without 3s and 8s
    python benchmarks/modes.py ground_truth  # ring and grid GANs: Spearman with the modes captured
    python benchmarks/modes.py stacked       # stacked digits (1,000 modes), quick runs: the same
    python benchmarks/modes.py speed         # 20,000 x 784 and 50,000 x 64 against baselines
    python benchmarks/modes.py sharded       # every pairwise metric split between 1 and 2 gloo processes

Writes benchmarks/results/modes_<section>.{txt,json}.
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
from _common import cpu_name, peak_memory_during

import fastndb
from fastndb._core.modes import (
    CURVE_STEPS,
    count_curve,
    differential_bandwidth,
    plateau_bandwidth,
    rke_count,
    vendi_count,
)

OUT = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}"


def mixture(num_modes: int, dim: int, n: int, seed: int, *, separation: float = 200.0, spread: float = 1.0,
            weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_modes, dim, generator=g, dtype=torch.float64) * separation
    w = torch.full((num_modes,), 1.0 / num_modes, dtype=torch.float64) if weights is None else weights
    labels = torch.multinomial(w, n, replacement=True, generator=g)
    return (centres[labels] + spread * torch.randn(n, dim, generator=g, dtype=torch.float64)).float(), centres


def expected_k2(centres: torch.Tensor, weights: torch.Tensor, spread: float, sigma: float) -> float:
    """:math:`E[k(X, X')^2]` for a mixture of isotropic Gaussians: X - X' ~ N(mu_a - mu_b, 2 s^2 I), so
    E exp(-|Z|^2 / sigma^2) = (1 + 4 s^2 / sigma^2)^(-d/2) exp(-|mu_a - mu_b|^2 / (sigma^2 + 4 s^2))."""
    d = centres.shape[1]
    gaps = torch.cdist(centres, centres) ** 2
    pair = (1 + 4 * spread**2 / sigma**2) ** (-d / 2) * torch.exp(-gaps / (sigma**2 + 4 * spread**2))
    return float(weights @ pair @ weights)


def mixtures_section(args) -> dict:
    lines = ["", "separated Gaussian mixtures (centres N(0, 200^2 I), modes N(centre, I), labels drawn iid), the "
             "plateau bandwidth; RKE count with its 95% interval, the published estimator (with the diagonal), "
             "Vendi exact on 2,048 samples and from 1,024 random Fourier frequencies on all", "",
             "| M | weights | D | n | bandwidth | RKE count (95% interval) | target 1 / sum w^2 | within 10% | "
             "published | Vendi, exact (2,048) | Vendi, Fourier (all; r = 4,096 for M = 1,000) | "
             "Vendi target exp H(w) | seconds |", "|" + " --- |" * 13]
    results = []
    cases = [(m, "equal", d) for m in (1, 8, 25, 100, 1000) for d in (8, 32)]
    cases += [(m, "Zipf", 8) for m in (8, 25, 100)]
    for m, kind, d in cases:
        n = min(max(20 * m, 2000), 20_000)
        w = None if kind == "equal" else (1 / torch.arange(1, m + 1, dtype=torch.float64))
        if w is not None:
            w = w / w.sum()
        x, _ = mixture(m, d, n, 1000 * m + d, weights=w)
        target = m if w is None else 1 / float((w**2).sum())
        began = time.perf_counter()
        sigma = plateau_bandwidth(x)
        count = rke_count(x, sigma)
        exact, _ = vendi_count(x[:2048], sigma)
        fourier, _ = vendi_count(x, sigma, exact_limit=0, num_features=4096 if m >= 1000 else 1024)
        probabilities = torch.full((m,), 1.0 / m, dtype=torch.float64) if w is None else w
        vendi_target = float(torch.exp(-(probabilities * probabilities.log()).sum()))
        seconds = time.perf_counter() - began
        row = {"modes": m, "weights": kind, "dim": d, "n": n, "bandwidth": sigma, "count": count.count,
               "low": count.low, "high": count.high, "target": target, "published": count.published,
               "vendi_exact_2048": exact, "vendi_fourier": fourier, "vendi_target": vendi_target, "seconds": seconds}
        results.append(row)
        lines.append(f"| {m} | {kind} | {d} | {n:,} | {sigma:.3g} | {count.count:.4g} ({count.low:.4g}-"
                     f"{count.high:.4g}) | {target:.4g} | {'yes' if abs(count.count / target - 1) <= 0.1 else 'no'} | "
                     f"{count.published:.4g} | {exact:.4g} | {fourier:.4g} | {vendi_target:.4g} | {seconds:.1f} |")
        print(lines[-1], flush=True)
    same = torch.full((500, 16), 0.25)
    ident = rke_count(same, plateau_bandwidth(same))
    lines += ["", f"500 identical samples: RKE count {ident.count:g} ({ident.low:g}-{ident.high:g}), "
                  f"Vendi {vendi_count(same, 1.0)[0]:.6g}"]
    return {"results": results, "identical": ident.count, "lines": lines}


def exactness_section(args) -> dict:
    lines = ["", "the tiled RKE sum against a float64 full-matrix numpy reference (relative difference of the count)",
             "",
             "| data | n x D | input dtype | block rows | relative difference |", "|" + " --- |" * 5]
    results: dict = {"exact": [], "fourier": []}
    for label, x, sigma in (("N(0, I)", torch.randn(3000, 64, generator=torch.Generator().manual_seed(0),
                                                   dtype=torch.float64), 8.0),
                            ("25-mode mixture", mixture(25, 8, 3000, 1, separation=5.0)[0].double(), 4.0)):
        xn = x.numpy()
        sq = (xn**2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * xn @ xn.T, 0)
        k2 = np.exp(-d2 / sigma**2)
        np.fill_diagonal(k2, 0)
        reference = x.shape[0] * (x.shape[0] - 1) / k2.sum()
        for dtype in (torch.float64, torch.float32):
            for block in (256, 2048):
                count = rke_count(x.to(dtype), sigma, block_rows=block).count
                rel = abs(count - reference) / reference
                results["exact"].append({"data": label, "dtype": str(dtype), "block": block, "relative": rel})
                lines.append(f"| {label} | {x.shape[0]:,} x {x.shape[1]} | {str(dtype)[6:]} | {block} | {rel:.2e} |")
                print(lines[-1], flush=True)
    lines += ["", "Vendi from r random Fourier frequencies (2r features) against the exact Vendi count, mean "
                  "relative error over 3 seeds of the frequencies", "",
              "| data | n | exact | r = 64 | r = 256 | r = 1,024 | r = 2,048 |", "|" + " --- |" * 7]
    from fastndb._core.digits_net import load_digits_net
    from fastndb.demo.runner import load_digits_tensor

    images, _ = load_digits_tensor()
    net = load_digits_net()
    with torch.no_grad():
        digits_features = net.features(images.reshape(-1, 1, 8, 8)).double()
    for label, x in (("25-mode mixture, D = 8", mixture(25, 8, 2000, 2, separation=5.0)[0].double()),
                     ("digits features, D = 64", digits_features)):
        sigma = plateau_bandwidth(x) / 8  # a scale with structure: the count well above 1
        exact, _ = vendi_count(x, sigma, exact_limit=10**6)
        errors = []
        for r in (64, 256, 1024, 2048):
            values = [vendi_count(x, sigma, num_features=r, exact_limit=0, seed=s)[0] for s in range(3)]
            errors.append(float(np.mean([abs(v - exact) / exact for v in values])))
        results["fourier"].append({"data": label, "n": x.shape[0], "exact": exact, "errors": errors})
        lines.append(f"| {label} | {x.shape[0]:,} | {exact:.4g} | " + " | ".join(f"{e:.1%}" for e in errors) + " |")
        print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def intervals_section(args) -> dict:
    draws = args.draws
    lines = ["", f"95% interval coverage over {draws} draws per row; truth 1 / E[k(X, X')^2] from the mixture's "
                 "closed form; ratio rows: fake from the same mixture (truth 1) or with 2 of 8 modes dropped", "",
             "| setting | n | truth | mean count | coverage | below / above | mean log-se / sd of log count |",
             "|" + " --- |" * 7]
    results = []
    settings = [("8 separated modes, D = 8, sigma = 10", 8, 8, 50.0, 10.0),
                ("10 overlapping modes, D = 8, sigma = 2", 10, 8, 2.0, 2.0),
                ("one Gaussian, D = 32, sigma = 4", 1, 32, 0.0, 4.0)]
    for label, m, d, separation, sigma in settings:
        g = torch.Generator().manual_seed(m * d)
        centres = torch.randn(m, d, generator=g, dtype=torch.float64) * separation
        w = torch.full((m,), 1 / m, dtype=torch.float64)
        truth = 1 / expected_k2(centres, w, 1.0, sigma)
        for n in (500, 2000):
            counts, covered, below, above, ses = [], 0, 0, 0, []
            for _ in range(draws):
                labels = torch.multinomial(w, n, replacement=True, generator=g)
                x = centres[labels] + torch.randn(n, d, generator=g, dtype=torch.float64)
                out = rke_count(x.float(), sigma)
                counts.append(out.count)
                ses.append(out.log_se)
                covered += out.low <= truth <= out.high
                below += out.high < truth
                above += out.low > truth
            logs = np.log(counts)
            row = {"setting": label, "n": n, "truth": truth, "mean": float(np.mean(counts)),
                   "coverage": covered / draws,
                   "below": below / draws, "above": above / draws, "se_ratio": float(np.mean(ses) / logs.std(ddof=1))}
            results.append(row)
            lines.append(f"| {label} | {n:,} | {truth:.4g} | {row['mean']:.4g} | {100 * row['coverage']:.1f}% | "
                         f"{100 * row['below']:.1f}% / {100 * row['above']:.1f}% | {row['se_ratio']:.2f} |")
            print(lines[-1], flush=True)
    # the ratio: same mixture (truth 1) and 2 of 8 modes dropped (truth from the closed form)
    g = torch.Generator().manual_seed(99)
    centres = torch.randn(8, 8, generator=g, dtype=torch.float64) * 50
    w = torch.full((8,), 1 / 8, dtype=torch.float64)
    for label, fake_w in (("ratio, fake like real", w), ("ratio, 2 of 8 modes dropped",
                                                         torch.tensor([0, 0] + [1 / 6] * 6, dtype=torch.float64))):
        truth = expected_k2(centres, w, 1.0, 10.0) / expected_k2(centres, fake_w, 1.0, 10.0)
        for n in (500, 2000):
            covered, values = 0, []
            for _ in range(draws):
                x = centres[torch.multinomial(w, n, True, generator=g)] + torch.randn(n, 8, generator=g,
                                                                                      dtype=torch.float64)
                y = centres[torch.multinomial(fake_w, n, True, generator=g)] + torch.randn(n, 8, generator=g,
                                                                                           dtype=torch.float64)
                a, b = rke_count(x, 10.0), rke_count(y, 10.0)
                ratio, se = b.count / a.count, math.hypot(a.log_se, b.log_se)
                covered += ratio * math.exp(-1.96 * se) <= truth <= ratio * math.exp(1.96 * se)
                values.append(ratio)
            row = {"setting": label, "n": n, "truth": truth, "mean": float(np.mean(values)),
                   "coverage": covered / draws}
            results.append(row)
            lines.append(f"| {label} | {n:,} | {truth:.4g} | {row['mean']:.4g} | {100 * row['coverage']:.1f}% | | |")
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def bandwidth_section(args) -> dict:
    from fastndb._core.digits_net import load_digits_net
    from fastndb._core.modes import count_curve
    from fastndb.demo.runner import load_digits_tensor

    images, _ = load_digits_tensor()
    with torch.no_grad():
        features = load_digits_net().features(images.reshape(-1, 1, 8, 8))
    sets = {"digits, pixels (64)": images.reshape(-1, 64), "digits, digits network (64)": features,
            "8 separated modes, D = 8": mixture(8, 8, 2000, 3)[0], "one Gaussian, D = 32": torch.randn(
                2000, 32, generator=torch.Generator().manual_seed(4))}
    lines = ["", "RKE count against the bandwidth, as a multiple of the median pairwise distance; the plateau rule's "
                 "choice last; the same-covariance Gaussian's count 1 / E[k^2] = det(I + 4 Sigma / sigma^2)^(1/2) in "
                 "brackets", "", "| data | 0.25 | 0.5 | 1 | 2 | plateau rule |", "|" + " --- |" * 6]
    results = {}
    for label, x in sets.items():
        x = x.double()
        x = x - x.mean(0)
        median = float(torch.pdist(x).median())
        eig = torch.linalg.eigvalsh(torch.cov(x.T)).clamp_min(0)
        factors = (0.25, 0.5, 1.0, 2.0)
        counts = count_curve(x, [f * median for f in factors])
        gauss = [float(torch.sqrt(1 + 4 * eig / (f * median) ** 2).prod()) for f in factors]
        sigma = plateau_bandwidth(x)
        chosen = rke_count(x, sigma).count
        results[label] = {"median": median, "counts": counts, "gaussian": gauss, "plateau": sigma,
                          "plateau_count": chosen}
        lines.append(f"| {label} | " + " | ".join(f"{c:.3g} ({g:.3g})" for c, g in zip(counts, gauss, strict=True))
                     + f" | {sigma / median:.2f} x median: {chosen:.3g} |")
        print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def _classify(images: torch.Tensor) -> torch.Tensor:
    """Digit labels of images in [0, 1] read by the shipped digits network."""
    from fastndb._core.digits_net import load_digits_net

    with torch.no_grad():
        return load_digits_net()(images).argmax(1)


def missing_section(args) -> dict:
    from fastndb.demo.runner import load_digits_tensor, load_training_images

    images, labels = load_digits_tensor()
    images = images.reshape(-1, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(images.shape[0], generator=g)
    a, b = order[: images.shape[0] // 2], order[images.shape[0] // 2:]
    lines = ["", "oracle drops: real = one half of scikit-learn's digits, fake = the other half without the dropped "
                 "digits; the top missing modes' 8 example images read by the shipped digits network", "",
             "| space | dropped | missing modes found | examples that are a dropped digit | "
             "top mode: real / fake share |",
             "|" + " --- |" * 5]
    results = []
    drops = [(d,) for d in range(10)] + [(3, 8)]
    for space in ("pixels", "digits"):
        hits_all = []
        for drop in drops:
            keep = b[~torch.isin(labels[b], torch.tensor(drop))]
            real, fake = images[a], images[keep]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fastndb.modes(real, fake, feature="digits" if space == "digits" else None,
                                    value_range=(0, 1), top=len(drop))
            found = out.missing[: len(drop)]
            read = [_classify(real[m.examples]) for m in found]
            hits = float(torch.isin(torch.cat(read), torch.tensor(drop)).float().mean()) if read else 0.0
            hits_all.append(hits)
            top = found[0] if found else None
            row = {"space": space, "dropped": list(drop), "found": len(out.missing), "hits": hits,
                   "top_real": top.real_share if top else None, "top_fake": top.fake_share if top else None}
            results.append(row)
            lines.append(f"| {space} | {','.join(map(str, drop))} | {len(out.missing)} | {100 * hits:.0f}% | "
                         + (f"{100 * top.real_share:.1f}% / {100 * top.fake_share:.1f}% |" if top else "- |"))
            print(lines[-1], flush=True)
        lines.append(f"| {space} | all | | {100 * np.mean(hits_all):.0f}% on average | |")
    # DCGANs trained without 3s and 8s, compared with all digits: the demo's 8 epochs, and 20
    from fastndb.demo.models import sample
    from fastndb.demo.runner import demo_defaults
    from fastndb.demo.training import GANConfig, train_gan

    defaults = demo_defaults(None)
    real = load_training_images(None)
    lines += ["", "DCGANs (the demo's, width 32, 150 batches of 64 per epoch) trained without 3s and 8s, 1,797 samples "
                  "against all 1,797 digits at 32 x 32; the missing modes' example images read by the digits network",
              "", "| epochs | space | generated samples read as 3 / as 8 | RKE real / fake at the modes' bandwidth | "
                  "missing modes | top 2 modes' examples that are 3 or 8 | top 2: digits read, real / fake share |",
              "|" + " --- |" * 7]
    for epochs in (defaults["epochs"], 20):
        config = GANConfig(epochs=epochs, steps_per_epoch=defaults["steps_per_epoch"], width=defaults["width"])
        began = time.perf_counter()
        trained = train_gan(load_training_images(None, drop_digits=(3, 8)), config, progress=False)
        generated = sample(trained.generator, 1797, generator_rng=torch.Generator().manual_seed(1))
        seconds = time.perf_counter() - began
        read_generated = _classify((generated.clamp(-1, 1) + 1) / 2)
        share_3, share_8 = (float((read_generated == d).float().mean()) for d in (3, 8))
        for space in ("pixels", "digits"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fastndb.modes(real, generated, feature="digits" if space == "digits" else None,
                                    value_range=(-1, 1), top=2)
            read = [_classify((real[m.examples] + 1) / 2) for m in out.missing]
            hits = float(torch.isin(torch.cat(read), torch.tensor([3, 8])).float().mean()) if read else 0.0
            described = "; ".join(f"{torch.mode(r).values.item()}: {100 * m.real_share:.1f}% / "
                                  f"{100 * m.fake_share:.1f}%" for r, m in zip(read, out.missing, strict=True))
            i = min(range(len(out.curve_bandwidths)), key=lambda j: abs(out.curve_bandwidths[j] - out.modes_bandwidth))
            results.append({"epochs": epochs, "space": space, "seconds": seconds, "generated_3": share_3,
                            "generated_8": share_8, "hits": hits, "found": len(out.missing),
                            "real_count_at_modes_bandwidth": out.curve_real[i],
                            "fake_count_at_modes_bandwidth": out.curve_fake[i]})
            lines.append(f"| {epochs} | {space} | {100 * share_3:.1f}% / {100 * share_8:.1f}% | "
                         f"{out.curve_real[i]:.3g} / {out.curve_fake[i]:.3g} | {len(out.missing)} | "
                         f"{100 * hits:.0f}% | {described} |")
            print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


def _spearman_table(rows: list[dict], scores: dict[str, str]) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ground_truth import spearman

    captured = [r["captured_share"] for r in rows]
    lines = ["", "| score | Spearman with modes captured (95% interval) |", "| --- | --- |"]
    for label, key in scores.items():
        values = [r[key] for r in rows]
        rho, low, high = spearman(values, captured)
        lines.append(f"| {label} | {rho:+.2f} ({low:+.2f} to {high:+.2f}) |")
    return lines


def _rounded(value: float | None, digits: int) -> object:
    return value if value is None else round(value, digits)


def ground_truth_section(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ground_truth import GENERATORS, train

    from fastndb.demo.ground_truth import GRID, RING, mode_statistics

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    saved = {(r["data"], r["generator"], r["seed"]): r
             for r in json.loads((OUT / "ground_truth.json").read_text())["rows"]}
    rows = []
    lines = ["", f"ring and grid GANs of benchmarks/ground_truth.py (seeds {args.seeds}, {args.steps} steps, the "
                 "same runs: modes captured recomputed and checked against its saved table), 2,000 samples each; "
                 "RKE counts at the real data's plateau bandwidth (20,000 real samples)", "",
             "| data | generator | seed | modes | RKE real | RKE fake (95% interval) | fake / real | NDB/K (K = M) | "
             "coverage |", "|" + " --- |" * 9]
    for protocol in (RING, GRID):
        for seed in args.seeds:
            real = protocol.sample(20_000, seed=10_000 + seed)
            sigma = plateau_bandwidth(real, seed=seed)
            real_count = rke_count(real, sigma)
            for name, setting in GENERATORS.items():
                generator = train(protocol, seed=seed, steps=args.steps, **setting)
                with torch.no_grad():
                    samples = generator(torch.randn(2000, 2, generator=torch.Generator().manual_seed(30_000 + seed)))
                truth = mode_statistics(samples, protocol)
                fake = rke_count(samples, sigma)
                old = saved.get((protocol.name, name, seed), {})
                m = protocol.num_modes
                row = {"data": protocol.name, "generator": name, "seed": seed, "modes_captured": truth.modes_captured,
                       "captured_share": truth.modes_captured / m, "real_count": real_count.count,
                       "fake_count": fake.count, "fake_low": fake.low, "fake_high": fake.high,
                       "ratio": fake.count / real_count.count, "bandwidth": sigma,
                       "same_run": old.get("modes_captured") == truth.modes_captured,
                       "ndb_ratio_M": old.get(f"ndb_ratio_K{m}"), "coverage": old.get("coverage")}
                rows.append(row)
                lines.append(f"| {protocol.name} | {name} | {seed} | {truth.modes_captured}/{m} | "
                             f"{real_count.count:.3g} | {fake.count:.3g} ({fake.low:.3g}-{fake.high:.3g}) | "
                             f"{row['ratio']:.3f} | {_rounded(row['ndb_ratio_M'], 2)} | "
                             f"{_rounded(row['coverage'], 3)} |")
                print(lines[-1], flush=True)
    usable = [r for r in rows if r["ndb_ratio_M"] is not None]
    lines += _spearman_table(rows, {"RKE count, fake / real": "ratio"})
    if len(usable) == len(rows):
        lines += _spearman_table(usable, {"NDB/K at K = M": "ndb_ratio_M", "coverage": "coverage"})[3:]
    paper = {"ring of 8 Gaussians": "vanilla GAN 1.11, LSGAN 3.30, WGAN-WC 8.80, WGAN-GP 8.93",
             "5 x 5 grid of 25 Gaussians": "vanilla GAN 3.97, LSGAN 2.10, WGAN-WC 26.49, WGAN-GP 25.17"}
    lines += ["", "beside the RKE paper (Jalali et al. 2023, their Table: other generators, their own bandwidth, "
                  "published estimator): mean fake count per generator here", "", "| data | here | the paper |",
              "| --- | --- | --- |"]
    for data, text in paper.items():
        means = {name: np.mean([r["fake_count"] for r in rows if (r["data"], r["generator"]) == (data, name)])
                 for name in GENERATORS}
        here = ", ".join(f"{name} {value:.3g}" for name, value in means.items())
        lines.append(f"| {data} | {here} | {text} |")
    return {"results": rows, "lines": lines}


def stacked_section(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stacked_digits import GENERATORS, digit_pools, train_checkpoints

    from fastndb._core.digits_net import load_digits_net
    from fastndb.demo.ground_truth import stacked_digits, stacked_mode_statistics
    from fastndb.demo.models import sample

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    train_pool, test_pool = digit_pools()
    classifier = load_digits_net()
    real, _ = stacked_digits(20_000, seed=99, images=test_pool[0], labels=test_pool[1])
    real = real * 2 - 1  # [-1, 1], like the generators
    real_small = real[-2000:]
    real_flat = real_small.reshape(2000, -1)
    sigma = plateau_bandwidth(real_flat)
    real_count = rke_count(real_flat, sigma)
    curve = [sigma / 2**j for j in range(CURVE_STEPS)]
    fine = differential_bandwidth(curve, count_curve(real_flat, curve))
    real_fine = rke_count(real_flat, fine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bins = fastndb.NDB(100, seed=0, value_range=(-1, 1), progress=False).fit(real)
    rows = []
    lines = ["", f"stacked digits (1,000 modes), the runs of benchmarks/stacked_digits.py at {args.stack_steps} steps, "
                 f"seed 0, 5 checkpoints each; 1,000 samples per checkpoint; RKE counts in pixels (3 x 28 x 28, "
                 f"[-1, 1]) at the real data's plateau bandwidth {sigma:.3g} (real: {real_count} on 2,000 test-digit "
                 f"stacks) and at the missing modes' finer one, {fine:.3g} (real: {real_fine})", "",
             "| generator | step | modes | RKE fake (95% interval) | fake / real | at the finer bandwidth: fake, "
             "fake / real | NDB/K (K = 100) | coverage |", "|" + " --- |" * 8]
    for name, setting in GENERATORS.items():
        for step, generator in train_checkpoints(train_pool, seed=0, steps=args.stack_steps, checkpoints=5,
                                                 **setting):
            fake = sample(generator, 1000, generator_rng=torch.Generator().manual_seed(7 + step))
            truth = stacked_mode_statistics((fake + 1) / 2, classifier)
            count = rke_count(fake.reshape(1000, -1), sigma)
            count_fine = rke_count(fake.reshape(1000, -1), fine)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ndb = bins.score(fake).ndb_ratio
                coverage = fastndb.prdc(real_small[:1000], fake, nearest_k=5, value_range=(-1, 1), subsets=0).coverage
            row = {"generator": name, "step": step, "modes_captured": truth.modes_captured,
                   "captured_share": truth.modes_captured / 1000, "fake_count": count.count,
                   "ratio": count.count / real_count.count, "fake_count_fine": count_fine.count,
                   "ratio_fine": count_fine.count / real_fine.count, "ndb_ratio": ndb, "coverage": coverage}
            rows.append(row)
            lines.append(f"| {name} | {step} | {truth.modes_captured} | {count.count:.3g} ({count.low:.3g}-"
                         f"{count.high:.3g}) | {row['ratio']:.3f} | {count_fine.count:.3g}, {row['ratio_fine']:.3f} | "
                         f"{ndb:.2f} | {coverage:.3f} |")
            print(lines[-1], flush=True)
    lines += _spearman_table(rows, {"RKE count, fake / real": "ratio",
                                    "RKE count at the finer bandwidth, fake / real": "ratio_fine",
                                    "NDB/K (K = 100)": "ndb_ratio", "coverage": "coverage"})
    return {"results": rows, "lines": lines}


def speed_section(args) -> dict:
    lines = ["", "speed and peak heap memory of the exact RKE count (float32 samples, bandwidth fixed), against a "
                 "full-matrix torch baseline (cdist, exp, sum), the vendi-score package (n x n kernel, scipy "
                 "eigvalsh) and the official RKE estimator (rke-score: a Python loop over 10^6 random pairs, and over "
                 "all n^2 pairs for the exact value)", "",
             "| n x D | method | seconds | peak memory | note |", "|" + " --- |" * 5]
    results = []

    def record(shape, method, seconds, peak, note=""):
        results.append({"shape": shape, "method": method, "seconds": seconds, "peak_bytes": peak, "note": note})
        mem = "-" if peak is None else f"{peak / 2**20:.0f} MiB"
        lines.append(f"| {shape} | {method} | {seconds if isinstance(seconds, str) else f'{seconds:.2f}'} | {mem} | "
                     f"{note} |")
        print(lines[-1], flush=True)

    for n, d in ((20_000, 784), (50_000, 64)):
        shape = f"{n:,} x {d}"
        x = torch.rand(n, d, generator=torch.Generator().manual_seed(n))
        sigma = float(torch.cdist(x[:500], x[:500]).median()) / 2
        began = time.perf_counter()
        out, peak = peak_memory_during(lambda x=x, sigma=sigma: rke_count(x, sigma))
        record(shape, "fastndb rke_count (tiled, exact)", time.perf_counter() - began, peak,
               f"count {out.count:.5g}")
        matrix_bytes = n * n * 4
        if matrix_bytes * 3 < 8 * 2**30:
            def full(x=x, n=n, sigma=sigma):
                c = x - x.mean(0)
                k = torch.cdist(c, c).square_().div_(-(sigma**2)).exp_()
                return n * n / float(k.sum(dtype=torch.float64))
            began = time.perf_counter()
            value, peak = peak_memory_during(full)
            record(shape, "torch full matrix", time.perf_counter() - began, peak, f"published {value:.5g}")
        else:
            record(shape, "torch full matrix", "not run", None,
                   f"needs the {matrix_bytes / 2**30:.1f} GiB n x n matrix (and cdist's copies)")
        try:
            import vendi_score.vendi as vendi

            small = 2000
            xs = x[:small].double()
            kernel = torch.exp(-torch.cdist(xs, xs).square() / (2 * sigma**2)).numpy()
            began = time.perf_counter()
            vendi.score_K(kernel)
            t_small = time.perf_counter() - began
            record(shape, f"vendi-score score_K at n = {small:,}", t_small, small * small * 8,
                   f"O(n^3): about {t_small * (n / small) ** 3 / 60:.0f} min and {n * n * 8 / 2**30:.1f} GiB at n = "
                   f"{n:,}")
            began = time.perf_counter()
            value, _ = vendi_count(x[:small], sigma)
            record(shape, f"fastndb vendi_count at n = {small:,} (exact)", time.perf_counter() - began, None,
                   f"{value:.5g}")
            began = time.perf_counter()
            value, peak = peak_memory_during(lambda x=x, sigma=sigma: vendi_count(x, sigma, exact_limit=0))
            record(shape, "fastndb vendi_count, all n (1,024 Fourier frequencies)", time.perf_counter() - began,
                   peak[1] if isinstance(peak, tuple) else peak, f"{value[0]:.5g}" if isinstance(value, tuple) else "")
        except ImportError:
            record(shape, "vendi-score", "not installed", None)
        try:
            from rke_score import RKE

            rke = RKE(kernel_bandwidth=sigma)
            xn = x.double().numpy()
            began = time.perf_counter()
            np.random.seed(0)
            rke.compute_rke_mc(xn, n_samples=20_000)
            t = time.perf_counter() - began
            record(shape, "rke-score compute_rke_mc, 2 x 10^4 pairs", t, None,
                   f"10^6 pairs (its default): about {t * 50:.0f} s; sampled, not exact")
            began = time.perf_counter()
            rke.compute_rke_mc_frobenius_norm(xn[:150])
            t = time.perf_counter() - began
            record(shape, "rke-score frobenius norm, n = 150 (exact)", t, None,
                   f"n^2 loop: about {t * (n / 150) ** 2 / 3600:.0f} h at n = {n:,}")
        except ImportError:
            record(shape, "rke-score", "not installed", None)
    return {"results": results, "lines": lines}


def _sharded_worker(rank: int, world: int, init: str, n: int, d: int, queue) -> None:
    import torch.distributed as dist

    from fastndb._core.birthday import birthday_prepared
    from fastndb._core.collectives import TorchDistributed
    from fastndb._core.coverage import prdc_prepared
    from fastndb._core.memorization import memorization_prepared

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    x = torch.rand(n, d, generator=torch.Generator().manual_seed(n))
    y = torch.rand(n // 2, d, generator=torch.Generator().manual_seed(n + 1))
    comm = TorchDistributed() if world > 1 else None
    half = x[: n // 2]
    runs = {
        # about half the typical distance
        "RKE count (n samples)": (lambda: rke_count(x, 0.2 * d**0.5, comm=comm), lambda out: f"{out.count:.10g}"),
        "precision, recall, density, coverage (n/2 real, n/2 fake, no intervals)": (
            lambda: prdc_prepared(half, y, 1.0, nearest_k=5, inclusive=False, seed=0, block_rows=None, progress=False,
                                  subsets=0, confidence=0.95, comm=comm), lambda out: f"coverage {out.coverage:.6f}"),
        "birthday test (n samples, 20 pairs, a threshold)": (
            lambda: birthday_prepared(x, 1.0, num_pairs=20, metric="l2", threshold=0.5 * d**0.5 * 0.3,
                                      confidence=0.95, block_rows=None, progress=False, comm=comm),
            lambda out: f"closest {float(out.distances[0]):.6f}, {out.num_duplicates} below"),
        "memorization (n/2 train, n/2 fake, n/4 test)": (
            lambda: memorization_prepared(half, y, x[n // 2 : n // 2 + n // 4], 1.0, alpha=0.01, confidence=0.95,
                                          cells=3, seed=0, block_rows=None, progress=False, comm=comm),
            lambda out: f"{out.num_copies} flagged, C_T {out.ct:+.4f}"),
    }
    report = {"rank": rank}
    for name, (run, value) in runs.items():
        dist.barrier()
        began = time.perf_counter()
        out, peak = peak_memory_during(run)
        report[name] = {"seconds": time.perf_counter() - began, "peak": peak, "value": value(out)}
    queue.put(report)
    dist.barrier()
    dist.destroy_process_group()


def sharded_section(args) -> dict:
    import tempfile

    import torch.multiprocessing as mp

    lines = ["", "each pairwise metric with its searches split between W gloo processes (one thread each; every rank "
                 "holds all samples): the RKE count's tiles (one all-reduce of n + 2 float64 values), the coverage "
                 "metrics' k-NN searches and ball tests by row blocks (three all-reduces), the birthday test's row "
                 "blocks (candidates all-gathered, counts summed), memorisation's 2-NN searches by query blocks (one "
                 "all-reduce each); against W = 1", "",
             "| metric | n x D | processes | seconds (slowest rank) | speed-up | peak memory per rank | value |",
             "|" + " --- |" * 7]
    results = []
    for n, d in ((20_000, 784), (50_000, 64)):
        base: dict = {}
        for world in (1, 2):
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            with tempfile.TemporaryDirectory() as tmp:
                mp.spawn(_sharded_worker, args=(world, f"{tmp}/init", n, d, queue), nprocs=world, join=True)
            reports = [queue.get() for _ in range(world)]
            for name in (k for k in reports[0] if k != "rank"):
                seconds = max(r[name]["seconds"] for r in reports)
                base.setdefault(name, seconds)
                row = {"metric": name, "shape": f"{n:,} x {d}", "processes": world, "seconds": seconds,
                       "speedup": base[name] / seconds, "peak": max(r[name]["peak"] for r in reports),
                       "value": reports[0][name]["value"], "same_on_ranks": len({r[name]["value"] for r in reports})
                       == 1}
                results.append(row)
                lines.append(f"| {name} | {row['shape']} | {world} | {seconds:.2f} | {row['speedup']:.2f} | "
                             f"{row['peak'] / 2**20:.0f} MiB | {row['value']} |")
                print(lines[-1], flush=True)
    return {"results": results, "lines": lines}


SECTIONS = {"mixtures": mixtures_section, "exactness": exactness_section, "intervals": intervals_section,
            "bandwidth": bandwidth_section, "missing": missing_section, "ground_truth": ground_truth_section,
            "stacked": stacked_section, "speed": speed_section, "sharded": sharded_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=[*SECTIONS, "all"])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--stack-steps", type=int, default=600)
    args = parser.parse_args()
    for name in SECTIONS if args.section == "all" else [args.section]:
        began = time.perf_counter()
        out = SECTIONS[name](args)
        seconds = time.perf_counter() - began
        header = f"mode counts, section {name}: {machine()}; {seconds:.0f} s; modes.py {name}"
        (OUT / f"modes_{name}.txt").write_text("\n".join([header, *out["lines"]]) + "\n")
        (OUT / f"modes_{name}.json").write_text(json.dumps({"machine": machine(), "seconds": seconds, **out},
                                                           indent=1, default=str))
        print(header)


if __name__ == "__main__":
    main()
