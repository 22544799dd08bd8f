"""Ground truth on stacked digits (1,000 modes): DCGANs whose captured modes are counted, next to the scores.

    python benchmarks/stacked_digits.py --quick        # 3 generators x 1 seed, 600 steps: a few minutes
    python benchmarks/stacked_digits.py                # 3 generators x 2 seeds, 2,400 steps

Data: the stacked-MNIST protocol (VEEGAN, PacGAN Table 2) on scikit-learn's digits: three digits drawn
independently, upsampled to 28 x 28 and stacked as the channels of one image, so there are 10^3 = 1,000 modes
(:func:`fastndb.demo.ground_truth.stacked_digits`; train and test digits of the shipped digits network split
apart, the generators learn from the training digits only). Modes are read by the shipped digits network (97.8%
held-out accuracy) per channel, on 10,000 generated samples (a perfect sampler captures all but ~0.05 of the
1,000 modes), with KL(generated mode histogram || uniform) as in PacGAN Table 2.

Generators (the project's DCGAN, :mod:`fastndb.demo.models`, 28 x 28 x 3, latent 100, generator width 32, Adam
2e-4, betas (0.5, 0.999), batch 64):

* ``DCGAN``: discriminator width 32;
* ``weak D``: discriminator width 8, a quarter of the generator's (PacGAN Table 3's collapse-prone setting);
* ``PacDCGAN2``: the plain DCGAN whose discriminator judges 2 samples at once (6 channels; PacGAN's fix);
* ``weak D PacDCGAN2``: packing on the weak discriminator (PacGAN Table 3's PacDCGAN2 row).

At 10 checkpoints of each run: true modes captured and KL; NDB/K at K = 100 and 400 (bins fitted once on
20,000 real stacked digits, holdout design), JS at K = 400, the one-bin missing-mode signal (an under-filled bin
with p < alpha / K), recall and coverage (k = 5, 1,000 samples each) with coverage's chance level, and the birthday
duplicate count (1% real nearest-neighbour threshold, 1,000 samples). The last checkpoint of every run goes into
the results table; all checkpoints feed the monitor-rule experiment (``benchmarks/monitor_rule.py``). Writes
benchmarks/results/stacked_digits{,_quick}.{txt,json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import torch
from _common import cpu_name
from torch import nn

import fastndb
from fastndb._core.digits_net import digits_dataset, load_digits_net
from fastndb._core.signals import emptied_bins, missing_mode_bins
from fastndb._core.verdict import compare_duplicates, decide
from fastndb.demo.ground_truth import stacked_digits, stacked_mode_statistics
from fastndb.demo.models import Discriminator, Generator, sample

OUT = Path(__file__).resolve().parent / "results"
GENERATORS = {"DCGAN": {"d_width": 32, "pack": 1}, "weak D": {"d_width": 8, "pack": 1},
              "PacDCGAN2": {"d_width": 32, "pack": 2}, "weak D PacDCGAN2": {"d_width": 8, "pack": 2}}
SIZE, LATENT, G_WIDTH, BATCH = 28, 100, 32, 64
BIN_SIZES = (100, 400)


def digit_pools() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train images, labels) and (test images, labels) of the scikit-learn digits at 28 x 28, in [0, 1]."""
    train_x, train_y, test_x, test_y = digits_dataset()
    up = lambda x: nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)  # noqa: E731
    return (up(train_x), train_y), (up(test_x), test_y)


