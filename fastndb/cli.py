"""The ``fastndb`` command: ``score``, ``birthday``, ``fit``, ``refs``, ``elbow``, ``bench`` and ``demo`` on files,
without code.

``--features NAME`` (``score``, ``birthday``, ``fit``) works in a named network's feature space (``--weights PATH``
for its weights file); ``fit REAL --name NAME`` stores the fitted bins as a named reference, ``score NAME FAKE``
scores against one, ``refs`` lists them and ``refs --remove NAME`` deletes one.

Inputs are image folders, ``.npy``, ``.npz[:name]`` or ``.pt[:name]`` files (:mod:`fastndb._core.files`). Errors print
one line on stderr, ``fastndb: error: ...``, and exit with status 1 (2 for a bad command line, as argparse
does); ``--debug`` shows the traceback and debug logs instead. Progress bars (tqdm) go to stderr on a terminal;
``--quiet`` silences them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from fastndb import __version__
from fastndb._core.memorization import COPY_ALPHA, CT_CELLS

EXIT_ERROR = 1
_DEFAULTS: dict[str, Any] = {}  # the options model's defaults, filled when the parser is built


# ------------------------------------------------------------------------------------------------ helpers
def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


def _check_device(text: str) -> None:
    """Refuse a ``--device`` this machine does not have (``cpu``, ``cuda``, ``cuda:N``, ``mps``), in one line."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or mps, got {text!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {text}: no CUDA device here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {text}: no MPS device here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or mps, got {text!r}")


def _load(spec: str, args: argparse.Namespace) -> Any:
    from fastndb._core.files import load_samples

    x = load_samples(spec, image_size=args.image_size, channels=args.channels, progress=_progress(args))
    return x if args.device == "cpu" else x.to(args.device)


def _value_range(args: argparse.Namespace) -> tuple[float, float] | None:
    return None if args.value_range is None else (args.value_range[0], args.value_range[1])


def _save_figure(fig: Any, path: str) -> None:
    from fastndb._core.optional import require

    require("matplotlib", "--plot/--grid").use("Agg")
    fig.savefig(path, dpi=110)
    logging.getLogger("fastndb").info("wrote %s", path)


def _json_ready(value: Any) -> Any:
    """Plain JSON: tuples as lists, non-finite floats as null (strict parsers reject Infinity/NaN)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_json(payload: dict) -> None:
    print(json.dumps(_json_ready(payload), allow_nan=False))


def _bin_list(indices: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


# --------------------------------------------------------------------------------------------- commands
def _feature(args: argparse.Namespace) -> Any:
    """``--features NAME`` (with ``--weights PATH``) as what ``feature=`` takes."""
    if getattr(args, "weights", None) is not None and args.feature is None:
        raise ValueError("--weights: give --features NAME too (the weights are that network's)")
    if args.feature is None:
        return None
    from fastndb import extractor

    return extractor(args.feature, weights=args.weights)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The options model's values from the command line (every option has a flag; ``--quiet`` is ``progress``)."""
    from fastndb import OPTION_NAMES

    options = {name: getattr(args, name) for name in OPTION_NAMES if name != "progress"}
    if options["value_range"] is not None:
        options["value_range"] = tuple(options["value_range"])
    options["feature"] = _feature(args)
    return {**options, "progress": _progress(args)}


def _with_bins(options: dict[str, Any], num_real: int, num_fake: int | None = None) -> dict[str, Any]:
    """The options with K from the sample sizes when ``--num-bins`` was not given."""
    from fastndb._core.options import default_num_bins

    if options["num_bins"] is not None:
        return options
    return {**options, "num_bins": default_num_bins(num_real, options["holdout_fraction"], options["mode"], num_fake)}


def _stored_reference(spec: str) -> Any:
    """The named reference ``spec`` when no file or folder of that name exists, else ``None``."""
    from fastndb._core.files import _split_key
    from fastndb._core.references import check_name, load_reference, reference_path

    if _split_key(spec)[0].exists():
        return None
    try:
        check_name(spec)
    except ValueError:
        return None
    return load_reference(spec) if reference_path(spec).exists() else None  # else: the file loader's own error


