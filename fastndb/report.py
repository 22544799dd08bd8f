"""A report a person reads in five seconds: the verdict against chance, the bins, the flagged bins' examples, the
closest pairs, the settings. One self-contained HTML file (inline images, no network, opens from disk) or Markdown.

    report = fastndb.report.build(real, fake, names=real_files, fake_names=fake_files)
    report.save("report.html")          # or "report.md"; fastndb report REAL FAKE -o report.html

Needs matplotlib for the pictures (``pip install fastndb[plot]``); the Markdown form needs nothing.

What the verdict says, and on what (:mod:`fastndb._core.verdict`): one test of "the generator samples like the
data" that combines NDB's count, the strongest bin, the histograms (JS's chi-square test), the missing mass,
coverage below its chance level and the duplicates against as many real samples' (Bonferroni: false alarms at most
alpha), and a decision graded by size: how much of the real data lies in regions the generator under-fills, with
its 95% interval, against a ``tolerance``: "missing" (beyond it with confidence), "within tolerance" or
"inconclusive" (with the sample size that would decide). Each number is measured at these sample sizes, at the
resolution of the bins and in this feature space.
"""

from __future__ import annotations

import base64
import html
import io
import math
import platform
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fastndb._core.checks import check_int
from fastndb._core.coverage import prdc
from fastndb._core.features import to_float
from fastndb._core.inputs import as_batches, check_same_library, concatenate
from fastndb._core.optional import require
from fastndb._core.options import DEFAULT_BINS_RULE, default_num_bins
from fastndb._core.results import BirthdayResult, MemorizationResult, ModesResult, NDBResult, PRDCResult
from fastndb._core.verdict import (
    DuplicateComparison,
    Verdict,
    compare_duplicates,
    decide,
    duplicate_permutation_test,
)


@dataclass(frozen=True)
class FlaggedBin:
    """A bin whose fake share differs from the real share.

    Attributes:
        index: the bin (largest real bin first).
        z: its z statistic (negative: the generator under-fills it).
        real_count, fake_count: reference and fake samples in it.
        real_share, fake_share: their shares.
        real_examples, fake_examples: indices of up to ``examples`` real and fake samples in it.
    """

    index: int
    z: float
    real_count: int
    fake_count: int
    real_share: float
    fake_share: float
    real_examples: list[int]
    fake_examples: list[int]


