"""Mode-collapse experiments: what NDB and the birthday test say while GANs train. Scripts, not tests.

    python benchmarks/collapse_experiments.py labelflip [--seeds 0 1] [--epochs 8]   # (a) DCGAN on digits
    python benchmarks/collapse_experiments.py toy [--seeds 0 1 2]                     # (b) 2-D GANs
    python benchmarks/collapse_experiments.py epochs                                  # (c) NDB next to grids
    python benchmarks/collapse_experiments.py replot                                  # redraw (a) from JSON
    python benchmarks/collapse_experiments.py summary [--tags _long _40 _high]        # (a) per setting, over seeds
    python benchmarks/collapse_experiments.py labelflip --only "flip 0%" "flip 10%" "flip 20%" "latent size 1" \
        --seeds 0 1 2 --epochs 20 --tag _long
    python benchmarks/collapse_experiments.py labelflip --only "flip 0%" --seeds 0 1 2 --epochs 40 --tag _40
    python benchmarks/collapse_experiments.py labelflip --only "flip 35%" "flip 50%" --epochs 12 --tag _high

(a) A DCGAN on scikit-learn's digits (32 x 32) with 0, 1, 5, 10, 15, 20% of the discriminator's labels flipped,
    plus latent size 1: NDB/K and duplicate pairs per epoch, and the epoch the monitor flags collapse.
(b) Small MLP GANs on 2-D data: 8 Gaussians on a ring, 25 on a grid, and scikit-learn's two moons with latent
    size 2 and 4. For the mixtures, a mode is captured when at least 1% of 2000 samples fall within 3 standard
    deviations of it, and a sample is high quality when it does; for the moons, when it lies within 0.1 of the
    noiseless curve, and a moon is captured when it holds at least 10% of the samples. NDB (K = 20) compares the
    samples with fresh real samples.
(c) The demo's healthy and collapsed runs: NDB/K at each epoch next to the sample grids (written to
    benchmarks/results/collapse/).

Results (tables, curves) go to benchmarks/results/collapse/, with the machine named.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _common import cpu_name  # noqa: E402
from torch import nn  # noqa: E402

import fastndb  # noqa: E402
from fastndb._core.statistics import compare_histograms  # noqa: E402
from fastndb.demo.runner import load_training_images  # noqa: E402
from fastndb.demo.training import CollapseMonitor, GANConfig, train_gan  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "collapse"


def machine() -> str:
    threads = torch.get_num_threads()
    return f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} ({threads} threads)"


# ------------------------------------------------------------------------------------------ (a) label flip
def label_flip(args: argparse.Namespace) -> None:
    real = load_training_images(None, image_size=32)
    settings = [("flip 0%", {"label_flip": 0.0}), ("flip 1%", {"label_flip": 0.01}),
                ("flip 5%", {"label_flip": 0.05}), ("flip 10%", {"label_flip": 0.10}),
                ("flip 15%", {"label_flip": 0.15}), ("flip 20%", {"label_flip": 0.20}),
                ("latent size 1", {"latent_size": 1})]
    if args.only:  # beyond the range, only when named: where flipping stops the GAN learning
        settings += [("flip 35%", {"label_flip": 0.35}), ("flip 50%", {"label_flip": 0.50})]
        unknown = set(args.only) - {name for name, _ in settings}
        if unknown:
            raise SystemExit(f"--only: unknown settings {sorted(unknown)}")
        settings = [(name, options) for name, options in settings if name in args.only]
    rows = []
    for name, options in settings:
        for seed in args.seeds:
            start = time.perf_counter()
            config = GANConfig(epochs=args.epochs, steps_per_epoch=args.steps, width=32, seed=seed, **options)
            monitor = CollapseMonitor(real, threshold=args.threshold, seed=seed)
            result = train_gan(real, config, monitor=monitor, progress=False)
            ratios = [r.ndb_ratio for r in result.records]
            dups = [r.num_duplicates for r in result.records]
            final = monitor.last_result
            null = null_levels(final.real_counts, final.num_fake, seed=seed)
            rows.append({"setting": name, "seed": seed, "flagged_at": result.collapsed_at,
                         "ndb_ratio_per_epoch": ratios, "duplicate_pairs_per_epoch": dups,
                         "js_per_epoch": [r.js for r in result.records],
                         "final_ndb_ratio": ratios[-1], "final_duplicate_pairs": dups[-1],
                         "final_tv": total_variation(final.real_proportions, final.fake_proportions),
                         "final_largest_gap": float((final.fake_proportions - final.real_proportions).abs().max()),
                         "final_real_proportions": final.real_proportions.tolist(),
                         "final_fake_proportions": final.fake_proportions.tolist(),
                         **{f"null_{key}": value for key, value in null.items()},
                         "seconds": time.perf_counter() - start})
            print(f"{name:14s} seed {seed}: flagged at {result.collapsed_at}, NDB/K per epoch "
                  f"{[round(v, 2) for v in ratios]}, duplicate pairs {dups}, final TV {rows[-1]['final_tv']:.3f} "
                  f"(null {null['tv']:.3f})", flush=True)
    lines = [f"machine: {machine()}",
             f"DCGAN (width 32) on scikit-learn digits at 32 x 32, {args.epochs} epochs of {args.steps} batches of 64; "
             f"monitor: K = 20, 2000 samples per epoch, 500 for the birthday test; collapse = NDB/K > "
             f"{args.threshold} for 2 epochs after 3 warm-up epochs", "",
             "last epoch: JS and total variation (TV, half the L1 distance) of the bin histograms, the largest gap "
             "between a bin's fake and real share; 'null' columns: the same for a perfect generator (fake counts "
             "drawn from the real shares at the same sample sizes, 1000 draws: mean NDB/K, mean TV)", "",
             f"{'setting':14s} {'seed':>4s} {'flagged at':>10s}  {'NDB/K per epoch':44s} {'dup pairs':>9s} "
             f"{'JS':>6s} {'TV':>5s} {'gap':>5s} {'null NDB/K':>10s} {'null TV':>7s}"]
    for row in rows:
        flagged = "-" if row["flagged_at"] is None else str(row["flagged_at"])
        ratios = " ".join(f"{v:.2f}" for v in row["ndb_ratio_per_epoch"])
        lines.append(f"{row['setting']:14s} {row['seed']:>4d} {flagged:>10s}  {ratios:44s} "
                     f"{row['final_duplicate_pairs']:>9d} {row['js_per_epoch'][-1]:>6.3f} {row['final_tv']:>5.3f} "
                     f"{row['final_largest_gap']:>5.3f} {row['null_ndb_ratio']:>10.3f} {row['null_tv']:>7.3f}")
    write(f"labelflip{args.tag}", lines, rows)
    plot_label_flip(rows, args.threshold, f"labelflip{args.tag}.png")


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Half the L1 distance of two histograms: the share of samples that would have to move bins."""
    return float((p - q).abs().sum() / 2)