def _score(args: argparse.Namespace) -> int:
    from fastndb import NDB
    from fastndb._core import cache

    reference = _stored_reference(args.real)
    if reference is not None:
        chosen = {name for name, value in vars(args).items() if name in reference.options
                  and name != "feature" and value != _DEFAULTS.get(name)}
        if chosen:
            raise ValueError(f"--{sorted(chosen)[0].replace('_', '-')}: reference {reference.name!r} was fitted with "
                             f"its own bin options; only --features/--weights and the test options apply")
        if args.cache:
            raise ValueError("--cache: a named reference is stored already; give REAL as data to use --cache")
        test = {name: getattr(args, name) for name in ("alpha", "correction", "z_threshold")}
        ndb = reference.ndb(_feature(args), **test, progress=_progress(args))
        fake = _load(args.fake, args)
        space = "raw values" if reference.feature is None else f"features {reference.feature}"
        return _report_score(args, ndb.score(fake), reference.num_real,
                             f"{space}; seed {reference.options['seed']}; reference {reference.name!r} (it holds "
                             f"bins, not samples: no precision, recall, density or coverage)")
    options = _options(args)
    NDB(**{**options, "num_bins": options["num_bins"] or 2})  # options first: a bad one fails before files are read
    real, fake = _load(args.real, args), _load(args.fake, args)
    _same_sample_shape(real, fake, args)
    ndb = NDB(**_with_bins(options, real.shape[0], fake.shape[0]))
    source = "fitted"
    if args.cache:
        cache.usable_folder(Path(args.cache), "--cache")
        material = cache.key_material(real, ndb.options)
        cached = cache.load(Path(args.cache), material)
        if cached is not None:
            ndb.load_bins(cached)
            source = f"loaded from {cache.entry_path(Path(args.cache), material)}"
        else:
            ndb.fit(real, distributed=False)
            source = f"fitted, saved to {cache.save(Path(args.cache), material, ndb.bins)}"
    else:
        ndb.fit(real, distributed=False)
    space = "raw values" if ndb.options.feature is None else f"features {ndb.options.feature.identity()}"
    result = ndb.score(fake)  # first: its checks of FAKE against the bins name the bins
    coverage = None
    from fastndb.report import coverage_skipped

    skipped = coverage_skipped(args.nearest_k, real.shape[0], fake.shape[0], args.prdc_samples or None,
                               flag="--nearest-k", samples_flag="--prdc-samples")
    if args.prdc_samples and skipped is not None:
        warnings.warn(skipped, UserWarning, stacklevel=2)
    elif args.prdc_samples:
        from fastndb._core.coverage import prdc

        coverage = prdc(real, fake, nearest_k=args.nearest_k, feature=ndb.options.feature,
                        value_range=ndb.options.value_range, num_samples=args.prdc_samples, seed=args.seed,
                        progress=_progress(args))
    status = _report_score(args, result, real.shape[0], f"{space}; seed {args.seed}; bins {source}", coverage)
    if args.examples:
        _write_examples(args, ndb, result, real, fake)
    return status


def _same_sample_shape(real: Any, fake: Any, args: argparse.Namespace) -> None:
    """Refuse REAL and FAKE whose samples hold different numbers of values (they are flattened to compare) before
    anything is fitted, saying which flag aligns them."""
    if real[0].numel() == fake[0].numel() or getattr(args, "feature", None) is not None:
        return  # a named network reads grey and RGB images of any size alike
    hint = ""
    if real.dim() == 4 and fake.dim() == 4:
        if real.shape[1] != fake.shape[1]:
            hint = f"; pass --channels {max(real.shape[1], fake.shape[1])} (or 1) to read both folders alike"
        if real.shape[2:] != fake.shape[2:]:
            hint += f"; pass --image-size {real.shape[2]} {real.shape[3]} to resize both to one size"
    raise ValueError(f"{args.fake}: samples of shape {tuple(fake.shape[1:])}, but {args.real}'s are "
                     f"{tuple(real.shape[1:])}{hint}")


def _report_score(args: argparse.Namespace, result: Any, num_real: int, source: str, coverage: Any = None) -> int:
    if args.json:
        from fastndb.report import verdict

        payload = result.to_dict(python=True)
        if coverage is not None:
            payload["prdc"] = {**coverage.scores(), "nearest_k": coverage.nearest_k, "num_real": coverage.num_real,
                               "num_fake": coverage.num_fake, "inclusive": coverage.inclusive,
                               "expected_null_coverage": coverage.expected_null_coverage,
                               **{f"{name}_interval": getattr(coverage, f"{name}_interval")
                                  for name in ("precision", "recall", "density", "coverage")},
                               "coverage_p_value": coverage.coverage_p_value}
        decided = verdict(result, coverage)
        payload["verdict"] = {key: value for key, value in decided.to_dict(python=True).items() if key != "missing"}
        _print_json(payload)
    else:
        from fastndb.report import verdict

        print(verdict(result, coverage))
        z, different = result.z.cpu(), result.different.cpu()
        over = [i for i in range(result.num_bins) if bool(different[i]) and float(z[i]) > 0]
        under = [i for i in range(result.num_bins) if bool(different[i]) and float(z[i]) < 0]
        print(f"NDB = {result.ndb} of {result.num_bins} bins (NDB/K = {result.ndb_ratio:.3f}); "
              f"expected by chance {result.expected_false_positives:.2f} at alpha = {result.alpha}"
              + (f" ({result.correction} correction)" if result.correction else ""))
        print(f"JS divergence {result.js:.4g} (by chance about {result.expected_null_js:.2g}); "
              f"chi-square test of the histograms: p = {result.p_value:.3g}")
        print(f"over-represented bins (more fake than real): {len(over)} {_bin_list(over)}")
        print(f"under-represented bins (fewer fake than real): {len(under)} {_bin_list(under)}")
        if coverage is not None:
            shown = lambda name: f"{getattr(coverage, name):.3f}" + (  # noqa: E731
                "" if getattr(coverage, f"{name}_interval") is None
                else " ({:.3f}-{:.3f})".format(*getattr(coverage, f"{name}_interval")))
            print(f"precision {shown('precision')}, recall {shown('recall')}, density {shown('density')}, "
                  f"coverage {shown('coverage')} (k = {coverage.nearest_k}, on {coverage.num_real} real and "
                  f"{coverage.num_fake} fake samples; by chance, fake drawn like real: coverage about "
                  f"{coverage.expected_null_coverage:.3f}, density about 1)")
        print(f"real {num_real} ({result.num_real} for the reference counts), fake {result.num_fake}; "
              f"mode {result.mode}, device {args.device}; {source}")
    if args.plot:
        from fastndb import plot

        _save_figure(plot.bin_proportions(result)[0], args.plot)
    return 0


