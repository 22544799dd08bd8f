"""The collapse monitor's rule, re-derived from runs whose captured modes are known.

    python benchmarks/monitor_rule.py            # 2-D runs (about 10 minutes) + the stacked-digit checkpoints
    python benchmarks/monitor_rule.py --quick    # 2 seeds, 1,500 steps (a few minutes)
    python benchmarks/monitor_rule.py --reuse    # evaluate the saved checkpoints again, training nothing

Trajectories: every 2-D generator of ``ground_truth.py`` (GAN, weak D, PacGAN2 on the ring and the grid, several
seeds), scored at 10 checkpoints the way :class:`fastndb.demo.training.CollapseMonitor` scores an epoch (bins on
4,000 real samples, so K = 100 by the monitor's default rule, holdout design; 2,000 generated samples; coverage on
500 + 500); plus the 10 checkpoints of every stacked-digit run of ``stacked_digits.py`` (K = 100 there too).

Truth at a checkpoint: "dropping modes" when the generator's samples miss a true mode: fewer than M modes with a
high-quality sample among 2,000 (2-D; a perfect sampler misses none), fewer than 95% of the modes the real data
show in as many samples (stacked digits: 10,000 samples). A run is *healthy* when no checkpoint after the warm-up
(the first 3 of 10) drops a mode, *collapsing* when one does.

Candidate signals per checkpoint: ``ndb``: NDB/K > 0.8 (the old rule: near-total collapse); ``bin``: an
under-filled bin with p < alpha / K (the report's one-bin rule); ``emptied``: such a bin that the generator fills
to less than a quarter of its real share (:func:`fastndb._core.signals.emptied_bins`); ``cov``: coverage more than
3 standard errors below its chance level; and unions of them. A rule flags a run when its signal holds at
``patience`` checkpoints in a row after the warm-up. For each rule: the false-alarm rate on healthy runs (flagged
at all), the detection rate on collapsing runs (flagged at or after the first checkpoint that drops a mode), and
the median delay in checkpoints from that first checkpoint to the flag.
Writes benchmarks/results/monitor_rule{,_quick}.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path

import torch
from _common import cpu_name
from ground_truth import GENERATORS, train_checkpoints

import fastndb
from fastndb._core.signals import emptied_bins, missing_mode_bins
from fastndb._core.verdict import decide
from fastndb.demo.ground_truth import GRID, RING, mode_statistics

OUT = Path(__file__).resolve().parent / "results"
WARMUP, CHECKPOINTS = 3, 10
SIGNALS = {
    "ndb (old: NDB/K > 0.8)": lambda c: c["ndb_ratio"] > 0.8,
    "bin (p < alpha/K, under-filled)": lambda c: c["missing_bins"] >= 1,
    "cov (coverage 3 se below chance)": lambda c: c["coverage_shortfall"] > 3,
    "emptied (such a bin below 1/4 of its real share)": lambda c: c["emptied_bins"] >= 1,
    "bin or cov": lambda c: c["missing_bins"] >= 1 or c["coverage_shortfall"] > 3,
    "emptied or ndb": lambda c: c["emptied_bins"] >= 1 or c["ndb_ratio"] > 0.8,
    "bin or cov or ndb": lambda c: c["missing_bins"] >= 1 or c["coverage_shortfall"] > 3 or c["ndb_ratio"] > 0.8,
    # the verdict of issue 24 (the monitor's rule since): differs beyond chance and the missing mass's 95% interval
    # above the tolerance
    "verdict missing, tolerance 1% (the monitor's default)": lambda c: c["differs"] and c["missing_low"] > 0.01,
    "verdict missing, tolerance 2%": lambda c: c["differs"] and c["missing_low"] > 0.02,
    "verdict missing, tolerance 5%": lambda c: c["differs"] and c["missing_low"] > 0.05,
    "verdict missing, tolerance 25%": lambda c: c["differs"] and c["missing_low"] > 0.25,
}
MONITOR_RULE = "verdict missing, tolerance 1% (the monitor's default)"


def verdict_fields(result, covered) -> dict:
    """The verdict's numbers at one checkpoint (coverage in the combined test; no birthday test here)."""
    verdict = decide(result, coverage=covered)
    return {"differs": verdict.differs, "missing_estimate": result.missing.estimate,
            "missing_low": result.missing.low, "missing_high": result.missing.high}