def null_levels(real_counts: torch.Tensor, num_fake: int, *, draws: int = 1000, seed: int = 0) -> dict:
    """NDB/K, JS and TV a perfect generator would show: both histograms drawn from the real shares.

    The real shares are estimated from ``real_counts``; real and fake counts are redrawn from them at the
    experiment's sample sizes, and the monitor's test (``alpha = 0.05``) is applied to each draw.
    """
    g = torch.Generator().manual_seed(seed)
    shares = real_counts.to(torch.float64) / real_counts.sum()
    num_real, num_bins = int(real_counts.sum()), real_counts.numel()
    ratios, js, tv = [], [], []
    for _ in range(draws):
        real = torch.bincount(torch.multinomial(shares, num_real, replacement=True, generator=g), minlength=num_bins)
        fake = torch.bincount(torch.multinomial(shares, num_fake, replacement=True, generator=g), minlength=num_bins)
        result = compare_histograms(real, fake, alpha=0.05)
        ratios.append(result.ndb_ratio)
        js.append(result.js)
        tv.append(total_variation(result.real_proportions, result.fake_proportions))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"ndb_ratio": mean(ratios), "js": mean(js), "tv": mean(tv)}


def plot_label_flip(rows: list[dict], threshold: float, name: str = "labelflip.png") -> None:
    """NDB/K per epoch, one colour per setting, line style per seed (also from a saved labelflip.json)."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    colours = plt.get_cmap("tab10" if len(settings) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        ratios = r["ndb_ratio_per_epoch"]
        colour = colours(settings.index(r["setting"]))
        ax.plot(range(1, len(ratios) + 1), ratios, marker="o", markersize=3, color=colour,
                linestyle="-" if r["seed"] == seeds[0] else ":",
                label=r["setting"] if r["seed"] == seeds[0] else None)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.axhline(0.05, color="0.4", linestyle=":", linewidth=1, label="chance (alpha)")
    others = ", ".join(str(seed) for seed in seeds[1:])
    ax.set_xlabel(f"epoch (solid: seed {seeds[0]}" + (f"; dotted: seed{'s' if len(seeds) > 2 else ''} {others})"
                                                       if others else ")"))
    ax.set_ylabel("NDB/K")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(OUT / name, dpi=110)


def summarise_label_flip(args: argparse.Namespace) -> None:
    """One line per setting over its seeds, from labelflip_<tag>.json files (no training)."""
    rows = [row for tag in args.tags for row in json.loads((OUT / f"labelflip{tag}.json").read_text())]
    spread = lambda values: f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"  # noqa: E731
    lines = [f"summary of {', '.join(f'labelflip{tag}.txt' for tag in args.tags)} (machine and settings there)",
             "NDB/K: mean of each run's last 5 epochs; JS, TV (bin histograms) and duplicate pairs: last epoch; "
             "ranges over seeds; chance: what a generator sampling like the data shows at these sample sizes", "",
             f"{'setting':14s} {'epochs':>6s} {'seeds':>7s} {'flagged at':>12s} {'NDB/K':>11s} {'JS':>11s} "
             f"{'TV':>11s} {'dup pairs':>13s} {'chance NDB/K':>12s} {'chance JS':>9s} {'chance TV':>9s}"]
    summary = []
    for setting, num_epochs in dict.fromkeys((r["setting"], len(r["ndb_ratio_per_epoch"])) for r in rows):
        runs = [r for r in rows if r["setting"] == setting and len(r["ndb_ratio_per_epoch"]) == num_epochs]
        late = [sum(r["ndb_ratio_per_epoch"][-5:]) / len(r["ndb_ratio_per_epoch"][-5:]) for r in runs]
        flagged = ",".join("-" if r["flagged_at"] is None else str(r["flagged_at"]) for r in runs)
        dups = [r["final_duplicate_pairs"] for r in runs]
        values = {key: [r[key] for r in runs] for key in ("final_tv", "null_ndb_ratio", "null_js", "null_tv")}
        js = [r["js_per_epoch"][-1] for r in runs]
        summary.append({"setting": setting, "epochs": num_epochs,
                        "seeds": [r["seed"] for r in runs], "flagged_at": [r["flagged_at"] for r in runs],
                        "late_ndb_ratio": late, "final_js": js, "final_tv": values["final_tv"],
                        "final_duplicate_pairs": dups,
                        **{f"chance_{k}": statistics.mean(values[f"null_{k}"]) for k in ("ndb_ratio", "js", "tv")}})
        lines.append(f"{setting:14s} {num_epochs:>6d} "
                     f"{','.join(str(r['seed']) for r in runs):>7s} {flagged:>12s} {spread(late):>11s} "
                     f"{spread(js):>11s} {spread(values['final_tv']):>11s} {f'{min(dups)}-{max(dups)}':>13s} "
                     f"{statistics.mean(values['null_ndb_ratio']):>12.3f} {statistics.mean(values['null_js']):>9.4f} "
                     f"{statistics.mean(values['null_tv']):>9.3f}")
    write("labelflip_summary", lines, summary)


# ------------------------------------------------------------------------------------------------ (b) toy
def ring(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    angles = torch.arange(8) * (2 * math.pi / 8)
    centres = torch.stack([torch.cos(angles), torch.sin(angles)], 1) * 2.0
    which = torch.randint(8, (n,), generator=g)
    return centres[which] + 0.02 * torch.randn(n, 2, generator=g), centres, 0.02


def grid(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    axis = torch.arange(-2, 3, dtype=torch.float32)
    centres = torch.cartesian_prod(axis, axis)
    which = torch.randint(25, (n,), generator=g)
    return centres[which] + 0.05 * torch.randn(n, 2, generator=g), centres, 0.05


def moons(n: int, g: torch.Generator) -> torch.Tensor:
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x, y], 1) + 0.05 * torch.randn(n, 2, generator=g)


def moon_distance(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of each point to the noiseless two-moons curve, and which moon is nearer (0 upper, 1 lower)."""
    t = torch.linspace(0, math.pi, 400)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    d_upper = torch.cdist(points, upper).min(1).values
    d_lower = torch.cdist(points, lower).min(1).values
    return torch.minimum(d_upper, d_lower), (d_lower < d_upper).long()