def _write_examples(args: argparse.Namespace, ndb: Any, result: Any, real: Any, fake: Any) -> None:
    """``--examples DIR``: a PNG strip of real and fake examples per flagged bin, most different first."""
    from fastndb import report

    if not report._is_images(real):
        raise ValueError(f"--examples: the samples {tuple(real.shape[1:])} are not images; fastndb report shows "
                         f"such samples as numbers")
    flagged, not_shown = report.flagged_bins(ndb, result, real, fake)
    folder = Path(args.examples)
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in report.example_strips(flagged, real, fake, ndb.options.value_range).items():
        (folder / f"{name}.png").write_bytes(png)
    more = f" ({not_shown} more flagged bins not drawn)" if not_shown else ""
    print(f"wrote {len(flagged)} strips of flagged bins' examples to {folder}/{more}")


def _birthday(args: argparse.Namespace) -> int:
    from fastndb._core.birthday import birthday, duplicate_threshold
    from fastndb._core.features import check_value_ranges, summarize

    feature = _feature(args)
    samples = _load(args.samples, args)
    threshold = args.threshold
    value_range = _value_range(args)
    if args.threshold_from is not None:
        if threshold is not None:
            raise ValueError("--threshold and --threshold-from exclude each other: give one")
        real = _load(args.threshold_from, args)
        features, real_features = samples[0].numel(), real[0].numel()
        if features != real_features:
            raise ValueError(f"--threshold-from: {args.threshold_from} has {real_features} features per sample "
                             f"{tuple(real.shape[1:])}, but SAMPLES have {features} {tuple(samples.shape[1:])}: "
                             f"a threshold from other data means nothing here")
        flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
        check_value_ranges(summarize(flat(real), value_range), summarize(flat(samples), value_range),
                           reference_name="--threshold-from", name="SAMPLES")
        threshold = duplicate_threshold(real, quantile=args.quantile, metric=args.metric,
                                        num_samples=samples.shape[0], seed=args.seed, value_range=value_range,
                                        feature=feature)
    result = birthday(samples, num_pairs=args.num_pairs, metric=args.metric, threshold=threshold,
                      value_range=value_range, feature=feature, progress=_progress(args))
    if args.json:
        _print_json(result.to_dict(python=True))
    else:
        from fastndb._core.files import sample_names

        names = sample_names(args.samples)
        from fastndb.report import printable

        label = (lambda i: f"{i:>7d}") if names is None else (lambda i: f"{printable(names[i]):>20s}")  # noqa: E731
        print(f"closest pairs among {result.num_samples} samples ({result.metric} distance):")
        for (i, j), d in zip(result.pairs[:10].tolist(), result.distances[:10].tolist(), strict=True):
            print(f"  {label(i)} {label(j)}  {d:.6g}")
        if result.num_duplicates is not None:
            low, high = result.support_interval
            rate_low, rate_high = result.duplicate_rate_interval
            print(f"duplicates: {result.num_duplicates} pairs at distance <= {threshold:.6g} "
                  f"(share of all pairs {result.duplicate_rate:.3g}, {result.confidence:.0%} interval "
                  f"{rate_low:.3g} to {rate_high:.3g})")
            print(f"support estimate: {result.support_estimate:.4g} "
                  f"({result.confidence:.0%} interval {low:.4g} to {high:.4g})")
    if args.grid:
        from fastndb import plot

        shape = tuple(args.grid_shape) if args.grid_shape else None
        try:
            figure = plot.birthday_pairs(samples, result, image_shape=shape)[0]
        except ValueError as err:  # the function's argument is the flag the user typed
            raise ValueError(str(err).replace("image_shape=(C, H, W)", "--grid-shape C H W")
                             .replace("image_shape", "--grid-shape")) from None
        _save_figure(figure, args.grid)
    return 0


def _modes(args: argparse.Namespace) -> int:
    from fastndb._core.files import sample_names
    from fastndb._core.modes import modes
    from fastndb.report import printable

    real, fake = _load(args.real, args), _load(args.fake, args)
    feature = _feature(args)
    _same_sample_shape(real, fake, args)
    result = modes(real, fake, bandwidth=args.bandwidth, feature=feature, value_range=_value_range(args),
                   num_samples=args.num_samples or None, top=args.top, examples=args.examples_per_mode,
                   seed=args.seed, progress=_progress(args))
    if args.json:
        _print_json(result.to_dict(python=True))
    else:
        level = f"{result.confidence:.0%}"
        print(f"effective modes (RKE) at bandwidth {result.bandwidth:.4g} ({result.bandwidth_rule} rule):")
        print(f"  real {result.real.count:.4g} ({level} interval {result.real.low:.4g} to {result.real.high:.4g}), "
              f"{result.real.num_samples} samples")
        print(f"  fake {result.fake.count:.4g} ({level} interval {result.fake.low:.4g} to {result.fake.high:.4g}), "
              f"{result.fake.num_samples} samples")
        print(f"  fake / real {result.ratio:.3f} ({level} interval {result.ratio_low:.3f} to {result.ratio_high:.3f})")
        print(f"Vendi: real {result.vendi_real:.4g}, fake {result.vendi_fake:.4g} ({result.vendi_samples} samples "
              f"each, {result.vendi_method})")
        if result.modes_bandwidth != result.bandwidth:
            print(f"the real data count as one mode at {result.bandwidth:.4g}: the modes below are read at "
                  f"{result.modes_bandwidth:.4g}, where they count {_count_at(result, result.modes_bandwidth)}")
        sides = (("missing (real has, fake lacks)", result.missing, sample_names(args.real)),
                 ("over-filled or invented (fake has more)", result.invented, sample_names(args.fake)))
        for title, found, where in sides:
            print(f"modes {title}: {len(found) or 'none'}")
            for i, mode in enumerate(found, 1):
                shown = mode.examples[:5].tolist()
                label = ", ".join(printable(where[j]) if where is not None else str(j) for j in shown)
                print(f"  {i}. {100 * mode.real_share:.1f}% of real, {100 * mode.fake_share:.1f}% of fake; "
                      f"e.g. {label}")
    if args.plot:
        from fastndb import plot

        _save_figure(plot.mode_curves(result)[0], args.plot)
    return 0


