"""Named references: bins fitted once on a real data set, stored under a name, scored against from then on.

As clean-fid's custom statistics and torch-fidelity's cache names: ``fastndb fit REAL --name NAME`` (or
:func:`save_reference`) fits the bins (in the feature space of ``feature=`` / ``--features``) and stores them;
``fastndb score NAME FAKE`` (or ``fastndb.score(fastndb.load_reference(NAME), fake)``) scores against them without
the real data; ``fastndb refs`` (:func:`list_references`, :func:`remove_reference`) lists and removes them.

Where: ``$FASTNDB_HOME/references/NAME.pt``, by default ``$XDG_CACHE_HOME/fastndb`` or ``~/.cache/fastndb`` for
``FASTNDB_HOME``. What: one ``torch.save`` file of plain tensors, numbers and strings (loaded with
``weights_only=True``: no code runs), written atomically (temporary file + rename), with a format version: a file of
another version is refused with a message, never misread. It holds the fitted bins, the bin options they were
fitted with, the extractor's identity (name or class with a digest of its weights) with its preprocessing, dtype and
the versions of torch and of the package that provides the network, the number of real samples and when it was made.
Every field is checked when the file is read. A reference is only scored against in the feature space it was fitted
in: another extractor, other weights, other preprocessing or another dtype is refused, naming both sides; other
package versions only warn (the same network can round differently, but refusing would orphan every reference at
each upgrade).
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastndb._core.bins import FittedBins
from fastndb._core.cache import write_atomic
from fastndb._core.extractors import (
    NAMES,
    Extractor,
    compare_provenance,
    extractor,
    resolve_feature,
    same_features,
)
from fastndb._core.options import BIN_OPTION_NAMES, TEST_OPTION_NAMES

FORMAT = "fastndb-reference"
VERSION = 1
HOME_ENV = "FASTNDB_HOME"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def home() -> Path:
    """fastndb's folder for user data: ``$FASTNDB_HOME``, else ``$XDG_CACHE_HOME/fastndb``, else
    ``~/.cache/fastndb``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "fastndb"


def reference_dir() -> Path:
    """Where named references are stored."""
    return home() / "references"


def _writable_reference_dir() -> Path:
    """:func:`reference_dir`, made if missing, or a ``ValueError`` naming ``$FASTNDB_HOME`` (or the cache folder it
    defaults to) and why it cannot be used."""
    from fastndb._core.cache import usable_folder

    what = f"${HOME_ENV}" if os.environ.get(HOME_ENV) else f"the fastndb folder (set ${HOME_ENV} to choose another)"
    return usable_folder(reference_dir(), what)