def shortfall(coverage: float, null: float, num_real: int) -> float:
    """How many binomial standard errors the coverage lies below its chance level."""
    return (null - coverage) / math.sqrt(max(null * (1 - null), 1e-12) / num_real)


def two_d_runs(seeds: list[int], steps: int) -> list[dict]:
    runs = []
    for protocol in (RING, GRID):
        for seed in seeds:
            real = protocol.sample(4000, seed=10_000 + seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ndb = fastndb.NDB(100, seed=seed, progress=False).fit(real)
            coverage_real = real[:500]
            for name, setting in GENERATORS.items():
                began = time.perf_counter()
                trajectory = []
                for step, generator in train_checkpoints(protocol, seed=seed, steps=steps,
                                                         every=steps // CHECKPOINTS, **setting):
                    with torch.no_grad():
                        fake = generator(torch.randn(2000, 2, generator=torch.Generator().manual_seed(step + seed)))
                    truth = mode_statistics(fake, protocol)
                    result = ndb.score(fake)
                    covered = fastndb.prdc(coverage_real, fake[:500], nearest_k=5)
                    trajectory.append({
                        "step": step, "modes": truth.modes_captured,
                        "dropping": truth.modes_captured < protocol.num_modes, "ndb_ratio": result.ndb_ratio,
                        "missing_bins": missing_mode_bins(result), "emptied_bins": emptied_bins(result),
                        "coverage": covered.coverage, "null_coverage": covered.expected_null_coverage,
                        "coverage_shortfall": shortfall(covered.coverage, covered.expected_null_coverage, 500),
                        **verdict_fields(result, covered)})
                runs.append({"data": protocol.name, "generator": name, "seed": seed, "num_modes": protocol.num_modes,
                             "trajectory": trajectory, "seconds": time.perf_counter() - began})
                print(f"{protocol.name}, {name}, seed {seed}: modes per checkpoint "
                      f"{[c['modes'] for c in trajectory]} ({runs[-1]['seconds']:.0f} s)", flush=True)
    return runs


def checkpoint(result, covered, modes: int, dropping: bool, step: int) -> dict:
    """One checkpoint's record from its NDB and PRDC results."""
    return {"step": step, "modes": modes, "dropping": dropping, "ndb_ratio": result.ndb_ratio,
            "missing_bins": missing_mode_bins(result), "emptied_bins": emptied_bins(result),
            "coverage": covered.coverage, "null_coverage": covered.expected_null_coverage,
            "coverage_shortfall": shortfall(covered.coverage, covered.expected_null_coverage, covered.num_real),
            **verdict_fields(result, covered)}


def oracle_runs(num_runs: int) -> list[dict]:
    """Samplers whose modes are known exactly: the data's own distribution (healthy: the monitor's false alarms
    under the null), and the data with modes removed (one mode, or half of them; stacked digits: the 100 modes
    whose first digit is 7), scored at 10 checkpoints of fresh samples each, as the trained runs are."""
    runs = []
    for protocol in (RING, GRID):
        m = protocol.num_modes
        real = protocol.sample(4000, seed=50_000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ndb = fastndb.NDB(100, seed=0, progress=False).fit(real)
        for label, keep in (("oracle", m), ("oracle, 1 mode dropped", m - 1), ("oracle, half dropped", m // 2)):
            for run in range(num_runs):
                trajectory = []
                for i in range(CHECKPOINTS):
                    fake = protocol.sample(2000, seed=60_000 + 1000 * run + i, keep=keep)
                    covered = fastndb.prdc(real[:500], fake[:500], nearest_k=5)
                    trajectory.append(checkpoint(ndb.score(fake), covered, keep, keep < m, i))
                runs.append({"data": protocol.name, "generator": label, "seed": run, "num_modes": m,
                             "trajectory": trajectory})
    from stacked_digits import digit_pools

    from fastndb.demo.ground_truth import stacked_digits

    _, (test_x, test_y) = digit_pools()
    real, _ = stacked_digits(20_000, seed=99, images=test_x, labels=test_y)
    real = real * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ndb = fastndb.NDB(100, seed=0, value_range=(-1, 1), progress=False).fit(real)
        for label, drop in (("oracle", False), ("oracle, 100 modes dropped", True)):
            for run in range(max(2, num_runs // 2)):
                trajectory = []
                for i in range(CHECKPOINTS):
                    fake, modes = stacked_digits(6000, seed=70_000 + 1000 * run + i, images=test_x, labels=test_y)
                    if drop:
                        fake = fake[modes // 100 != 7]
                    fake = fake[:5000] * 2 - 1
                    covered = fastndb.prdc(real[-1000:], fake[:1000], nearest_k=5, value_range=(-1, 1))
                    trajectory.append(checkpoint(ndb.score(fake), covered, 900 if drop else 1000, drop, i))
                runs.append({"data": "stacked digits", "generator": label, "seed": run, "num_modes": 1000,
                             "trajectory": trajectory})
    return runs


def stacked_runs(path: Path) -> list[dict]:
    """The stacked-digit checkpoints in this script's terms (K = 100 bins, coverage on 1,000 + 1,000)."""
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    floor = 0.95 * saved["real"]["modes"]
    runs = []
    for run in saved["runs"]:
        if "differs_k100" not in run["trajectory"][0]:  # saved before the verdict existed: rerun stacked_digits.py
            continue
        trajectory = [{"step": c["step"], "modes": c["modes"], "dropping": c["modes"] < floor,
                       "ndb_ratio": c["ndb_k100"], "missing_bins": c["missing_k100"], "emptied_bins": c["emptied_k100"],
                       "coverage": c["coverage"],
                       "null_coverage": c["null_coverage"],
                       "coverage_shortfall": shortfall(c["coverage"], c["null_coverage"], c["num_real_coverage"]),
                       "differs": c["differs_k100"], "missing_estimate": c["missing_k100_estimate"],
                       "missing_low": c["missing_k100_low"], "missing_high": c["missing_k100_high"]}
                      for c in run["trajectory"]]
        runs.append({"data": "stacked digits", "generator": run["generator"], "seed": run["seed"],
                     "num_modes": 1000, "trajectory": trajectory})
    return runs


def first_flag(trajectory: list[dict], signal, patience: int) -> int | None:
    """Index of the checkpoint at which the rule flags (``patience`` signals in a row after the warm-up)."""
    streak = 0
    for i, checkpoint in enumerate(trajectory):
        streak = streak + 1 if i >= WARMUP and signal(checkpoint) else 0
        if streak >= patience:
            return i
    return None


def evaluate(runs: list[dict]) -> list[dict]:
    rows = []
    for patience in (1, 2):
        for name, signal in SIGNALS.items():
            healthy = collapsing = false_alarms = detected = 0
            delays = []
            checkpoint_fp = checkpoint_healthy = 0
            for run in runs:
                after = run["trajectory"][WARMUP:]
                first_drop = next((i for i, c in enumerate(run["trajectory"]) if i >= WARMUP and c["dropping"]), None)
                flag = first_flag(run["trajectory"], signal, patience)
                for c in after:
                    if not c["dropping"]:
                        checkpoint_healthy += 1
                        checkpoint_fp += bool(signal(c))
                if first_drop is None:
                    healthy += 1
                    false_alarms += flag is not None
                else:
                    collapsing += 1
                    if flag is not None and flag >= first_drop:
                        detected += 1
                        delays.append(flag - first_drop)
            row = {"rule": name, "patience": patience, "healthy_runs": healthy,
                   "false_alarms": false_alarms, "collapsing_runs": collapsing, "detected": detected,
                   "median_delay": statistics.median(delays) if delays else None,
                   "healthy_checkpoints": checkpoint_healthy, "signal_on_healthy_checkpoints": checkpoint_fp}
            for share in (0.05, 0.10):  # runs that come to miss at least this share of the mass in dropped modes
                runs_at, found, waits = 0, 0, []
                for run in runs:
                    first = next((i for i, c in enumerate(run["trajectory"])
                                  if i >= WARMUP and 1 - c["modes"] / run["num_modes"] >= share), None)
                    if first is None:
                        continue
                    runs_at += 1
                    flag = first_flag(run["trajectory"], signal, patience)
                    if flag is not None and flag >= first:
                        found += 1
                        waits.append(flag - first)
                row[f"runs_{share:g}"], row[f"detected_{share:g}"] = runs_at, found
                row[f"median_delay_{share:g}"] = statistics.median(waits) if waits else None
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="re-evaluate the saved 2-D trajectories")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps = [0, 1], 1500
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    name = "monitor_rule_quick" if args.quick else "monitor_rule"
    saved_path = OUT / f"{name}.json"
    two_d = json.loads(saved_path.read_text())["two_d_runs"] if args.reuse else two_d_runs(args.seeds, args.steps)
    stacked = stacked_runs(OUT / ("stacked_digits_quick.json" if args.quick else "stacked_digits.json"))
    oracles = oracle_runs(4 if args.quick else 10)
    groups = {"all": two_d + stacked + oracles, "trained 2-D": two_d, "trained stacked digits": stacked,
              "oracles": oracles}
    runs = groups["all"]
    rows = [{"group": group, **row} for group, members in groups.items() if members for row in evaluate(members)]
    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
    saved_path.write_text(json.dumps({"machine": machine, "steps": args.steps, "seeds": args.seeds,
                                      "two_d_runs": two_d, "rows": rows}, indent=1))
    lines = [f"monitor rule from {len(runs)} runs ({len(two_d)} trained 2-D: ring/grid x {', '.join(GENERATORS)} x "
             f"seeds {args.seeds}, {args.steps} steps; {len(stacked)} trained stacked digits; {len(oracles)} oracle "
             f"samplers), {CHECKPOINTS} checkpoints each, warm-up {WARMUP}; {machine}", "",
             "| runs | rule | patience | false alarms (healthy runs) | signal on healthy checkpoints | detected "
             "(collapsing runs) | median delay (checkpoints) | detected, >= 5% of the mass in dropped modes (delay) | "
             "detected, >= 10% (delay) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    shown = lambda d: "" if d is None else f"{d:g}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['group']} | {r['rule']} | {r['patience']} | {r['false_alarms']} / {r['healthy_runs']} | "
                     f"{r['signal_on_healthy_checkpoints']} / {r['healthy_checkpoints']} | "
                     f"{r['detected']} / {r['collapsing_runs']} | {shown(r['median_delay'])} | "
                     f"{r['detected_0.05']} / {r['runs_0.05']} ({shown(r['median_delay_0.05'])}) | "
                     f"{r['detected_0.1']} / {r['runs_0.1']} ({shown(r['median_delay_0.1'])}) |")
    lines += ["", "| data | generator | seed | modes per checkpoint | missing mass per checkpoint (%) | flagged at "
              "(old rule: emptied or ndb, patience 2) | flagged at (the verdict, tolerance 1%, patience 2) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in two_d + stacked:
        old = first_flag(run["trajectory"], SIGNALS["emptied or ndb"], 2)
        new = first_flag(run["trajectory"], SIGNALS[MONITOR_RULE], 2)
        masses = " ".join(f"{100 * max(c['missing_estimate'], 0):.0f}" for c in run["trajectory"])
        lines.append(f"| {run['data']} | {run['generator']} | {run['seed']} | "
                     f"{' '.join(str(c['modes']) for c in run['trajectory'])} / {run['num_modes']} | "
                     f"{masses} | "
                     f"{'' if old is None else old + 1} | {'' if new is None else new + 1} |")
    (OUT / f"{name}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