def _memorization(args: argparse.Namespace) -> int:
    from fastndb._core.files import sample_names
    from fastndb._core.memorization import memorization
    from fastndb.report import printable

    train, fake = _load(args.train, args), _load(args.fake, args)
    test = None if args.test is None else _load(args.test, args)
    _same_sample_shape(train, fake, args)
    if test is not None:
        _same_sample_shape(train, test, args)
    result = memorization(train, fake, test, alpha=args.alpha, cells=args.cells, feature=_feature(args),
                          value_range=_value_range(args), num_samples=args.num_samples or None, seed=args.seed,
                          progress=_progress(args))
    if args.json:
        _print_json(result.to_dict(python=True))
    else:
        print(result.summary())
        train_names, fake_names = sample_names(args.train), sample_names(args.fake)

        def name(names: list[str] | None, i: int) -> str:
            return printable(names[i]) if names is not None else str(i)

        shown = result.closest(args.top).tolist()
        if shown:
            print(f"the {len(shown)} generated samples most like copies (ratio = nearest / second-nearest training "
                  f"distance; p: share of held-out samples with a ratio at most as small):")
        for i in shown:
            j = int(result.nearest_train[i])
            flag = "  COPY" if bool(result.copy[i]) else ""
            print(f"  {name(fake_names, i)}  nearest training {name(train_names, j)}  distance "
                  f"{float(result.nearest_distance[i]):.4g}  ratio {float(result.ratio[i]):.3g}  "
                  f"p {float(result.p_value[i]):.3g}{flag}")
    if args.pairs:
        from fastndb import plot

        shape = tuple(args.grid_shape) if args.grid_shape else None
        _save_figure(plot.memorized_pairs(train, fake, result, count=max(1, args.top), image_shape=shape)[0],
                     args.pairs)
    return 0


def _count_at(result: Any, bandwidth: float) -> str:
    """The real and fake counts of the curve at ``bandwidth``."""
    i = min(range(len(result.curve_bandwidths)), key=lambda j: abs(result.curve_bandwidths[j] - bandwidth))
    return f"{result.curve_real[i]:.3g} real and {result.curve_fake[i]:.3g} fake modes"


def _fit(args: argparse.Namespace) -> int:
    from fastndb._core.options import TEST_OPTION_NAMES
    from fastndb._core.references import save_reference

    options = _options(args)
    for name in TEST_OPTION_NAMES:  # test options apply when scoring, not to stored bins
        options.pop(name)
    real = _load(args.real, args)
    reference = save_reference(args.name, real, overwrite=args.overwrite, **_with_bins(options, real.shape[0]))
    if args.json:
        _print_json(reference.to_dict())
    else:
        space = "raw values" if reference.feature is None else f"features {reference.feature}"
        print(f"reference {reference.name!r}: {reference.bins.num_bins} bins fitted on {reference.num_real} real "
              f"samples ({space}, {reference.bins.mode} mode), saved to {reference.path}")
        print(f"score against it with: fastndb score {reference.name} FAKE")
    return 0