def train_checkpoints(pool: tuple[torch.Tensor, torch.Tensor], *, d_width: int, pack: int, seed: int, steps: int,
                      checkpoints: int):
    """Train one DCGAN on stacked training digits; yield ``(step, generator)`` at ``checkpoints`` even steps."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(latent_size=LATENT, channels=3, image_size=SIZE, width=G_WIDTH)
        discriminator = Discriminator(channels=3 * pack, image_size=SIZE, width=d_width)
    opt_g = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    loss = nn.BCELoss()
    g = torch.Generator().manual_seed(seed + 1)
    rows = BATCH // pack
    ones, zeros = torch.ones(rows), torch.zeros(rows)
    packed = lambda x: x.reshape(rows, 3 * pack, SIZE, SIZE)  # noqa: E731  (pack consecutive samples as channels)
    every = max(1, steps // checkpoints)
    for step in range(1, steps + 1):
        real, _ = stacked_digits(BATCH, seed=seed * 1_000_003 + step, images=pool[0], labels=pool[1])
        real = real * 2 - 1
        fake = generator(torch.randn(BATCH, LATENT, generator=g))
        d_loss = loss(discriminator(packed(real)), ones) + loss(discriminator(packed(fake.detach())), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = loss(discriminator(packed(fake)), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if step % every == 0:
            yield step, generator


def evaluate(generator: nn.Module, bins: dict, real_small: torch.Tensor, threshold: float, classifier, seed: int
             ) -> dict:
    """Every score of one checkpoint (see the module docstring); images handed to fastndb in [-1, 1]."""
    rng = torch.Generator().manual_seed(seed)
    fake = sample(generator, 10_000, generator_rng=rng)
    truth = stacked_mode_statistics((fake + 1) / 2, classifier)
    row = {"modes": truth.modes_captured, "kl": truth.reverse_kl}
    flat = fake[:5000]
    for k, ndb in bins.items():
        result = ndb.score(flat)
        row[f"ndb_k{k}"] = result.ndb_ratio
        row[f"missing_k{k}"] = missing_mode_bins(result)
        row[f"emptied_k{k}"] = emptied_bins(result)
        row[f"js_k{k}"] = result.js
    covered = fastndb.prdc(real_small, fake[:1000], nearest_k=5, value_range=(-1, 1))
    row.update(recall=covered.recall, coverage=covered.coverage, null_coverage=covered.expected_null_coverage,
               num_real_coverage=covered.num_real)
    pairs = fastndb.birthday(fake[:1000], num_pairs=1, threshold=threshold, value_range=(-1, 1))
    row["duplicates"] = int(pairs.num_duplicates or 0)
    # the verdict of issue 24 at K = 100, as the monitor reads it (coverage and duplicates against real ones)
    real_pairs = fastndb.birthday(real_small, num_pairs=1, threshold=threshold, value_range=(-1, 1))
    result = bins[100].score(flat)
    verdict = decide(result, coverage=covered,
                     duplicates=compare_duplicates(pairs, int(real_pairs.num_duplicates or 0), real_small.shape[0]))
    row.update(differs_k100=verdict.differs, missing_k100_estimate=result.missing.estimate,
               missing_k100_low=result.missing.low, missing_k100_high=result.missing.high,
               decision_k100=verdict.decision)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--quick", action="store_true", help="1 seed, 600 steps")
    parser.add_argument("--generators", nargs="+", choices=list(GENERATORS), default=list(GENERATORS))
    parser.add_argument("--part", help="write only this part (e.g. one seed per process), merged by --merge")
    parser.add_argument("--merge", nargs="+", metavar="PART",
                        help="merge the saved parts into the results ('saved': the runs already in them)")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads((OUT / ("stacked_digits.json" if p == "saved" else f"stacked_digits.part{p}.json"))
                            .read_text()) for p in args.merge]  # "saved": the runs merged before
        before = [p for name, p in zip(args.merge, parts, strict=True) if name == "saved"]
        new = [p for name, p in zip(args.merge, parts, strict=True) if name != "saved"]
        seconds = sum(p["seconds"] for p in before) + max((p["seconds"] for p in new), default=0.0)  # parallel
        saved = {**parts[0], "seeds": sorted({s for p in parts for s in p["seeds"]}), "seconds": seconds,
                 "runs": [r for p in parts for r in p["runs"]]}
        saved["runs"].sort(key=lambda r: (list(GENERATORS).index(r["generator"]), r["seed"]))
        saved["parallel_parts"] = max(p.get("parallel_parts", 1) for p in parts)
        (OUT / "stacked_digits.json").write_text(json.dumps(saved, indent=1))
        (OUT / "stacked_digits.txt").write_text(table(saved) + "\n")
        figure(saved, OUT / "stacked_digits.png")
        print(table(saved))
        return
    if args.quick:
        args.seeds, args.steps = [0], 600
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    start = time.perf_counter()
    train_pool, test_pool = digit_pools()
    classifier = load_digits_net()
    # reference data from the test digits (the generators never see them), in [-1, 1] like the generators
    real, _ = stacked_digits(20_000, seed=99, images=test_pool[0], labels=test_pool[1])
    real = real * 2 - 1
    real_truth = stacked_mode_statistics((real[:10_000] + 1) / 2, classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bins = {k: fastndb.NDB(k, seed=0, value_range=(-1, 1), progress=False).fit(real) for k in BIN_SIZES}
    real_small = real[-1000:]
    threshold = fastndb.duplicate_threshold(real[:1000], quantile=0.01, value_range=(-1, 1))
    print(f"real stacked digits: {real_truth.modes_captured} of 1000 modes in 10,000, KL {real_truth.reverse_kl:.3f}; "
          f"bins fitted in {time.perf_counter() - start:.0f} s", flush=True)
    runs = []
    for name, spec in GENERATORS.items():
        if name not in args.generators:
            continue
        for seed in args.seeds:
            began = time.perf_counter()
            trajectory = []
            for step, generator in train_checkpoints(train_pool, seed=seed, steps=args.steps, checkpoints=10,
                                                     **spec):
                row = {"step": step, **evaluate(generator, bins, real_small, threshold, classifier, seed + step)}
                trajectory.append(row)
            runs.append({"generator": name, "seed": seed, "seconds": time.perf_counter() - began,
                         "trajectory": trajectory, **trajectory[-1]})
            last = trajectory[-1]
            print(f"{name:<10} seed {seed}: modes {last['modes']:4d}, KL {last['kl']:.3f}, NDB/K@{BIN_SIZES[-1]} "
                  f"{last[f'ndb_k{BIN_SIZES[-1]}']:.3f}, missing-mode bins {last[f'missing_k{BIN_SIZES[-1]}']}, "
                  f"coverage {last['coverage']:.3f} (chance {last['null_coverage']:.3f}), duplicates "
                  f"{last['duplicates']} ({runs[-1]['seconds']:.0f} s)", flush=True)
    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} th)"
    saved = {"machine": machine, "steps": args.steps, "seeds": args.seeds, "bin_sizes": list(BIN_SIZES),
             "real": {"modes": real_truth.modes_captured, "kl": real_truth.reverse_kl},
             "seconds": time.perf_counter() - start, "runs": runs}
    name = "stacked_digits_quick" if args.quick else "stacked_digits"
    if args.part:
        name = f"stacked_digits.part{args.part}"
    (OUT / f"{name}.json").write_text(json.dumps(saved, indent=1))
    (OUT / f"{name}.txt").write_text(table(saved) + "\n")
    if not args.part:
        figure(saved, OUT / f"{name}.png")
    print(table(saved))


def correlations(saved: dict) -> list[str]:
    """Spearman's rho of each score with modes captured (as a share of M) and with KL: over the stacked-digit runs,
    and pooled with the 2-D runs of ``ground_truth.py`` (``results/ground_truth.json``; NDB/K there at K = M, here
    at K = 400, the K nearest M that 20,000 real samples allow)."""
    from ground_truth import spearman

    k_high = saved["bin_sizes"][-1]
    mine = [{"share": r["modes"] / 1000, "kl": r["kl"], "NDB/K (K near M)": r[f"ndb_k{k_high}"],
             "JS": r[f"js_k{k_high}"], "recall": r["recall"], "coverage": r["coverage"],
             "birthday duplicates": r["duplicates"]} for r in saved["runs"]]
    two_d = []
    path = OUT / "ground_truth.json"
    if path.exists():
        for r in json.loads(path.read_text())["rows"]:
            two_d.append({"share": r["modes_captured"] / r["modes"],
                          "kl": r["reverse_kl"] if math.isfinite(r["reverse_kl"]) else 10.0,
                          "NDB/K (K near M)": r[f"ndb_ratio_K{r['modes']}"], "JS": r["js"], "recall": r["recall"],
                          "coverage": r["coverage"], "birthday duplicates": r["duplicates"]})
    lines = ["", f"Spearman's rho (95% interval, Fisher transform) over the {len(mine)} stacked-digit runs, and pooled "
             f"with the {len(two_d)} 2-D runs of ground_truth.py ({len(mine) + len(two_d)} runs):", "",
             "| score | stacked: with modes captured | stacked: with KL | pooled: with modes captured | pooled: "
             "with KL |",
             "| --- | --- | --- | --- | --- |"]
    for score in ("NDB/K (K near M)", "JS", "recall", "coverage", "birthday duplicates"):
        cells = []
        for rows in (mine, mine + two_d):
            for target in ("share", "kl"):
                rho, low, high = spearman([r[score] for r in rows], [r[target] for r in rows])
                cells.append(f"{rho:+.2f} ({low:+.2f} to {high:+.2f})")
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    return lines


def figure(saved: dict, path: Path) -> None:
    """Per checkpoint of every run: true modes captured, NDB/K at K = 400, missing-mode bins and duplicates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k_high = saved["bin_sizes"][-1]
    colours = dict(zip(GENERATORS, ("tab:blue", "tab:red", "tab:green", "tab:purple"), strict=True))
    panels = (("modes", "true modes captured (of 1000)"), (f"ndb_k{k_high}", f"NDB/K at K = {k_high}"),
              (f"missing_k{k_high}", f"missing-mode bins (p < alpha/K) at K = {k_high}"),
              ("duplicates", "birthday duplicate pairs in 1,000 (+1)"))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for run in saved["runs"]:
            steps = [c["step"] for c in run["trajectory"]]
            values = [c[key] + (1 if key == "duplicates" else 0) for c in run["trajectory"]]
            ax.plot(steps, values, "o-", ms=3, color=colours[run["generator"]],
                    label=f"{run['generator']} seed {run['seed']}", alpha=0.6 + 0.4 * (run["seed"] == 0))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step")
        if key == "duplicates":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("stacked digits (1,000 modes): DCGANs on a 2-core CPU, scored at 10 checkpoints", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(saved: dict) -> str:
    k_low, k_high = saved["bin_sizes"]
    lines = [f"stacked digits, 1,000 modes; {saved['machine']}; {saved['steps']} steps per run, batch {BATCH}; "
             f"whole run {saved['seconds'] / 60:.1f} min"
             + (f" ({saved['parallel_parts']} processes in parallel, 1 thread each)" if "parallel_parts" in saved
                else ""),
             f"real data (test digits): {saved['real']['modes']} modes in 10,000 samples, KL {saved['real']['kl']:.3f}",
             "", f"| generator | seed | modes (of 1000) | KL | NDB/K@{k_low} | NDB/K@{k_high} | "
             f"missing-mode bins@{k_high} | JS@{k_high} | recall | coverage (chance) | duplicate pairs in 1,000 |",
             "|" + " --- |" * 11]
    for r in saved["runs"]:
        lines.append(f"| {r['generator']} | {r['seed']} | {r['modes']} | {r['kl']:.3f} | {r[f'ndb_k{k_low}']:.3f} | "
                     f"{r[f'ndb_k{k_high}']:.3f} | {r[f'missing_k{k_high}']} | {r[f'js_k{k_high}']:.4f} | "
                     f"{r['recall']:.3f} | {r['coverage']:.3f} ({r['null_coverage']:.3f}) | {r['duplicates']} |")
    return "\n".join(lines + correlations(saved))


if __name__ == "__main__":
    main()