@dataclass(frozen=True)
class Report:
    """What :func:`build` found (see the module docstring); :meth:`to_html`, :meth:`to_markdown`, :meth:`save`.

    Attributes:
        verdict: the headline and the lines under it (``decision``'s, as text).
        ndb: the :class:`~fastndb.NDBResult`.
        coverage: the :class:`~fastndb.PRDCResult` (``None`` when skipped).
        birthday: the :class:`~fastndb.BirthdayResult` of the fake samples (``None`` when skipped).
        birthday_real: duplicates among as many real samples at the same threshold (the null level).
        flagged: the flagged bins shown, most different first.
        flagged_not_shown: flagged bins beyond ``max_flagged``.
        settings: options, sizes, versions and timings.
        real_names, fake_names: file names of the samples, when they came from files.
        images: PNG pictures by name (``bins``, ``bin-<k>``, ``pairs``), empty without matplotlib.
        decision: the :class:`~fastndb._core.verdict.Verdict` behind ``verdict``.
        duplicates: the fake-against-real duplicate comparison (``None`` without the birthday test).
        examples_as_images: whether the examples were shown as images.
        modes: the :class:`~fastndb.ModesResult` (``None`` when skipped), its example indices mapped to the samples
            given (the report's own subset of ``modes_samples`` per side was taken first).
        memorization: the :class:`~fastndb.MemorizationResult` of the real samples as the training set (``None``
            when skipped); its per-sample tensors follow the report's subsets, and ``copies`` lists the fake samples
            most like copies with indices mapped to the samples given.
        copies: ``(fake index, nearest real index, distance, ratio, flagged)`` of the samples most like copies.
    """

    verdict: list[str]
    ndb: NDBResult
    coverage: PRDCResult | None
    birthday: BirthdayResult | None
    birthday_real: int | None
    flagged: list[FlaggedBin]
    flagged_not_shown: int
    settings: dict
    real_names: list[str] | None = None
    fake_names: list[str] | None = None
    images: dict[str, bytes] = field(default_factory=dict)
    examples_as_images: bool = False
    example_values: dict[str, list[list[float]]] = field(default_factory=dict)
    decision: Verdict | None = None
    duplicates: DuplicateComparison | None = None
    modes: ModesResult | None = None
    memorization: MemorizationResult | None = None
    copies: list[tuple[int, int, float, float, bool]] = field(default_factory=list)

    def _mode_lines(self) -> list[tuple[str, bool, list[str]]]:
        """``(text, real side, example names)`` of each missing and invented mode."""
        out = []
        if self.modes is None:
            return out
        for label, found, real in (("missing", self.modes.missing, True), ("over-filled", self.modes.invented, False)):
            for i, mode in enumerate(found, 1):
                text = (f"{label} mode {i}: {mode.real_share:.1%} of real, {mode.fake_share:.1%} of fake")
                out.append((text, real, [self._name(real, j) for j in mode.examples.tolist()]))
        return out

    def _mode_summary(self) -> str:
        m = self.modes
        text = (f"Effective modes (RKE, kernel bandwidth {m.bandwidth:.4g}, {m.bandwidth_rule} rule): real "
                f"{m.real.count:.3g} ({m.real.low:.3g}-{m.real.high:.3g}), fake {m.fake.count:.3g} "
                f"({m.fake.low:.3g}-{m.fake.high:.3g}); fake / real {m.ratio:.3f} ({m.ratio_low:.3f}-"
                f"{m.ratio_high:.3f}); Vendi {m.vendi_real:.3g} against {m.vendi_fake:.3g} on {m.vendi_samples} "
                f"samples each.")
        if m.modes_bandwidth != m.bandwidth:
            text += (f" The real data count as one mode at that bandwidth (no separated modes); the modes below are "
                     f"read at {m.modes_bandwidth:.4g}.")
        return text

    # ----------------------------------------------------------------------------------------------- text
    def _name(self, real: bool, index: int) -> str:
        names = self.real_names if real else self.fake_names
        return names[index] if names is not None and index < len(names) else f"#{index}"

    def _md_name(self, real: bool, index: int) -> str:
        return markdown_text(self._name(real, index))

    def to_markdown(self) -> str:
        """The report as Markdown (no pictures), for CI logs and pull requests."""
        r = self.ndb
        lines = ["# fastndb report", "", f"**{self.verdict[0]}**", ""]
        lines += [f"- {line}" for line in self.verdict[1:]]
        lines += ["", "## Bins", "", f"{r.num_bins} k-means bins of the real samples, reference counts from "
                  f"{r.num_real} of them; {r.ndb} differ at alpha = {r.alpha} (about "
                  f"{r.expected_false_positives:.1f} by chance).", ""]
        if self.flagged:
            lines += ["| bin | z | real (share) | fake (share) | real examples | fake examples |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for b in self.flagged:
                real_ex = ", ".join(self._md_name(True, i) for i in b.real_examples) or "none"
                fake_ex = ", ".join(self._md_name(False, i) for i in b.fake_examples) or "none"
                lines.append(f"| {b.index} | {b.z:+.2f} | {b.real_count} ({b.real_share:.3f}) | {b.fake_count} "
                             f"({b.fake_share:.3f}) | {real_ex} | {fake_ex} |")
            if self.flagged_not_shown:
                lines.append(f"\n{self.flagged_not_shown} more flagged bins are not shown.")
        else:
            lines.append("No bin differs.")
        if self.modes is not None:
            lines += ["", "## Modes", "", markdown_text(self._mode_summary()), ""]
            found = self._mode_lines()
            lines += [f"- {markdown_text(text)}; examples: {', '.join(markdown_text(n) for n in names)}"
                      for text, _, names in found] or ["No missing or over-filled mode beyond chance."]
        if self.memorization is not None:
            lines += ["", "## Copies of the training data", "", markdown_text(self.memorization.summary()), "",
                      "| fake sample | nearest real sample | distance | ratio | copy |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| {self._md_name(False, i)} | {self._md_name(True, j)} | {d:.4g} | {r:.3g} | "
                      f"{'yes' if c else 'no'} |" for i, j, d, r, c in self.copies]
        if self.birthday is not None:
            lines += ["", "## Closest pairs (birthday test)", "", "| sample | sample | distance |",
                      "| --- | --- | --- |"]
            for (i, j), d in zip(self.birthday.pairs[:10].tolist(), self.birthday.distances[:10].tolist(), strict=True):
                lines.append(f"| {self._md_name(False, i)} | {self._md_name(False, j)} | {d:.6g} |")
        lines += ["", "## Settings", "", "| setting | value |", "| --- | --- |"]
        lines += [f"| {markdown_text(str(k))} | {markdown_text(str(v))} |" for k, v in self.settings.items()]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """The report as one self-contained HTML page: inline PNGs, inline CSS, no scripts, no links out."""
        esc = html.escape
        r = self.ndb

        def image(name: str, alt: str) -> str:
            data = self.images.get(name)
            if data is None:
                return ""
            return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

        decision = self.decision.decision if self.decision is not None else ""
        verdict_class = {"missing": "bad", "within tolerance": "ok"}.get(decision, "unsure")
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>fastndb report</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "h1{font-size:1.4em}.verdict{font-size:1.25em;padding:.6em 1em;border-radius:6px}"
            ".ok{background:#e6f4ea}.bad{background:#fce8e6}.unsure{background:#fef7e0}"
            "table{border-collapse:collapse;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}"
            "img{max-width:100%}.bin{margin:1.2em 0;border-top:1px solid #ddd;padding-top:.6em}"
            ".none{color:#a00;font-weight:bold}</style></head><body>",
            "<h1>fastndb report</h1>",
            f'<p class="verdict {verdict_class}">{esc(self.verdict[0])}</p>',
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in self.verdict[1:]) + "</ul>",
            "<h2>Bins</h2>",
            f"<p>{r.num_bins} k-means bins of the real samples; {r.ndb} differ at alpha = {r.alpha} "
            f"(about {r.expected_false_positives:.1f} by chance). Bins the generator leaves empty are marked "
            f"<span class=none>&#9650; empty</span>.</p>",
            image("bins", "real and fake share of every bin"),
            "<h2>Flagged bins, most different first</h2>",
        ]
        if not self.flagged:
            parts.append("<p>No bin differs.</p>")
        for b in self.flagged:
            side = "under-filled by the generator" if b.z < 0 else "over-filled by the generator"
            parts.append(f'<div class="bin"><h3>bin {b.index}: z = {b.z:+.2f}, {side}</h3>'
                         f"<p>real {b.real_count} ({b.real_share:.1%}) &middot; fake {b.fake_count} "
                         f"({b.fake_share:.1%})</p>")
            if self.examples_as_images:
                parts.append(image(f"bin-{b.index}", f"examples of bin {b.index}"))
            else:
                for label, key in (("real", f"{b.index}-real"), ("fake", f"{b.index}-fake")):
                    rows = self.example_values.get(key, [])
                    cells = "".join("<tr>" + "".join(f"<td>{v:.4g}</td>" for v in row) + "</tr>" for row in rows)
                    parts.append(f"<p>{label} examples (first values of each sample):</p>"
                                 + (f"<table>{cells}</table>" if rows else '<p class="none">none</p>'))
            if not b.fake_examples:
                parts.append('<p class="none">the generator produced no sample in this bin</p>')
            names = [("real", True, b.real_examples), ("fake", False, b.fake_examples)]
            if self.real_names is not None or self.fake_names is not None:
                for label, real, idx in names:
                    parts.append(f"<p>{label} files: {esc(', '.join(self._name(real, i) for i in idx) or 'none')}</p>")
            parts.append("</div>")
        if self.flagged_not_shown:
            parts.append(f"<p>{self.flagged_not_shown} more flagged bins are not shown (the table in the Markdown "
                         f"form lists the same bins).</p>")
        if self.modes is not None:
            parts += ["<h2>Modes</h2>", f"<p>{esc(self._mode_summary())}</p>", image("mode-curves", "mode counts"),
                      image("missing-modes", "examples of the missing modes"),
                      image("invented-modes", "examples of the over-filled modes")]
            found = self._mode_lines()
            parts.append("<ul>" + "".join(f"<li>{esc(text)}; examples: {esc(', '.join(names))}</li>"
                                          for text, _, names in found) + "</ul>" if found else
                         "<p>No missing or over-filled mode beyond chance.</p>")
        if self.memorization is not None:
            parts += ["<h2>Copies of the training data</h2>", f"<p>{esc(self.memorization.summary())}</p>",
                      image("copies", "generated samples most like copies above their nearest real samples"),
                      "<table><tr><th>fake sample</th><th>nearest real sample</th><th>distance</th><th>ratio</th>"
                      "<th>copy</th></tr>"]
            parts += [f"<tr><td>{esc(self._name(False, i))}</td><td>{esc(self._name(True, j))}</td><td>{d:.4g}</td>"
                      f"<td>{r:.3g}</td><td>{'yes' if c else 'no'}</td></tr>" for i, j, d, r, c in self.copies]
            parts.append("</table>")
        if self.birthday is not None:
            parts += ["<h2>Closest pairs (birthday test)</h2>", image("pairs", "closest pairs side by side"),
                      "<table><tr><th>sample</th><th>sample</th><th>distance</th></tr>"]
            for (i, j), d in zip(self.birthday.pairs[:10].tolist(), self.birthday.distances[:10].tolist(), strict=True):
                parts.append(f"<tr><td>{esc(self._name(False, i))}</td><td>{esc(self._name(False, j))}</td>"
                             f"<td>{d:.6g}</td></tr>")
            parts.append("</table>")
        parts += ["<h2>Settings</h2>", "<table>"]
        parts += [f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in self.settings.items()]
        parts += ["</table>", "</body></html>"]
        return "\n".join(parts) + "\n"

    def save(self, path: Any, format: str | None = None) -> Any:
        """Write the report to ``path`` (``format``: ``"html"`` or ``"md"``; default from the suffix, else html)."""
        from pathlib import Path

        path = Path(path)
        chosen = format or format_of(path)
        if chosen not in ("html", "md"):
            raise ValueError(f"format: expected 'html' or 'md', got {format!r}")
        path.write_text(self.to_markdown() if chosen == "md" else self.to_html(), encoding="utf-8")
        return path