def _refs(args: argparse.Namespace) -> int:
    from fastndb._core.references import list_references, reference_dir, remove_reference

    for name in args.remove or []:
        print(f"removed {remove_reference(name)}")
    if args.remove:
        return 0
    references = list_references()
    if args.json:
        _print_json({"directory": str(reference_dir()), "references": [r.to_dict() for r in references]})
        return 0
    if not references:
        print(f"no references in {reference_dir()} (make one with fastndb fit REAL --name NAME)")
        return 0
    print(f"references in {reference_dir()}:")
    print(f"  {'name':<20} {'K':>5} {'real':>8}  {'features':<34} created")
    for r in references:
        print(f"  {r.name:<20} {r.bins.num_bins:>5} {r.num_real:>8}  {r.feature or 'raw values':<34} {r.created}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from fastndb import report
    from fastndb._core.files import sample_names

    options = _options(args)
    num_bins = options.pop("num_bins")
    chosen = args.format or report.format_of(args.output)
    if _stored_reference(args.real) is not None:
        raise ValueError(f"{args.real}: a stored reference holds bins, not samples, and a report shows real examples "
                         f"and the coverage metrics, which need the real samples themselves: pass the real data "
                         f"(fastndb score {args.real} FAKE scores against the reference)")
    real, fake = _load(args.real, args), _load(args.fake, args)
    _same_sample_shape(real, fake, args)
    test = None if args.test is None else _load(args.test, args)
    if test is not None:
        _same_sample_shape(real, test, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = report.build(real, fake, num_bins=num_bins, names=sample_names(args.real),
                             fake_names=sample_names(args.fake), examples=args.examples, max_flagged=args.max_flagged,
                             birthday_samples=args.birthday_samples or None,
                             coverage_samples=args.prdc_samples or None, nearest_k=args.nearest_k,
                             modes_samples=args.modes_samples or None,
                             memorization_samples=args.memorization_samples or None, test=test,
                             pictures=chosen == "html", **options)
    for caught_warning in caught:  # the function's arguments are the flags the user typed
        text = str(caught_warning.message)
        for argument, flag in (("coverage_samples", "--prdc-samples"), ("birthday_samples", "--birthday-samples"),
                               ("modes_samples", "--modes-samples"), ("nearest_k", "--nearest-k"),
                               ("memorization_samples", "--memorization-samples")):
            text = text.replace(argument, flag)
        warnings.warn(text, caught_warning.category, stacklevel=2)
    path = built.save(args.output, chosen)
    print(built.verdict[0])
    print(f"wrote {path}")
    return 0


def _elbow(args: argparse.Namespace) -> int:
    from fastndb._core.elbow import elbow

    try:
        ks = [int(v) for v in args.ks.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--ks: expected comma-separated integers like 10,20,50, got {args.ks!r}") from None
    result = elbow(_load(args.real, args), ks, seed=args.seed, progress=_progress(args))
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"{'K':>6s}  inertia")
        for k, inertia in zip(result.ks, result.inertias, strict=True):
            print(f"{k:>6d}  {inertia:.6g}" + ("   <- knee" if k == result.chosen_k else ""))
        print(f"chosen K = {result.chosen_k}: {result.rule}")
    if args.plot:
        from fastndb import plot

        _save_figure(plot.elbow(result)[0], args.plot)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if not args.full:
        from fastndb import bench

        measured = bench.run(device=args.device, quick=args.quick)
        if args.json:
            _print_json(measured)
        else:
            print(bench.format_table(measured))
        return 0
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = [folder / "bench_core.py", folder / "bench_birthday.py"]
    missing = [str(s) for s in scripts if not s.exists()]
    if missing:
        raise FileNotFoundError(
            f"fastndb bench --full runs the scripts in a source checkout's benchmarks/ folder; not found: {missing[0]} "
            f"(fastndb bench, without --full, runs the suite shipped with the package)"
        )
    extra = ["--device", args.device] + (["--quick"] if args.quick else [])
    for script in scripts:
        print(f"$ python {script.relative_to(folder.parent)} {' '.join(extra)}", flush=True)
        done = subprocess.run([sys.executable, str(script), *extra], check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{script.name} failed with exit status {done.returncode}")
        print(flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fastndb.demo import runner as demo

    if args.resampling:
        num_bins = args.num_bins or 10
        rows = demo.run_digits_demo(num_bins=num_bins, num_fake=args.num_fake, seed=args.seed)
        print("NDB on scikit-learn's 8x8 digits: 1000 real digits vs generators that resample other digits")
        print(f"(K={num_bins} bins, alpha=0.05, holdout mode: about alpha*K bins differ by chance)\n")
        print(demo.format_rows(rows))
        return 0
    from fastndb.demo.training import GANConfig

    defaults = demo.demo_defaults(args.data)
    choose = lambda given, name: defaults[name] if given is None else given  # noqa: E731
    config = GANConfig(epochs=choose(args.epochs, "epochs"), steps_per_epoch=choose(args.steps_per_epoch,
                       "steps_per_epoch"), latent_size=args.latent_size, width=choose(args.width, "width"),
                       label_flip=args.label_flip, label_smoothing=args.label_smoothing, seed=args.seed)
    source = args.data or "scikit-learn's digits, upsampled to 32 x 32" + (f", digit {args.digit} only"
                                                                            if args.digit is not None else "")
    if args.drop_digits:
        source += f", without digits {','.join(map(str, args.drop_digits))} (the monitor compares with all digits)"
    steps = f"{config.steps_per_epoch} batches" if config.steps_per_epoch else "one pass over the data"
    print(f"DCGAN (width {config.width}) on {source}: {config.epochs} epochs of {steps} (batch {config.batch_size}), "
          f"latent size {config.latent_size}, label flip {config.label_flip:.0%}, smoothing {config.label_smoothing}, "
          f"seed {config.seed}, device {args.device}")
    num_bins = args.num_bins
    bins_text = f"K={num_bins} bins" if num_bins else f"K = min({defaults['max_bins']}, N/40) bins"
    print(f"monitor: NDB with {bins_text} on 2000 samples per epoch; mode dropping = the verdict 'missing' (the "
          f"samples differ beyond chance and the missing mass's 95% interval lies above the tolerance of "
          f"{100 * args.tolerance:g}%), 2 epochs in a row after 3 warm-up epochs\n")
    if args.features:
        print(f"NDB also in the {args.features} feature space, same K: its NDB/K and JS next to the pixels'\n")
    print(demo.format_epoch_header(args.features), flush=True)
    result = demo.run_dcgan_demo(
        data=args.data, digit=args.digit, image_size=args.image_size, device=args.device, out_dir=args.out,
        config=config, num_bins=num_bins, tolerance=args.tolerance, drop_digits=tuple(args.drop_digits or ()),
        second_feature=args.features,
        progress=None, on_epoch=lambda record: print(demo.format_epoch(record), flush=True),  # bars on a terminal
    )
    last = result.records[-1]
    missing = (f"{100 * max(last.missing_mass, 0):.1f}% ({100 * last.missing_low:.1f}-{100 * last.missing_high:.1f}%)"
               f" of the real data in regions the generator under-fills at the last epoch, {last.emptied_bins} of "
               f"{result.monitor.ndb.num_bins} bins emptied")
    verdict = (f"missing modes flagged at epoch {result.collapsed_at}: {missing} (docs/monitor.md says what this "
               f"means and what it does not)" if result.collapsed_at is not None
               else f"no missing modes flagged: {missing}, verdict '{last.decision}'")
    print(f"\n{verdict}; sample grids, curves.png and history.json in {args.out}/")
    print(f"chance level at these sample sizes (a generator that samples like the data): NDB/K about "
          f"{result.monitor.null_ndb_ratio:.2f}, JS about {result.monitor.null_js:.4f}, coverage about "
          f"{result.monitor.null_coverage:.2f}"
          + (f" (in the {args.features} space {result.monitor.second_null_js:.4f})" if args.features else ""))
    return 0


# ----------------------------------------------------------------------------------------------- parser
def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (skip) or a positive number of samples, got {text}")
    return value


def _distance(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite distance >= 0, got {text}")
    return value


def _bandwidth(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite bandwidth, got {text}")
    return value


def _num_bins(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from fastndb._core.options import TEST_OPTION_NAMES, cli_flags, option_defaults, option_flag

    _DEFAULTS.update({**option_defaults(), "num_bins": None})  # the command line takes K from the data
    parser = argparse.ArgumentParser(prog="fastndb", description="Mode-collapse tests for generative models.")
    parser.add_argument("--version", action="version", version=f"fastndb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (default cpu)")
    common.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="resize images of a folder to H x W (default: all must have one size)")
    common.add_argument("--channels", type=int, choices=(1, 3),
                        help="convert images to 1 (grey) or 3 (RGB) channels (default: 3 if any has colour)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")

    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", metavar="PATH", help="weights file of the --features network (default: "
                                                         "$FASTNDB_WEIGHTS/<its file>, or its package's download)")

    score = commands.add_parser("score", parents=[common, weights], help="NDB of FAKE against REAL",
                                description="NDB score: bins fitted on REAL (or a stored reference NAME), FAKE "
                                            "compared bin by bin.")
    score.add_argument("real", help="image folder, .npy, .npz[:name] or .pt[:name], or a reference NAME "
                                    "(fastndb fit --name)")
    score.add_argument("fake", help="same forms as REAL, same number of features")
    for flag, settings in cli_flags(bins_from_data=True):  # every option of the model, its default in --help
        score.add_argument(flag, **settings)
    score.add_argument("--nearest-k", type=_positive_int, default=5,
                       help="k of precision, recall, density and coverage (default: 5)")
    score.add_argument("--prdc-samples", type=_count, default=10_000, metavar="N",
                       help="compute precision, recall, density and coverage on at most N samples of each set "
                            "(chosen by content); 0: skip them (default: 10000; not against a stored reference)")
    score.add_argument("--plot", metavar="PNG", help="write the bin proportions figure")
    score.add_argument("--examples", metavar="DIR",
                       help="write a PNG strip of real and fake examples for each flagged bin (images only)")
    score.add_argument("--cache", metavar="DIR", help="keep fitted bins in DIR, keyed by REAL's content and options")
    score.set_defaults(run=_score)

    birthday = commands.add_parser("birthday", parents=[common, weights],
                                   help="closest pairs, duplicates, support size",
                                   description="Birthday-paradox test on SAMPLES.")
    birthday.add_argument("samples", help="image folder, .npy, .npz[:name] or .pt[:name]")
    for option in ("value_range", "feature"):
        flag, settings = option_flag(option)
        birthday.add_argument(flag, **settings)
    birthday.add_argument("--num-pairs", type=_positive_int, default=20, help="closest pairs listed (default: 20)")
    birthday.add_argument("--metric", choices=("l2", "cosine"), default="l2",
                          help="l2: Euclidean distance; cosine: 1 - cos (default: l2)")
    birthday.add_argument("--threshold", type=_distance,
                          help="duplicate threshold, a distance (default: none, closest pairs only)")
    birthday.add_argument("--threshold-from", metavar="REAL",
                          help="set the threshold to a low quantile of REAL's nearest-neighbour distances")
    birthday.add_argument("--quantile", type=_probability, default=0.01,
                          help="quantile of real nearest-neighbour distances, for --threshold-from (default: 0.01)")
    birthday.add_argument("--seed", type=int, default=0, help="seed of the real subset (default: 0)")
    birthday.add_argument("--grid", metavar="PNG", help="write the closest pairs side by side")
    birthday.add_argument("--grid-shape", type=_positive_int, nargs="+", metavar="N",
                          help="C H W (or H W) of one sample, for flat samples")
    birthday.set_defaults(run=_birthday)

    counts = commands.add_parser("modes", parents=[common, weights], help="effective mode counts, missing modes",
                                 description="Effective mode counts (RKE, Vendi) of REAL and FAKE, and the modes "
                                             "FAKE misses or invents.")
    counts.add_argument("real", help="image folder, .npy, .npz[:name] or .pt[:name]")
    counts.add_argument("fake", help="same forms as REAL, same number of features")
    for option in ("value_range", "feature"):
        flag, settings = option_flag(option)
        counts.add_argument(flag, **settings)
    counts.add_argument("--bandwidth", type=_bandwidth, help="kernel bandwidth in the samples' (or features') units "
                                                             "(default: the plateau rule on REAL)")
    counts.add_argument("--num-samples", type=_count, default=20_000, metavar="N",
                        help="use at most N samples of each set, chosen by content; 0: all (default: 20000)")
    counts.add_argument("--top", type=_count, default=5, help="missing and invented modes listed (default: 5)")
    counts.add_argument("--examples-per-mode", type=_positive_int, default=8, metavar="N",
                        help="sample indices kept per mode (default: 8)")
    counts.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    counts.add_argument("--plot", metavar="PNG", help="write the counts against the bandwidth")
    counts.set_defaults(run=_modes)

    copies = commands.add_parser("memorization", parents=[common, weights],
                                 help="generated samples that copy a training sample",
                                 description="Which samples of FAKE copy a sample of TRAIN: copy flags calibrated on "
                                             "held-out samples (TEST, else TRAIN leave-one-out), the share of "
                                             "copies with its interval, AuthPct and C_T.")
    copies.add_argument("train", help="the training set: image folder, .npy, .npz[:name] or .pt[:name]")
    copies.add_argument("fake", help="same forms as TRAIN, same number of features")
    copies.add_argument("--test", metavar="TEST", help="held-out real samples the generator never saw (calibrate the "
                                                       "flags; needed for C_T)")
    for option in ("value_range", "feature"):
        flag, settings = option_flag(option)
        copies.add_argument(flag, **settings)
    copies.add_argument("--alpha", type=_probability, default=COPY_ALPHA,
                        help=f"false-alarm rate of a copy flag on samples that are no copies (default: {COPY_ALPHA})")
    copies.add_argument("--cells", type=_positive_int, default=CT_CELLS,
                        help=f"k-means cells of C_T (default: {CT_CELLS})")
    copies.add_argument("--num-samples", type=_count, default=0, metavar="N",
                        help="use at most N samples of each set, chosen by content; 0: all (default: 0)")
    copies.add_argument("--top", type=_count, default=10, help="samples most like copies listed (default: 10)")
    copies.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    copies.add_argument("--pairs", metavar="PNG", help="write the samples most like copies above their nearest "
                                                       "training samples")
    copies.add_argument("--grid-shape", type=_positive_int, nargs="+", metavar="N",
                        help="C H W (or H W) of one sample, for flat samples")
    copies.set_defaults(run=_memorization)

    fit = commands.add_parser("fit", parents=[common, weights], help="fit bins on REAL and store them under a name",
                              description="Fit NDB bins on REAL and store them as a named reference in "
                                          "$FASTNDB_HOME/references (default ~/.cache/fastndb); then "
                                          "fastndb score NAME FAKE.")
    fit.add_argument("real", help="image folder, .npy, .npz[:name] or .pt[:name]")
    fit.add_argument("--name", required=True, help="the reference's name (letters, digits, '.', '_', '-')")
    fit.add_argument("--overwrite", action="store_true", help="replace a reference of that name")
    for flag, settings in cli_flags(bins_from_data=True):
        if settings["dest"] not in TEST_OPTION_NAMES:
            fit.add_argument(flag, **settings)
    fit.set_defaults(run=_fit, **dict.fromkeys(TEST_OPTION_NAMES))

    report = commands.add_parser("report", parents=[common, weights], help="one HTML (or Markdown) page: the verdict "
                                 "against chance, the bins, the flagged bins' examples, the closest pairs",
                                 description="A self-contained report of NDB, the coverage metrics and the birthday "
                                             "test of FAKE against REAL.")
    report.add_argument("real", help="image folder, .npy, .npz[:name] or .pt[:name]")
    report.add_argument("fake", help="same forms as REAL")
    report.add_argument("-o", "--output", default="report.html", help="the file to write (default: report.html)")
    report.add_argument("--format", choices=("html", "md"), default=None,
                        help="html: one self-contained page with pictures; md: Markdown for CI logs (default: from "
                             "the output's suffix, .md or .markdown for md, else html)")
    for flag, settings in cli_flags(bins_from_data=True):
        report.add_argument(flag, **settings)
    report.add_argument("--examples", type=_positive_int, default=8, help="examples per flagged bin (default: 8)")
    report.add_argument("--max-flagged", type=_positive_int, default=12,
                        help="flagged bins shown, most different first (default: 12)")
    report.add_argument("--birthday-samples", type=_count, default=1000, metavar="N",
                        help="fake samples in the birthday test; 0: skip it (default: 1000)")
    report.add_argument("--prdc-samples", type=_count, default=5000, metavar="N",
                        help="samples of each set for precision, recall, density, coverage; 0: skip (default: 5000)")
    report.add_argument("--nearest-k", type=_positive_int, default=5, help="k of the coverage metrics (default: 5)")
    report.add_argument("--modes-samples", type=_count, default=2000, metavar="N",
                        help="mode counts and missing modes on at most N samples of each set; 0: skip them "
                             "(default: 2000)")
    report.add_argument("--memorization-samples", type=_count, default=5000, metavar="N",
                        help="copies of the training data (REAL) on at most N samples of each set; 0: skip them "
                             "(default: 5000)")
    report.add_argument("--test", metavar="TEST", help="held-out real samples the generator never saw, to calibrate "
                                                       "the copy flags (default: REAL, leave-one-out)")
    report.set_defaults(run=_report)

    refs = commands.add_parser("refs", help="list the stored references, or remove some",
                               description="List the named references (fastndb fit --name), or remove some.")
    refs.add_argument("--remove", nargs="+", metavar="NAME", help="delete these references")
    refs.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    refs.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    refs.set_defaults(run=_refs)

    elbow = commands.add_parser("elbow", parents=[common], help="k-means inertia against K, to choose K",
                                description="k-means inertia for each K, and the knee of the curve.")
    elbow.add_argument("real", help="image folder, .npy, .npz[:name] or .pt[:name]")
    elbow.add_argument("--ks", default="10,20,50,100,200",
                       help="comma-separated K values (default: 10,20,50,100,200)")
    elbow.add_argument("--seed", type=int, default=0, help="seed of k-means (default: 0)")
    elbow.add_argument("--plot", metavar="PNG", help="write the elbow curve")
    elbow.set_defaults(run=_elbow)

    bench = commands.add_parser("bench", help="time fastndb against this machine's measured GEMM and bandwidth floor",
                                description="The quick suite shipped with the package (about a minute; --quick about "
                                            "15 s); --full runs a source checkout's benchmarks/ with their baselines.")
    bench.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where ours runs (default: cpu)")
    bench.add_argument("--quick", action="store_true", help="smaller sizes")
    bench.add_argument("--full", action="store_true", help="the source checkout's benchmark scripts instead")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bench.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    bench.set_defaults(run=_bench)

    demo = commands.add_parser("demo", help="train a DCGAN on the bundled digits and watch NDB catch collapse",
                               description="A DCGAN with the mode-collapse monitor (NDB and the birthday test per "
                                           "epoch); --resampling: the seconds-long demo without training.")
    demo.add_argument("--epochs", type=_positive_int, help="8 on the digits; 25 with --data")
    demo.add_argument("--steps-per-epoch", type=_positive_int,
                      help="batches of 64 per epoch: 150 on the digits; one pass over the data with --data")
    demo.add_argument("--latent-size", type=_positive_int, default=100,
                      help="the generator's latent size (default: 100)")
    demo.add_argument("--width", type=_positive_int, help="channels of the DCGAN blocks: 32 on the digits, "
                                                          "64 (the DCGAN's) with --data")
    demo.add_argument("--label-flip", type=float, default=0.0,
                      help="share of discriminator labels flipped (default: 0)")
    demo.add_argument("--label-smoothing", type=float, default=0.0,
                      help="one-sided: real targets 1 - s (default: 0)")
    demo.add_argument("--digit", type=int, choices=range(10), help="train on one digit class only")
    demo.add_argument("--drop-digits", type=int, nargs="+", choices=range(10), metavar="D",
                      help="train without these digit classes; the monitor compares with all digits")
    demo.add_argument("--features", choices=("digits", "inception", "dinov2-vits14", "dinov2-vitb14", "clip-vitb32"),
                      help="also score NDB in this feature space, next to pixels (digits: the shipped network)")
    demo.add_argument("--data", help="MNIST/Fashion-MNIST IDX file, image folder or array file instead of digits")
    demo.add_argument("--image-size", type=int, choices=(28, 32, 64), default=32, help="image edge (default: 32)")
    demo.add_argument("--tolerance", type=float, default=0.01,
                      help="missing mass accepted: an epoch counts as mode dropping when its verdict is 'missing' "
                           "(the missing mass's 95%% interval above this; default: 0.01)")
    demo.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    demo.add_argument("--out", default="fastndb-demo",
                      help="folder for sample grids and curves (default: fastndb-demo)")
    demo.add_argument("--resampling", action="store_true", help="the quick demo without training")
    demo.add_argument("--num-bins", type=_num_bins,
                      help="NDB bins (default: min(20, N/40) on the digits, min(100, N/40) with --data, "
                           "10 with --resampling)")
    demo.add_argument("--num-fake", type=_positive_int, default=2000,
                      help="fake samples per generator, with --resampling (default: 2000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of everything (default: 0)")
    demo.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    demo.set_defaults(run=_demo)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as ``fastndb: warning: ...`` on stderr, one line, with no source line (``--debug`` keeps Python's)."""
    print(f"fastndb: warning: {str(message).splitlines()[0]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastndb`` console script."""
    import warnings

    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    if not debug:
        warnings.showwarning = _one_line_warning
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
    if debug:
        _check_device(getattr(args, "device", "cpu"))
        return args.run(args)
    try:
        _check_device(getattr(args, "device", "cpu"))
        return args.run(args)
    except BrokenPipeError:  # the reader (e.g. `| head`) went away: not an error of ours
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, OSError, ModuleNotFoundError, RuntimeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"fastndb: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