def check_name(name: object) -> str:
    """A reference name: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most 128.

    Raises:
        TypeError: not a string.
        ValueError: any other name (naming the rule).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"name: expected letters, digits, '.', '_' and '-' (starting with a letter or digit, at most "
                         f"128 characters), got {name!r}")
    return name


def reference_path(name: str) -> Path:
    """The file of reference ``name``."""
    return reference_dir() / f"{check_name(name)}.pt"


@dataclass(frozen=True)
class Reference:
    """A named reference: fitted bins and what they were fitted with.

    Attributes:
        name: its name.
        bins: the :class:`~fastndb.FittedBins`.
        options: the bin options as a dict (:meth:`BinOptions.to_dict`; ``feature`` as the extractor's identity).
        num_real: real samples it was fitted on.
        created: when (ISO 8601, UTC).
        path: its file.
        fastndb: the fastndb version that wrote it.
        extractor: with ``feature=``, what the features were computed with (:meth:`Extractor.provenance`: identity,
            preprocessing, dtype, package versions); ``None`` for raw values or a file written before it was kept.
    """

    name: str
    bins: FittedBins
    options: dict
    num_real: int
    created: str
    path: Path
    fastndb: str
    extractor: dict | None = None

    @property
    def feature(self) -> str | None:
        """The identity of the extractor the bins were fitted behind (``None``: raw values)."""
        return self.options.get("feature")

    def to_dict(self) -> dict:
        """What the reference is, without the bins' tensors (for ``fastndb refs --json``)."""
        return {"name": self.name, "num_bins": self.bins.num_bins, "num_real": self.num_real,
                "feature": self.feature, "mode": self.bins.mode, "created": self.created, "path": str(self.path),
                "fastndb": self.fastndb, "options": self.options, "extractor": self.extractor}

    def resolve_feature(self, feature: object = None) -> Extractor | None:
        """The extractor to score against this reference with: ``feature`` if given, else the named network it was
        fitted with (loaded by name); in either case its identity must equal the stored one.

        Raises:
            ValueError: another extractor or other weights than the reference's; a reference fitted behind the
                caller's own module with no ``feature=`` given.
        """
        stored = self.feature
        if feature is None and stored is not None:
            name = stored.split("@", 1)[0]
            if name not in NAMES:
                raise ValueError(f"feature: reference {self.name!r} was fitted on the features of {stored}; pass that "
                                 f"module as feature= to score against it")
            feature = extractor(name)
        resolved = resolve_feature(feature)
        same_features(stored, resolved, f"reference {self.name!r}")
        if resolved is not None and resolved.module is not None:
            compare_provenance(self.extractor, resolved.provenance(), f"reference {self.name!r}")
        return resolved

    def ndb(self, feature: object = None, **test_options: Any) -> Any:
        """A fitted :class:`~fastndb.NDB` on this reference's bins (``feature``: see :meth:`resolve_feature`;
        ``test_options``: ``alpha``, ``correction``, ``z_threshold``, ``progress``).

        Raises:
            ValueError: a bin option other than ``feature`` (they are the reference's own).
        """
        from fastndb._ndb import NDB

        fixed = sorted(set(test_options) & set(BIN_OPTION_NAMES))
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: reference {self.name!r} was fitted with its own bin options "
                             f"({', '.join(f'{k}={self.options[k]!r}' for k in fixed)}); only feature= and the test "
                             f"options ({', '.join(TEST_OPTION_NAMES)}) and progress apply")
        stored = dict(self.options)
        stored["value_range"] = None if stored["value_range"] is None else tuple(stored["value_range"])
        stored["feature"] = self.resolve_feature(feature)
        return NDB(**stored, **test_options).load_bins(self.bins)

    def score(self, fake: object, *, feature: object = None, **test_options: Any) -> Any:
        """NDB of ``fake`` against this reference (:meth:`ndb` then :meth:`~fastndb.NDB.score`)."""
        return self.ndb(feature, **test_options).score(fake)


def _read(path: Path) -> Reference:
    """The reference in ``path``, every field checked.

    Raises:
        ValueError: an unreadable file, another format or version, or any field that :func:`save_reference` would
            not have written (missing keys, non-finite centres, counts that do not match the centres, ...), naming
            the file and the field.
    """
    where = f"reference {path.stem!r} ({path})"
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (a damaged file is one clear error, never a traceback)
        raise ValueError(f"{where}: cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise ValueError(f"{where}: is not a fastndb reference")
    if entry.get("version") != VERSION:
        raise ValueError(f"{where}: has format version {entry.get('version')}, this fastndb reads version {VERSION}; "
                         f"fit it again with fastndb fit")
    missing = [key for key in ("name", "options", "bins", "num_real", "created", "fastndb") if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)} (a damaged file); fit it again with fastndb fit")
    options, extractor_ = entry["options"], entry.get("extractor")
    if not isinstance(options, dict) or not set(BIN_OPTION_NAMES) <= set(options):
        raise ValueError(f"{where}: options: expected the bin options it was fitted with, got "
                         f"{sorted(options) if isinstance(options, dict) else type(options).__name__}")
    if extractor_ is not None and (not isinstance(extractor_, dict) or "identity" not in extractor_):
        raise ValueError(f"{where}: extractor: expected what the features were computed with, got {extractor_!r}")
    bins = FittedBins.from_dict(entry["bins"], where)
    num_real = entry["num_real"]
    if isinstance(num_real, bool) or not isinstance(num_real, int) or num_real < bins.num_reference:
        raise ValueError(f"{where}: num_real: expected an integer of at least the {bins.num_reference} samples "
                         f"behind the counts, got {num_real!r}")
    if options.get("feature") != bins.feature or (extractor_ is not None and extractor_["identity"] != bins.feature):
        raise ValueError(f"{where}: feature: the options, the bins and the extractor record name different feature "
                         f"spaces ({options.get('feature')!r}, {bins.feature!r})")
    if int(options["num_bins"]) != bins.num_bins:
        raise ValueError(f"{where}: num_bins: the options say {options['num_bins']}, the bins hold {bins.num_bins}")
    return Reference(str(entry["name"]), bins, options, num_real, str(entry["created"]), path, str(entry["fastndb"]),
                     extractor_)