def printable(text: str) -> str:
    """``text`` with control and format characters (terminal escape sequences, newlines, bidirectional overrides)
    shown as escapes (``\\x1b``, ``\\n``), so that a file name cannot forge output lines or drive a terminal."""
    import unicodedata

    return "".join(ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode("ascii")
                    for ch in text)


def markdown_text(text: str) -> str:
    r"""``text`` as inert Markdown inside a table cell: printable (:func:`printable`), HTML's ``& < >`` as entities
    (no live tags such as ``<img onerror>``), ``|`` and Markdown's own markup characters backslash-escaped.

    Example:
        >>> print(markdown_text("a|b<img src=x onerror=alert(1)>*.png"))
        a\|b&lt;img src=x onerror=alert\(1\)&gt;\*.png
    """
    text = html.escape(printable(text), quote=False)
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+!|~" else ch for ch in text)


def _check_names(names: object, count: int, argument: str) -> list[str] | None:
    """File names, one string per sample, or ``None``.

    Raises:
        TypeError: not a list or tuple of strings.
        ValueError: another number of names than samples (they would label the wrong files).
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise TypeError(f"{argument}: expected a list of file names (one string per sample), got "
                        f"{type(names).__name__}")
    wrong = next((n for n in names if not isinstance(n, str)), None)
    if wrong is not None:
        raise TypeError(f"{argument}: expected file names as strings, got a {type(wrong).__name__} ({wrong!r}); "
                        f"pass [str(n) for n in {argument}]")
    if len(names) != count:
        raise ValueError(f"{argument}: expected one name per sample ({count}), got {len(names)}")
    return list(names)


def coverage_skipped(nearest_k: int, num_real: int, num_fake: int, num_samples: int | None = None,
                     flag: str = "nearest_k", samples_flag: str = "coverage_samples") -> str | None:
    """Why the coverage metrics cannot run at these sizes (each sample's ``k``-th nearest other sample of its own
    set must exist), or ``None`` when they can: the report and the command line skip them, say so, and keep the
    rest. ``flag`` and ``samples_flag`` are what the caller calls ``nearest_k`` and ``num_samples``."""
    if min(num_real, num_fake, num_samples or num_real) > nearest_k:
        return None
    if num_samples is not None and num_samples <= min(num_real, num_fake):
        return (f"coverage metrics skipped: {samples_flag} {num_samples} leaves no {nearest_k + 1} samples a side "
                f"for {flag} {nearest_k}; pass more than {nearest_k}, or 0 to skip them without this warning")
    return (f"coverage metrics skipped: {flag} {nearest_k} needs more than {nearest_k} samples on each side, got "
            f"{num_real} real and {num_fake} fake; pass a smaller {flag} or more samples")


def format_of(path: Any) -> str:
    """The report format a file name asks for: ``"md"`` for ``.md`` and ``.markdown``, else ``"html"``."""
    from pathlib import Path

    return "md" if Path(path).suffix.lower() in (".md", ".markdown") else "html"


# ------------------------------------------------------------------------------------------------- building
def verdict(ndb: NDBResult, coverage: PRDCResult | None = None, duplicates: DuplicateComparison | None = None, *,
            tolerance: float | None = None) -> Verdict:
    """The report's verdict: :func:`fastndb._core.verdict.decide` (one calibrated test, graded by the missing
    mass against ``tolerance``), defined once and read by the CLI and the monitor too."""
    return decide(ndb, coverage=coverage, duplicates=duplicates, tolerance=tolerance)


def _is_images(x: Tensor) -> bool:
    if x.dim() == 4:
        return x.shape[1] in (1, 3)
    if x.dim() == 3:
        return True
    d = x.shape[1]
    return any(d % c == 0 and math.isqrt(d // c) ** 2 * c == d and d // c >= 16 for c in (1, 3))


def _strip_png(real: Tensor, fake: Tensor, title: str) -> bytes:
    plt = require("matplotlib.pyplot", "the report's pictures")
    count = max(real.shape[0], fake.shape[0], 1)
    fig, axes = plt.subplots(2, count, figsize=(0.9 * count + 0.6, 2.2), squeeze=False)
    for row, (label, images) in enumerate((("real", real), ("fake", fake))):
        for col in range(count):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < images.shape[0]:
                image = images[col].permute(1, 2, 0).numpy()
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            elif col == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="#a00", fontsize=11, weight="bold")
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def _png(fig: Any) -> bytes:
    from fastndb import plot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plot.close(fig)
    return buffer.getvalue()


def flagged_bins(ndb: Any, result: NDBResult, real: Tensor, fake: Tensor, *, examples: int = 8,
                 max_flagged: int = 12) -> tuple[list[FlaggedBin], int]:
    """The flagged bins, most different (largest ``|z|``) first, at most ``max_flagged``, each with up to
    ``examples`` real and fake samples that fall in it; and how many flagged bins were left out."""
    real_labels, fake_labels = ndb.assign(real), ndb.assign(fake)
    different, z = result.different.cpu(), result.z.cpu()
    order = sorted((i for i in range(result.num_bins) if bool(different[i])), key=lambda i: -abs(float(z[i])))
    flagged = []
    for index in order[:max_flagged]:
        flagged.append(FlaggedBin(
            index, float(z[index]), int(result.real_counts[index]), int(result.fake_counts[index]),
            float(result.real_proportions[index]), float(result.fake_proportions[index]),
            (real_labels == index).nonzero()[:examples, 0].tolist(),
            (fake_labels == index).nonzero()[:examples, 0].tolist(),
        ))
    return flagged, max(0, len(order) - max_flagged)


def _sample_shape(x: Tensor) -> tuple[int, int, int]:
    from fastndb import plot

    return plot._image_shape(x if x.dim() > 2 else x.reshape(x.shape[0], -1), None)


def example_strips(flagged: list[FlaggedBin], real: Tensor, fake: Tensor,
                   value_range: tuple[float, float] | None) -> dict[str, bytes]:
    """A PNG strip per flagged bin (``bin-<k>``): its real examples above its fake ones ("none" when the generator
    made none), shown in [0, 1] under the value-range convention."""
    shape = _sample_shape(real)
    shown = lambda x, idx: (to_float(x[idx].reshape(-1, *shape), value_range).clamp(0, 1).cpu() if idx  # noqa: E731
                            else torch.empty(0, *shape))
    return {f"bin-{b.index}": _strip_png(shown(real, b.real_examples), shown(fake, b.fake_examples),
                                         f"bin {b.index}: real {b.real_count}, fake {b.fake_count}")
            for b in flagged}


def build(
    real: object,
    fake: object,
    *,
    num_bins: int | None = None,
    names: list[str] | None = None,
    fake_names: list[str] | None = None,
    examples: int = 8,
    max_flagged: int = 12,
    birthday_samples: int | None = 1000,
    coverage_samples: int | None = 5000,
    nearest_k: int = 5,
    modes_samples: int | None = 2000,
    memorization_samples: int | None = 5000,
    test: object = None,
    pictures: bool = True,
    **options: Any,
) -> Report:
    """Score ``fake`` against ``real`` with NDB, the coverage metrics and the birthday test, and gather a report.

    Args:
        real, fake: the samples, as ``fastndb.score`` takes them (one array each; image-shaped samples are shown
            as images).
        num_bins: K (default: :func:`~fastndb._core.options.default_num_bins` of the number of real samples,
            ``min(100, N / 40)``).
        names, fake_names: file names of the real and fake samples, shown next to examples and pairs.
        examples: examples shown per flagged bin and set.
        max_flagged: flagged bins shown, most different (largest ``|z|``) first; the rest are counted.
        birthday_samples: fake samples in the birthday test (``None``: skip it); the threshold is the 1% real
            nearest-neighbour distance among as many real samples, whose own duplicate count is the null level.
        coverage_samples: samples of each set for the coverage metrics (``None``: skip them).
        nearest_k: ``k`` of the coverage metrics.
        modes_samples: samples of each set for the mode counts and the missing modes (``None``: skip them).
        memorization_samples: samples of each set for the copies of the training data (the real samples taken as
            the training set; ``None``: skip them).
        test: held-out real samples the generator never saw, to calibrate the copy flags (default: the real
            samples themselves, leave-one-out).
        pictures: draw the pictures (needs matplotlib).
        **options: the options of ``fastndb.score`` (``alpha``, ``tolerance``, ``seed``, ``value_range``,
            ``feature``, ...).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> real, fake = torch.randn(2000, 6, generator=g), torch.randn(1000, 6, generator=g)
        >>> report = build(real, fake, pictures=False, birthday_samples=None, coverage_samples=None)
        >>> report.decision.decision, report.decision.differs
        ('inconclusive', False)
    """
    import fastndb

    start = time.perf_counter()
    examples = check_int(examples, "examples", minimum=1)
    max_flagged = check_int(max_flagged, "max_flagged", minimum=1)
    real_batches = as_batches(real, "real", check_finite=False, flatten=False)
    fake_batches = as_batches(fake, "fake", check_finite=False, flatten=False)
    check_same_library(real=real_batches.library, fake=fake_batches.library)
    real_x, fake_x = concatenate(real_batches), concatenate(fake_batches)
    names = _check_names(names, real_x.shape[0], "names")
    fake_names = _check_names(fake_names, fake_x.shape[0], "fake_names")
    if num_bins is None:
        num_bins = default_num_bins(real_x.shape[0], options.get("holdout_fraction", 0.5),
                                    options.get("mode", "holdout"), fake_x.shape[0])
    ndb = fastndb.NDB(num_bins, **options).fit(real_x, distributed=False)
    result = ndb.score(fake_x)
    timings = {"NDB (fit and score)": time.perf_counter() - start}
    value_range, feature = ndb.options.value_range, ndb.options.feature

    coverage = None
    skipped = coverage_skipped(nearest_k, real_x.shape[0], fake_x.shape[0], coverage_samples)
    if coverage_samples is not None and skipped is not None:
        warnings.warn(skipped, UserWarning, stacklevel=2)
    elif coverage_samples is not None:
        began = time.perf_counter()
        coverage = prdc(real_x, fake_x, nearest_k=nearest_k, feature=feature, value_range=value_range,
                        num_samples=coverage_samples, seed=ndb.seed)
        timings["coverage metrics"] = time.perf_counter() - began
    pairs = null_duplicates = duplicates = None
    size = None
    if birthday_samples is not None and min(birthday_samples, fake_x.shape[0], real_x.shape[0]) < 3:
        warnings.warn(f"birthday test skipped: it needs at least 3 samples on each side, got birthday_samples "
                      f"{birthday_samples}, {fake_x.shape[0]} fake and {real_x.shape[0]} real", UserWarning,
                      stacklevel=2)
    elif birthday_samples is not None:
        began = time.perf_counter()
        size = min(birthday_samples, fake_x.shape[0], real_x.shape[0])
        threshold = fastndb.duplicate_threshold(real_x, num_samples=size, seed=ndb.seed, value_range=value_range,
                                                feature=feature)
        pairs = fastndb.birthday(fake_x[:size], num_pairs=min(20, size * (size - 1) // 2), threshold=threshold,
                                 value_range=value_range, feature=feature)
        null_duplicates = fastndb.birthday(real_x[-size:], num_pairs=1, threshold=threshold, value_range=value_range,
                                           feature=feature).num_duplicates
        null_samples = real_x[-size:]
        duplicates = compare_duplicates(pairs, null_duplicates, size, permutation_p=duplicate_permutation_test(
            fake_x[:size], null_samples, threshold, seed=ndb.seed, value_range=value_range, feature=feature))
        timings["birthday test"] = time.perf_counter() - began

    modes = None
    if modes_samples is not None and min(real_x.shape[0], fake_x.shape[0], modes_samples) < 2:
        warnings.warn(f"mode counts skipped: they need at least 2 samples on each side, got modes_samples "
                      f"{modes_samples}, {fake_x.shape[0]} fake and {real_x.shape[0]} real", UserWarning, stacklevel=2)
    elif modes_samples is not None:
        began = time.perf_counter()
        modes = _modes_on_subsets(real_x, fake_x, modes_samples, seed=ndb.seed, feature=feature,
                                  value_range=value_range, examples=examples)
        timings["mode counts"] = time.perf_counter() - began

    from fastndb._core.memorization import COPY_ALPHA, memorization

    copied = None
    copies: list[tuple[int, int, float, float, bool]] = []
    test_x = None if test is None else concatenate(as_batches(test, "test", check_finite=False, flatten=False))
    calibration = (min(real_x.shape[0], memorization_samples or 0) if test_x is None else test_x.shape[0])
    needed = math.ceil(1 / COPY_ALPHA) - 1  # the copy flags' p-values reach alpha from this many held-out samples
    if memorization_samples is not None and (calibration < needed or min(fake_x.shape[0], memorization_samples) < 1):
        source = "real samples (memorization_samples)" if test_x is None else "test samples"
        warnings.warn(f"copies of the training data skipped: their flags need at least {needed} held-out "
                      f"{source} to calibrate at alpha = {COPY_ALPHA} and 1 fake sample, got {calibration} and "
                      f"{fake_x.shape[0]}", UserWarning, stacklevel=2)
    elif memorization_samples is not None:

        began = time.perf_counter()
        real_rows = _chosen_rows(real_x, memorization_samples, ndb.seed)
        fake_rows = _chosen_rows(fake_x, memorization_samples, ndb.seed)
        copied = memorization(real_x[real_rows], fake_x[fake_rows], test_x, feature=feature,
                              value_range=value_range, seed=ndb.seed, distributed=False)
        top = copied.closest(examples)
        for i, j, d, r, c in zip(top.tolist(), copied.nearest_train[top].tolist(),
                                 copied.nearest_distance[top].tolist(), copied.ratio[top].tolist(),
                                 copied.copy[top].tolist(), strict=True):
            copies.append((int(fake_rows[i]), int(real_rows[j]), d, r, c))
        timings["copies of the training data"] = time.perf_counter() - began

    flagged, not_shown = flagged_bins(ndb, result, real_x, fake_x, examples=examples, max_flagged=max_flagged)
    as_images = _is_images(real_x)
    images: dict[str, bytes] = {}
    values: dict[str, list[list[float]]] = {}
    if pictures:
        from fastndb import plot

        images["bins"] = _png(plot.bin_proportions(result)[0])
        if modes is not None:
            images["mode-curves"] = _png(plot.mode_curves(modes)[0])
            if as_images:
                shape = _sample_shape(real_x)
                for key, found, side, invented in (("missing-modes", modes.missing, real_x, False),
                                                   ("invented-modes", modes.invented, fake_x, True)):
                    if found:
                        shown = to_float(side.reshape(side.shape[0], *shape), value_range).clamp(0, 1).cpu()
                        images[key] = _png(plot.missing_modes(modes, shown, invented=invented, fake=shown,
                                                              title="over-filled or invented modes" if invented
                                                              else "missing modes")[0])
        if as_images:
            images.update(example_strips(flagged, real_x, fake_x, value_range))
            if copies:
                shape = _sample_shape(real_x)
                fake_shown = torch.tensor([c[0] for c in copies], device=fake_x.device)
                real_shown = torch.tensor([c[1] for c in copies], device=real_x.device)
                top_row = to_float(fake_x[fake_shown].reshape(len(copies), *shape), value_range).clamp(0, 1).cpu()
                bottom = to_float(real_x[real_shown].reshape(len(copies), *shape), value_range).clamp(0, 1).cpu()
                labels = [f"{i}\n{j}\n{r:.2g}" + ("\ncopy" if c else "") for i, j, _, r, c in copies]
                fig, ax = plot._pair_mosaic(top_row, torch.arange(len(copies)), bottom, torch.arange(len(copies)),
                                            tuple(top_row.shape[1:]), labels, None)
                ax.set_title("fake samples most like copies (top) above their nearest real samples")
                images["copies"] = _png(fig)
            if pairs is not None:
                shape = _sample_shape(real_x)
                shown = to_float(fake_x[:size].reshape(size, *shape), value_range).clamp(0, 1).cpu()
                images["pairs"] = _png(plot.birthday_pairs(shown, pairs)[0])
    if not as_images:
        flat_real, flat_fake = real_x.reshape(real_x.shape[0], -1), fake_x.reshape(fake_x.shape[0], -1)
        for b in flagged:
            values[f"{b.index}-real"] = flat_real[b.real_examples, :8].double().tolist()
            values[f"{b.index}-fake"] = flat_fake[b.fake_examples, :8].double().tolist()

    try:
        option_values = ndb.options.to_dict()
    except ValueError:  # a plain callable as feature has no stored identity: name it in words
        option_values = {**ndb.options.without_features().to_dict(), "value_range": value_range,
                         "feature": feature.description()}
    settings = {
        "real samples": real_x.shape[0], "fake samples": fake_x.shape[0], "sample shape": tuple(real_x.shape[1:]),
        "bins (K)": num_bins, "default K rule": DEFAULT_BINS_RULE,
        **{f"option {k}": v for k, v in option_values.items()}, "alpha": ndb.alpha,
        "correction": ndb.correction, "fastndb": fastndb.__version__, "torch": torch.__version__,
        "python": platform.python_version(), "device": str(real_x.device),
        **{f"time: {k}": f"{v:.2f} s" for k, v in timings.items()},
    }
    decision = verdict(result, coverage, duplicates)
    return Report([decision.headline, *decision.lines], result, coverage, pairs, null_duplicates, flagged,
                  not_shown, settings, names, fake_names, images, as_images and pictures, values, decision,
                  duplicates, modes, copied, copies)


def _chosen_rows(x: Tensor, size: int, seed: int) -> Tensor:
    """Rows of at most ``size`` samples of ``x`` chosen by content keys (all rows when ``x`` holds no more)."""
    from fastndb._core.sampling import SEEDING_SALT, key_positions, row_keys

    if x.shape[0] <= size:
        return torch.arange(x.shape[0], device=x.device)
    positions, _ = key_positions(row_keys(x.reshape(x.shape[0], -1), seed, SEEDING_SALT))
    return (positions < size).nonzero()[:, 0]


def _modes_on_subsets(real: Tensor, fake: Tensor, size: int, *, seed: int, feature: object,
                      value_range: tuple[float, float] | None, examples: int) -> ModesResult:
    """:func:`fastndb.modes` on at most ``size`` samples of each side chosen by content keys, with the modes'
    example indices mapped back to the samples given (so that file names can be shown)."""
    import dataclasses

    from fastndb._core.modes import modes

    real_rows, fake_rows = _chosen_rows(real, size, seed), _chosen_rows(fake, size, seed)
    out = modes(real[real_rows], fake[fake_rows], feature=feature, value_range=value_range, seed=seed,
                examples=examples)
    remap = lambda mode, rows: dataclasses.replace(mode, examples=rows.to(mode.examples.device)[mode.examples])  # noqa: E731
    return dataclasses.replace(out, missing=tuple(remap(m, real_rows) for m in out.missing),
                               invented=tuple(remap(m, fake_rows) for m in out.invented))
