"""Ground truth on the 2-D protocols: do the scores track the modes a generator really captured? A script.

    python benchmarks/ground_truth.py --quick          # 2 seeds, 2,000 steps: about 5 minutes on 2 cores
    python benchmarks/ground_truth.py --seeds 0 1 2 3 --steps 6000
    python benchmarks/ground_truth.py --k-rule         # how large K must be to see one dropped mode (a minute)

Data: VEEGAN's ring of 8 and grid of 25 Gaussians with the settings of PacGAN's code
(:mod:`fastndb.demo.ground_truth`). Generators, MLPs trained on the CPU (Adam 1e-3, betas (0.5, 0.999), batch 256):

* ``GAN``: generator 2 -> 3 x 128 ReLU -> 2, discriminator 2 -> 2 x 128 LeakyReLU -> 1;
* ``weak D``: the same with a 16-unit discriminator (PacGAN Table 3's collapse-prone setting, smaller discriminator);
* ``PacGAN2``: the plain GAN whose discriminator judges 2 samples at once (packing, PacGAN).

For each run, side by side: the true modes captured, the high-quality share and the reverse KL; NDB/K at K = M/2,
M, 2M and 4M for M modes (bins fitted on 20,000 fresh real samples, holdout), JS at K = 2M, recall and coverage
(k = 5, 2,000 samples each), and the birthday duplicate count (1% real nearest-neighbour threshold, 2,000
samples). Then Spearman's rank correlation of each score with modes captured and with the reverse KL, with a 95%
interval from the Fisher transform. Writes benchmarks/results/ground_truth.{txt,json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from _common import cpu_name
from torch import nn

import fastndb
from fastndb.demo.ground_truth import GRID, RING, Protocol, mode_statistics

OUT = Path(__file__).resolve().parent / "results"
GENERATORS = {"GAN": {"width": 128, "pack": 1}, "weak D": {"width": 16, "pack": 1},
              "PacGAN2": {"width": 128, "pack": 2}}


def train(protocol: Protocol, *, width: int, pack: int, seed: int, steps: int, batch: int = 256) -> nn.Module:
    """A 2-D GAN on ``protocol``; the discriminator sees ``pack`` samples at once (PacGAN)."""
    checkpoints = train_checkpoints(protocol, width=width, pack=pack, seed=seed, steps=steps, batch=batch, every=steps)
    return list(checkpoints)[-1][1]


def train_checkpoints(protocol: Protocol, *, width: int, pack: int, seed: int, steps: int, every: int,
                      batch: int = 256):
    """:func:`train`, yielding ``(step, generator)`` every ``every`` steps (the same run whatever ``every`` is)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128),
                                  nn.ReLU(), nn.Linear(128, 2))
        discriminator = nn.Sequential(nn.Linear(2 * pack, width), nn.LeakyReLU(0.2), nn.Linear(width, width),
                                      nn.LeakyReLU(0.2), nn.Linear(width, 1))
    opt_g = torch.optim.Adam(generator.parameters(), 1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), 1e-3, betas=(0.5, 0.999))
    loss = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed + 1)
    rows = batch // pack
    ones, zeros = torch.ones(rows, 1), torch.zeros(rows, 1)
    pool = protocol.sample(batch * steps, seed=seed * 1_000_003)  # every step's real batch, drawn at once
    for step in range(steps):
        real = pool[step * batch : (step + 1) * batch].reshape(rows, 2 * pack)
        fake = generator(torch.randn(batch, 2, generator=g)).reshape(rows, 2 * pack)
        d_loss = loss(discriminator(real), ones) + loss(discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = loss(discriminator(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if (step + 1) % every == 0:
            yield step + 1, generator


def spearman(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Spearman's rho (ties by average ranks) and a 95% interval from the Fisher transform (se 1.03 / sqrt(n - 3))."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    n = len(x)
    if not math.isfinite(rho) or n < 4 or abs(rho) >= 1:
        return rho, rho, rho
    z, half = math.atanh(rho), 1.96 * 1.03 / math.sqrt(n - 3)
    return rho, math.tanh(z - half), math.tanh(z + half)


def k_rule(seeds: int = 20) -> None:
    """Detection of exactly one dropped mode against K: the mixture itself without mode 0 against 20,000 real
    samples, and the full mixture (the false-alarm rate), for 500 and 2,000 fake samples. Two rules: "count", NDB's
    binomial tail below 0.01 with an under-filled bin among the flagged ones; "one bin", an under-filled bin whose
    p-value is below alpha / K (the first step of Holm's correction: family-wise error at most alpha)."""
    from fastndb._core.verdict import binomial_tail

    lines = [f"one dropped mode: detection (and false alarms with nothing dropped) over {seeds} seeds; real 20,000 "
             f"(holdout: 10,000 reference). Rule 'count': binomial tail of NDB < 0.01 and an under-filled bin flagged; "
             f"rule 'one bin': an under-filled bin with p < alpha / K", "",
             "| data | fake samples | K | K / M | detected (count) | false alarms (count) | detected (one bin) | "
             "false alarms (one bin) |", "|" + " --- |" * 8]
    rows = []
    for protocol in (RING, GRID):
        m = protocol.num_modes
        for n_fake in (500, 2000):
            for k in sorted({max(2, m // 2), m, 2 * m, 4 * m}):
                hits, alarms = {"count": 0, "bin": 0}, {"count": 0, "bin": 0}
                for seed in range(seeds):
                    real = protocol.sample(20_000, seed=50_000 + seed)
                    weights = torch.ones(m, dtype=torch.float64)
                    weights[0] = 0.0
                    for dropped, fake in ((True, protocol.sample(n_fake, seed=60_000 + seed, weights=weights)),
                                          (False, protocol.sample(n_fake, seed=70_000 + seed))):
                        result = fastndb.score(real, fake, num_bins=k, seed=seed)
                        by_count = (binomial_tail(result.ndb, k, result.alpha) < 0.01
                                    and bool((result.different & (result.z < 0)).any()))
                        one_bin = bool(((result.p_values < result.alpha / k) & (result.z < 0)).any())
                        for rule, flagged in (("count", by_count), ("bin", one_bin)):
                            hits[rule] += flagged and dropped
                            alarms[rule] += flagged and not dropped
                rows.append({"data": protocol.name, "num_fake": n_fake, "k": k, "modes": m,
                             **{f"detected_{r}": hits[r] / seeds for r in hits},
                             **{f"false_alarms_{r}": alarms[r] / seeds for r in alarms}})
                lines.append(f"| {protocol.name} | {n_fake} | {k} | {k / m:g} | {hits['count']}/{seeds} | "
                             f"{alarms['count']}/{seeds} | {hits['bin']}/{seeds} | {alarms['bin']}/{seeds} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines)
    (OUT / "ground_truth_k_rule.txt").write_text(text + "\n")
    (OUT / "ground_truth_k_rule.json").write_text(json.dumps(rows, indent=1))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2,000 steps")
    parser.add_argument("--k-rule", action="store_true", help="only the K experiment (one dropped mode)")
    args = parser.parse_args()
    if args.k_rule:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        return k_rule()
    if args.quick:
        args.seeds, args.steps = [0, 1], 2000
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = []
    for protocol in (RING, GRID):
        m = protocol.num_modes
        ks = sorted({max(2, m // 2), m, 2 * m, 4 * m})
        for seed in args.seeds:
            real = protocol.sample(20_000, seed=10_000 + seed)
            held = protocol.sample(2000, seed=20_000 + seed)
            threshold = fastndb.duplicate_threshold(real, num_samples=2000, seed=seed)
            null_duplicates = fastndb.birthday(held, threshold=threshold).num_duplicates
            for name, setting in GENERATORS.items():
                start = time.perf_counter()
                generator = train(protocol, seed=seed, steps=args.steps, **setting)
                with torch.no_grad():
                    samples = generator(torch.randn(2000, 2, generator=torch.Generator().manual_seed(30_000 + seed)))
                truth = mode_statistics(samples, protocol)
                row = {"data": protocol.name, "modes": m, "generator": name, "seed": seed,
                       "modes_captured": truth.modes_captured, "high_quality": truth.high_quality,
                       "reverse_kl": truth.reverse_kl}
                for k in ks:
                    result = fastndb.score(real, samples, num_bins=k, seed=seed)
                    row[f"ndb_ratio_K{k}"] = result.ndb_ratio
                    if k == 2 * m:
                        row["js"], row["null_js"] = result.js, result.expected_null_js
                coverage = fastndb.prdc(real[:2000], samples, nearest_k=5)
                row.update(recall=coverage.recall, coverage=coverage.coverage,
                           null_coverage=coverage.expected_null_coverage)
                pairs = fastndb.birthday(samples, threshold=threshold)
                row.update(duplicates=pairs.num_duplicates, null_duplicates=null_duplicates,
                           seconds=time.perf_counter() - start)
                rows.append(row)
                print(f"{protocol.name}, {name}, seed {seed}: {truth.modes_captured}/{m} modes, "
                      f"{row['seconds']:.0f} s", flush=True)
    scores = [k for k in rows[0] if k.startswith("ndb_ratio_K")] + ["js", "recall", "coverage", "duplicates"]
    # NDB/K at K relative to the number of modes, pooled over both protocols: the keys differ per protocol
    relative = {"NDB/K at K = M/2": 0, "NDB/K at K = M": 1, "NDB/K at K = 2M": 2, "NDB/K at K = 4M": 3}
    pooled: dict[str, list[float]] = {name: [] for name in (*relative, "JS (K = 2M)", "recall", "coverage",
                                                              "birthday duplicates")}
    for row in rows:
        ndb_keys = sorted((k for k in row if k.startswith("ndb_ratio_K")), key=lambda k: int(k.split("K")[-1]))
        for name, index in relative.items():
            pooled[name].append(row[ndb_keys[index]])
        pooled["JS (K = 2M)"].append(row["js"])
        pooled["recall"].append(row["recall"])
        pooled["coverage"].append(row["coverage"])
        pooled["birthday duplicates"].append(row["duplicates"])
    captured_share = [r["modes_captured"] / r["modes"] for r in rows]
    kl = [r["reverse_kl"] if math.isfinite(r["reverse_kl"]) else 10.0 for r in rows]
    correlations = {name: {"with modes captured": spearman(values, captured_share), "with reverse KL":
                           spearman(values, kl)} for name, values in pooled.items()}

    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
    lines = [f"2-D ground truth: {len(rows)} runs ({', '.join(GENERATORS)} x ring/grid x seeds {args.seeds}), "
             f"{args.steps} steps of 256; 2,000 samples per run; {machine}", "",
             "| data | generator | seed | modes | high quality | reverse KL | NDB/K at K = M/2, M, 2M, 4M | JS | "
             "recall | coverage | duplicates (real) |", "|" + " --- |" * 11]
    for r in rows:
        ndb = ", ".join(f"{r[k]:.2f}" for k in sorted((k for k in r if k.startswith("ndb_ratio_K")),
                                                     key=lambda k: int(k.split("K")[-1])))
        lines.append(f"| {r['data']} | {r['generator']} | {r['seed']} | {r['modes_captured']}/{r['modes']} | "
                     f"{r['high_quality']:.3f} | {r['reverse_kl']:.3f} | {ndb} | {r['js']:.3f} | {r['recall']:.3f} | "
                     f"{r['coverage']:.3f} | {r['duplicates']} ({r['null_duplicates']}) |")
    lines += ["", "Spearman's rho over all runs (95% interval, Fisher transform); modes captured as a share of M:", "",
              "| score | with modes captured | with reverse KL |", "| --- | --- | --- |"]
    for name, pair in correlations.items():
        cells = [f"{rho:+.2f} ({low:+.2f} to {high:+.2f})" for rho, low, high in pair.values()]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ground_truth.txt").write_text(text + "\n")
    (OUT / "ground_truth.json").write_text(json.dumps({"machine": machine, "steps": args.steps, "rows": rows,
                                                        "correlations": correlations, "scores": scores}, indent=1))
    figure(rows)
    print(text)


def figure(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    markers = {"GAN": "o", "weak D": "v", "PacGAN2": "s"}
    for r in rows:
        share = r["modes_captured"] / r["modes"]
        key = sorted((k for k in r if k.startswith("ndb_ratio_K")), key=lambda k: int(k.split("K")[-1]))[2]
        color = "tab:blue" if r["modes"] == 8 else "tab:orange"
        for ax, value in zip(axes, (r[key], r["coverage"], r["reverse_kl"]), strict=True):
            ax.scatter(share, value, marker=markers[r["generator"]], color=color, s=30)
    for ax, label in zip(axes, ("NDB/K at K = 2M", "coverage (k = 5)", "reverse KL (truth)"), strict=True):
        ax.set_xlabel("true modes captured (share of M)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, linestyle="none", color="0.3", label=g) for g, m in markers.items()]
    handles += [plt.Line2D([], [], marker="o", linestyle="none", color=c, label=d)
                for d, c in (("ring of 8", "tab:blue"), ("grid of 25", "tab:orange"))]
    axes[-1].legend(handles=handles, fontsize="x-small", loc="upper right")
    fig.tight_layout()
    fig.savefig(OUT / "ground_truth.png", dpi=100)


if __name__ == "__main__":
    main()