def save_reference(name: str, real: object, *, overwrite: bool = False, **options: Any) -> Reference:
    """Fit bins on ``real`` and store them as reference ``name`` (see the module docstring).

    Args:
        name: the reference's name.
        real: the real samples (every form ``fastndb.score`` takes).
        overwrite: replace an existing reference of that name.
        **options: the bin options (``num_bins``, ``feature``, ``value_range``, ``seed``, ...) and ``progress``.

    Raises:
        FileExistsError: a reference of that name exists and ``overwrite`` is false.
        ValueError: a plain callable as ``feature`` (it has no identity to store), and what ``NDB.fit`` raises.

    Example:
        >>> import os, tempfile, torch, fastndb
        >>> before = os.environ.get("FASTNDB_HOME")
        >>> os.environ["FASTNDB_HOME"] = tempfile.mkdtemp()
        >>> ref = fastndb.save_reference("toy", torch.randn(400, 4, generator=torch.Generator().manual_seed(0)),
        ...                              num_bins=5)
        >>> fastndb.load_reference("toy").bins.num_bins, [r.name for r in fastndb.list_references()]
        (5, ['toy'])
        >>> fastndb.score(ref, torch.randn(200, 4)).num_bins
        5
        >>> _ = os.environ.pop("FASTNDB_HOME") if before is None else os.environ.update(FASTNDB_HOME=before)
    """
    from fastndb import __version__
    from fastndb._ndb import NDB

    path = reference_path(name)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: expected True or False, got {overwrite!r}")
    _writable_reference_dir()  # before the fit: a home that cannot hold files fails now, naming the variable
    if path.exists() and not overwrite:
        raise FileExistsError(f"reference {name!r} exists ({path}); pass overwrite=True (--overwrite) to replace it")
    unknown = sorted(set(options) & set(TEST_OPTION_NAMES))
    if unknown:
        raise TypeError(f"save_reference() got test option(s) {', '.join(unknown)}: they apply when scoring, "
                        f"not to the stored bins")
    ndb = NDB(**options)
    stored_options = ndb.options.to_dict()  # before the fit: a plain callable is refused without fitting
    features = ndb.options.feature
    record = None if features is None else features.provenance()
    ndb.fit(real, distributed=False)
    bins = ndb.bins.to("cpu")
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    payload = {"format": FORMAT, "version": VERSION, "name": name, "options": stored_options,
               "bins": bins.to_dict(), "num_real": bins.num_fit + (bins.num_reference if bins.mode == "holdout" else 0),
               "created": created, "fastndb": __version__, "extractor": record}
    try:
        write_atomic(path, payload, exclusive=not overwrite)  # the check above, made again atomically at the write
    except FileExistsError:
        raise FileExistsError(f"reference {name!r} exists ({path}): another fit wrote it while this one ran; pass "
                              f"overwrite=True (--overwrite) to replace it") from None
    return _read(path)


def load_reference(name: str) -> Reference:
    """The stored reference ``name``.

    Raises:
        FileNotFoundError: no reference of that name (naming those there are).
        ValueError: a damaged file or another format version.
    """
    path = reference_path(name)
    if not path.exists():
        there = [p.stem for p in sorted(reference_dir().glob("*.pt"))]
        listed = ", ".join(there) if there else "none"
        raise FileNotFoundError(f"reference {name!r}: not found in {reference_dir()} (references there: {listed}); "
                                f"make it with fastndb fit REAL --name {name}")
    return _read(path)


def list_references() -> list[Reference]:
    """Every readable stored reference, by name (unreadable files are skipped)."""
    found = []
    for path in sorted(reference_dir().glob("*.pt")):
        try:
            found.append(_read(path))
        except ValueError:
            continue
    return found


def remove_reference(name: str) -> Path:
    """Delete reference ``name``; returns the path it had.

    Raises:
        FileNotFoundError: no reference of that name.
    """
    path = reference_path(name)
    if not path.exists():
        raise FileNotFoundError(f"reference {name!r}: not found in {reference_dir()}")
    path.unlink()
    return path