def train_toy(data_fn, latent: int, seed: int, steps: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
        discriminator = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                                      nn.Linear(128, 1))
    opt_g = torch.optim.Adam(generator.parameters(), 1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), 1e-3, betas=(0.5, 0.999))
    loss = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        real = data_fn(256, g)
        fake = generator(torch.randn(256, latent, generator=g))
        d_loss = loss(discriminator(real), torch.ones(256, 1)) + loss(discriminator(fake.detach()), torch.zeros(256, 1))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = loss(discriminator(fake), torch.ones(256, 1))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return generator


def toy(args: argparse.Namespace) -> None:
    rows = []
    settings = [("ring of 8", lambda n, g: ring(n, g)[0], ring, 2), ("grid of 25", lambda n, g: grid(n, g)[0], grid, 2),
                ("two moons", moons, None, 2), ("two moons", moons, None, 4)]
    fig, axes = plt.subplots(len(args.seeds), len(settings), figsize=(3 * len(settings), 3 * len(args.seeds)),
                             squeeze=False)
    for column, (name, data_fn, mixture, latent) in enumerate(settings):
        for row_index, seed in enumerate(args.seeds):
            start = time.perf_counter()
            generator = train_toy(data_fn, latent, seed, args.toy_steps)
            g = torch.Generator().manual_seed(1000 + seed)
            with torch.no_grad():
                samples = generator(torch.randn(2000, latent, generator=g))
            real_fit, real_test = data_fn(20000, g), data_fn(2000, g)
            ndb = fastndb.NDB(20, seed=seed).fit(real_fit)
            result, null = ndb.score(samples), ndb.score(real_test)
            if mixture is not None:
                _, centres, std = mixture(1, g)
                distance = torch.cdist(samples, centres)
                nearest = distance.min(1)
                good = nearest.values < 3 * std
                counts = torch.bincount(nearest.indices[good], minlength=len(centres))
                captured = int((counts >= 0.01 * len(samples)).sum())
                modes = f"{captured}/{len(centres)}"
            else:
                dist, which = moon_distance(samples)
                good = dist < 0.1
                counts = torch.bincount(which[good], minlength=2)
                modes = f"{int((counts >= 0.1 * len(samples)).sum())}/2"
            rows.append({"data": name, "latent": latent, "seed": seed, "modes_captured": modes,
                         "high_quality": float(good.float().mean()), "ndb_ratio": result.ndb_ratio,
                         "null_ndb_ratio": null.ndb_ratio, "js": result.js,
                         "seconds": time.perf_counter() - start})
            print(rows[-1], flush=True)
            ax = axes[row_index][column]
            ax.scatter(real_test[:, 0], real_test[:, 1], s=1, c="0.7")
            ax.scatter(samples[:, 0], samples[:, 1], s=1, c="tab:blue")
            ax.set_title(f"{name}, z={latent}, seed {seed}\nNDB/K {result.ndb_ratio:.2f}, modes {modes}",
                         fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(OUT / "toy.png", dpi=90)
    lines = [f"machine: {machine()}",
             f"MLP GANs (2 x 128 hidden), Adam 1e-3, {args.toy_steps} steps of 256; 2000 samples; NDB with K = 20 "
             f"fitted on 20,000 real (holdout), null = 2000 fresh real samples", "",
             f"{'data':12s} {'latent':>6s} {'seed':>4s} {'modes':>7s} {'high quality':>12s} {'NDB/K':>6s} "
             f"{'null NDB/K':>10s} {'JS':>8s}"]
    for r in rows:
        lines.append(f"{r['data']:12s} {r['latent']:>6d} {r['seed']:>4d} {r['modes_captured']:>7s} "
                     f"{r['high_quality']:>12.2f} {r['ndb_ratio']:>6.2f} {r['null_ndb_ratio']:>10.2f} {r['js']:>8.4f}")
    write("toy", lines, rows)


# ----------------------------------------------------------------------------------------------- (c) epochs
def epochs(args: argparse.Namespace) -> None:
    rows = []
    for name, options in [("healthy", {}), ("latent size 1", {"latent_size": 1})]:
        folder = OUT / f"epochs_{name.replace(' ', '_')}"
        if folder.exists():
            shutil.rmtree(folder)
        real = load_training_images(None, image_size=32)
        config = GANConfig(epochs=args.epochs, steps_per_epoch=args.steps, width=32, seed=args.seeds[0], **options)
        result = train_gan(real, config, monitor=CollapseMonitor(real, threshold=args.threshold, seed=args.seeds[0]),
                           out_dir=folder, progress=False)
        for record in result.records:
            rows.append({"run": name, **record.to_dict()})
        print(name, [(r.epoch, r.ndb, r.num_duplicates) for r in result.records], flush=True)
    lines = [f"machine: {machine()}", f"DCGAN runs of the demo, {args.epochs} epochs of {args.steps} batches; grids "
             f"in epochs_<run>/samples_epochNNN.png", "",
             f"{'run':14s} {'epoch':>5s} {'NDB':>4s} {'NDB/K':>6s} {'JS':>7s} {'dup pairs':>9s} {'flag':>5s}"]
    for r in rows:
        lines.append(f"{r['run']:14s} {r['epoch']:>5d} {r['ndb']:>4d} {r['ndb_ratio']:>6.2f} {r['js']:>7.4f} "
                     f"{r['num_duplicates']:>9d} {'yes' if r['collapsed'] else '-':>5s}")
    write("epochs", lines, rows)


def write(name: str, lines: list[str], rows: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (OUT / f"{name}.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("labelflip", "toy", "epochs", "replot", "summary"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150, help="batches per epoch")
    parser.add_argument("--toy-steps", type=int, default=3000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--only", nargs="+", help="labelflip: run only these settings, e.g. 'flip 0%%' 'flip 20%%'")
    parser.add_argument("--tag", default="", help="labelflip: suffix of the result files, e.g. _long")
    parser.add_argument("--tags", nargs="+", default=["_long", "_40", "_high"],
                        help="summary: the labelflip runs to sum up")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.experiment == "replot":  # redraw labelflip<tag>.png from labelflip<tag>.json, no training
        for tag in ("", "_long", "_40", "_high"):
            if (OUT / f"labelflip{tag}.json").exists():
                plot_label_flip(json.loads((OUT / f"labelflip{tag}.json").read_text()), args.threshold,
                                f"labelflip{tag}.png")
        return
    {"labelflip": label_flip, "toy": toy, "epochs": epochs, "summary": summarise_label_flip}[args.experiment](args)


if __name__ == "__main__":
    main()
