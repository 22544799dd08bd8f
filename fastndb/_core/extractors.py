"""Feature extractors: the ``feature=`` step, from validated samples to the embedding the scores work in.

``feature=`` takes, on every face (``score``, ``NDB``, ``birthday``, ``duplicate_threshold``, the metrics, the
collapse monitor, ``--features`` on the command line):

* ``None`` (default): the raw values, as in the paper;
* a ``torch.nn.Module`` or any callable mapping a batch ``(B, *dims)`` to ``(B, d)`` (or to anything that flattens
  to ``(B, d)``);
* a name from the registry (:data:`NAMES`): ``"digits"`` (the shipped digits network, offline), ``"inception"``
  (the FID Inception-v3 of torch-fidelity and torchmetrics, 2048-d pool features), ``"dinov2-vits14"``,
  ``"dinov2-vitb14"`` (timm) and ``"clip-vitb32"`` (open_clip);
* an :class:`Extractor` from :func:`extractor`, which also sets the batch size, an autocast dtype and, for a name,
  the weights file.

What the extractor sees: each batch in its own shape, on its own device, under the library's value-range
convention (:mod:`fastndb._core.features`): ``uint8`` as ``x / 255``, ``uint16`` as ``x / 65535``, floats mapped
from ``value_range`` to [0, 1] when it is stated, other floats as they are (float32 or float64). So
``score(real, fake, feature=m)`` is ``score(m(real), m(fake))`` for float samples with no range stated, batch by
batch, and the bins, counts and tests then work on the ``(N, d)`` features with no range mapping of their own.
It runs in batches of ``batch_size`` under ``torch.no_grad()``, a module in eval mode (its own mode restored
afterwards), optionally under ``torch.autocast``; only the features leave it (as float32, or float64 when the
extractor returns float64), and of the fake samples only the bin counts are kept.

Named extractors take images ``(B, C, H, W)`` (``C`` 1, 3 or 4 with the alpha channel dropped), ``(B, H, W)``, or
flat ``(B, S*S)`` / ``(B, 3*S*S)`` square images, in [0, 1] under the convention: a set outside [0, 1] is refused,
naming the ``value_range`` to state. Grey images are repeated to RGB for the RGB networks; RGB images are turned
to grey (ITU-R 601 luma) for ``"digits"``. Each resizes with antialiasing as documented on :data:`NAMES`.

Weights of a named network, in this order: ``weights=PATH`` (``--weights``); ``$FASTNDB_WEIGHTS/<file>`` for the
file name the registry gives; otherwise the package's own download into its own cache (torch hub, Hugging Face),
unless ``FASTNDB_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``. With none of them, one ``FileNotFoundError`` names the model,
the file and where to put it.

Identity (the caches' and named references' key): a name with a digest of the loaded weights; a module's class,
``repr`` and a digest of its state dict (recomputed only when a parameter changes, by PyTorch's version counters);
a plain callable by the object itself, in memory only (it cannot key the disk cache or a reference).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from fastndb._core.checks import check_int
from fastndb._core.features import ValueSummary, summarize, to_float
from fastndb._core.inputs import Batches
from fastndb._core.optional import require

WEIGHTS_ENV = "FASTNDB_WEIGHTS"
OFFLINE_ENVS = ("FASTNDB_OFFLINE", "HF_HUB_OFFLINE")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's convert("L")
_IMAGE_SLACK = 0.01  # a named network's input may stray this far outside [0, 1] (rounding) before it is refused
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------- preprocessing
def as_images(x: Tensor, channels: int, name: str) -> Tensor:
    """``(B, C, H, W)`` float images with ``channels`` (1 or 3) channels from the shapes a named extractor takes.

    Example:
        >>> as_images(torch.rand(2, 64), 1, "digits").shape, as_images(torch.rand(2, 1, 5, 5), 3, "x").shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2, 3, 5, 5]))
    """
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        colour = math.isqrt(x.shape[1] // 3) if x.shape[1] % 3 == 0 else 0
        if side * side == x.shape[1]:
            x = x.reshape(x.shape[0], 1, side, side)
        elif colour and 3 * colour * colour == x.shape[1]:
            x = x.reshape(x.shape[0], 3, colour, colour)
        else:
            raise ValueError(f"feature={name!r}: expected images (B, C, H, W), or flat square images (B, S*S) or "
                             f"(B, 3*S*S); got flat samples of {x.shape[1]} values")
    elif x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(f"feature={name!r}: expected images (B, C, H, W) with 1, 3 or 4 channels, got shape "
                         f"{tuple(x.shape)}")
    x = x[:, :3] if x.shape[1] == 4 else x  # RGBA: the alpha channel carries no content
    if channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif channels == 1 and x.shape[1] == 3:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
    return x


def resize(x: Tensor, size: int, mode: str) -> Tensor:
    """``(B, C, size, size)``: square resize with antialiasing (a no-op at that size already)."""
    if x.shape[-2:] == (size, size):
        return x
    return functional.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False)


class ImageNetwork(nn.Module):
    """A named network with its preprocessing: images in [0, 1] in, ``(B, d)`` features out.

    Args:
        network: maps the preprocessed ``(B, C, size, size)`` batch to features.
        channels: 1 (grey) or 3 (RGB) channels the network takes.
        size: input edge (``None``: the network resizes itself).
        mode: resize mode (``"bilinear"`` or ``"bicubic"``, with antialiasing).
        mean: per-channel mean subtracted after resizing (``None``: none).
        std: per-channel divisor after the mean.
        to_uint8: hand the network ``round(255 x)`` as ``uint8`` (torch-fidelity's Inception takes bytes, as FID
            does): ``uint8`` images reach it as their own bytes.
    """

    def __init__(self, network: nn.Module, *, channels: int, size: int | None, mode: str = "bicubic",
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 to_uint8: bool = False) -> None:
        super().__init__()
        self.network = network
        self.channels, self.size, self.mode, self.to_uint8 = channels, size, mode, to_uint8
        self.label = "feature"  # the registry name, set by load_named: what messages call this network
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def prepare(self, images: Tensor, name: str | None = None) -> Tensor:
        """The batch the network sees."""
        x = as_images(images, self.channels, name or self.label).to(torch.float32)
        if self.size is not None:
            x = resize(x, self.size, self.mode).clamp_(0, 1)
        if self.to_uint8:
            return x.clamp(0, 1).mul(255).round_().to(torch.uint8)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def forward(self, images: Tensor) -> Tensor:
        out = self.network(self.prepare(images))
        return out[0] if isinstance(out, (tuple, list)) else out


# ------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Named:
    """One registry entry.

    Attributes:
        name: the ``feature=`` name.
        dims: feature dimension ``d``.
        package: the module that provides the network (``None``: fastndb itself).
        extra: what to ``pip install`` for it.
        weights_file: the weights file name looked up in ``$FASTNDB_WEIGHTS``.
        source: where the weights come from, for messages.
        preprocessing: the documented preprocessing, for messages and docs.
    """

    name: str
    dims: int
    package: str | None
    extra: str
    weights_file: str
    source: str
    preprocessing: str


NAMES: dict[str, Named] = {
    entry.name: entry for entry in (
        Named("digits", 64, None, "(shipped with fastndb)", "digits_cnn.pt", "fastndb/_core/weights/digits_cnn.pt",
              "grey (RGB to ITU-R 601 luma), bilinear antialiased resize to 16 x 16, centred at 0.5"),
        Named("inception", 2048, "torch_fidelity", "fastndb[features] (torch-fidelity)",
              "weights-inception-2015-12-05-6726825d.pth",
              "torch-fidelity's release v0.2.0 (the TensorFlow FID Inception, converted)",
              "RGB (grey repeated), 8-bit (round(255 x)), then torch-fidelity's own TensorFlow-compatible bilinear "
              "resize to 299 x 299 and (x - 128) / 128, as torchmetrics' FrechetInceptionDistance"),
        Named("dinov2-vits14", 384, "timm", "fastndb[features] (timm)", "dinov2_vits14_pretrain.pth",
              "Meta's DINOv2 release (or timm's vit_small_patch14_dinov2.lvd142m)",
              "RGB (grey repeated), bicubic antialiased resize to 224 x 224, ImageNet mean/std; CLS token"),
        Named("dinov2-vitb14", 768, "timm", "fastndb[features] (timm)", "dinov2_vitb14_pretrain.pth",
              "Meta's DINOv2 release (or timm's vit_base_patch14_dinov2.lvd142m)",
              "RGB (grey repeated), bicubic antialiased resize to 224 x 224, ImageNet mean/std; CLS token"),
        Named("clip-vitb32", 512, "open_clip", "fastndb[features] (open-clip-torch)", "open_clip_pytorch_model.bin",
              "OpenAI's CLIP ViT-B/32 (open_clip's 'openai' weights)",
              "RGB (grey repeated), bicubic antialiased resize to 224 x 224, CLIP mean/std; image embedding"),
    )
}
"""The named extractors: ``feature="digits"`` and the others."""

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_TIMM_NAMES = {"dinov2-vits14": "vit_small_patch14_dinov2.lvd142m", "dinov2-vitb14": "vit_base_patch14_dinov2.lvd142m"}


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENVS)


def _missing(entry: Named, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"feature={entry.name!r}: no weights for the {entry.name} network ({detail}); put the file "
        f"{entry.weights_file} ({entry.source}) in the folder ${WEIGHTS_ENV} names, or pass its path as "
        f"fastndb.extractor({entry.name!r}, weights=PATH) (--weights PATH on the command line)"
    )


def weights_path(entry: Named, weights: str | os.PathLike | None) -> Path | None:
    """The weights file of a named network: ``weights`` (must exist), else ``$FASTNDB_WEIGHTS/<file>`` if it exists,
    else ``None`` (the package's own download, where allowed).

    Raises:
        FileNotFoundError: ``weights`` names no file.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise _missing(entry, f"weights={str(weights)!r} is not a file")
        return path
    folder = os.environ.get(WEIGHTS_ENV)
    if folder:
        candidate = Path(folder).expanduser() / entry.weights_file
        if candidate.is_file():
            return candidate
    return None


def _build_digits(path: Path | None) -> nn.Module:
    from fastndb._core.digits_net import load_digits_net

    net = load_digits_net(path)

    class _Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            return self.net.body(x - 0.5)

    return ImageNetwork(_Features(), channels=1, size=16, mode="bilinear")


def _build_inception(path: Path | None) -> nn.Module:
    module = require("torch_fidelity.feature_extractor_inceptionv3", "feature='inception'")
    network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                 feature_extractor_weights_path=None if path is None else str(path))
    return ImageNetwork(network, channels=3, size=None, to_uint8=True)


def _build_dinov2(name: str, path: Path | None) -> nn.Module:
    timm = require("timm", f"feature={name!r}")
    overlay = {} if path is None else {"pretrained_cfg_overlay": {"file": str(path)}}
    network = timm.create_model(_TIMM_NAMES[name], pretrained=True, num_classes=0, img_size=224, **overlay)
    return ImageNetwork(network, channels=3, size=224, mean=_IMAGENET[0], std=_IMAGENET[1])


def _build_clip(path: Path | None) -> nn.Module:
    open_clip = require("open_clip", "feature='clip-vitb32'")
    model = open_clip.create_model("ViT-B-32", pretrained="openai" if path is None else str(path))
    return ImageNetwork(model.visual, channels=3, size=224, mean=_CLIP[0], std=_CLIP[1])


def _build(entry: Named, path: Path | None) -> nn.Module:
    if entry.name == "digits":
        return _build_digits(path)
    if entry.name == "inception":
        return _build_inception(path)
    if entry.name in _TIMM_NAMES:
        return _build_dinov2(entry.name, path)
    return _build_clip(path)


_loaded: dict[tuple[str, str | None], nn.Module] = {}
_on_device: dict[tuple[str, str | None, torch.device], nn.Module] = {}
_loaded_lock = threading.Lock()


def named_on(network: nn.Module, device: torch.device) -> nn.Module:
    """A loaded named network on ``device``: copied there once per process, whichever call asks (every
    ``score(..., feature="inception")`` resolves the name anew, and must not copy the network each time)."""
    here = {t.device for t in (*network.parameters(), *network.buffers())}
    if here <= {device}:
        return network
    key = next(((name, path, device) for (name, path), loaded in _loaded.items() if loaded is network), None)
    with _loaded_lock:
        if key is not None and key in _on_device:
            return _on_device[key]
    import copy

    moved = copy.deepcopy(network).to(device)
    if key is not None:
        with _loaded_lock:
            _on_device[key] = moved
    return moved


def load_named(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """The named network with its preprocessing, in eval mode on the CPU (loaded once per name and file).

    Raises:
        ValueError: an unknown name.
        ModuleNotFoundError: the package that provides it is not installed (naming the extra).
        FileNotFoundError: no weights file and no download (naming the file and where it goes).
    """
    if name not in NAMES:
        raise ValueError(f"feature: expected None, a torch.nn.Module, a callable or one of {sorted(NAMES)}, "
                         f"got {name!r}")
    entry = NAMES[name]
    path = weights_path(entry, weights)
    if path is None and entry.package is not None and _offline():
        raise _missing(entry, f"offline ({' or '.join(OFFLINE_ENVS)} is set) and no ${WEIGHTS_ENV}/"
                              f"{entry.weights_file}")
    key = (name, None if path is None else str(path.resolve()))
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
    if entry.package is not None:
        require(entry.package, f"feature={name!r}")  # a missing package names its extra, not a download error
    try:
        network = _build(entry, path)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        if isinstance(err, FileNotFoundError) and path is None:
            raise _missing(entry, str(err)) from err
        raise
    except Exception as err:  # noqa: BLE001  (each package reports a failed download its own way)
        if path is None:
            raise _missing(entry, f"the download failed: {type(err).__name__}: {str(err)[:200]}") from err
        raise ValueError(f"feature={name!r}: could not load the weights in {path}: {type(err).__name__}: "
                         f"{str(err)[:300]}") from err
    network = network.eval().requires_grad_(False)
    if isinstance(network, ImageNetwork):
        network.label = name
    with _loaded_lock:
        _loaded[key] = network
    return network


# ------------------------------------------------------------------------------------------------ identity
_SIMPLE = (int, float, str, bool, type(None))
_TORCH_INTERNALS = {"training", "dump_patches", "call_super_init"}


def _simple(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return len(value) <= 64 and all(_simple(v) for v in value)
    return isinstance(value, (*_SIMPLE, torch.dtype))


def weights_digest(module: nn.Module) -> str:
    """A digest of everything a module's forward can read: every parameter and buffer (persistent or not: names,
    shapes, dtypes and exact bytes, hashed where they live) and the plain attributes of it and its submodules
    (numbers, strings, tuples of them, and tensors kept as plain attributes).

    Recomputed from the content at every call, so that no in-place change escapes it: PyTorch's version counters miss
    writes through ``.data``, and non-persistent buffers and attributes are not in the state dict. One pass over the
    weights on their own device and one host read for all of them.
    """
    from fastndb._core.sampling import fingerprint_totals

    named: dict[str, Tensor] = {}
    attributes: list = []
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for name, value in vars(sub).items():
            if name.startswith("_") or name in _TORCH_INTERNALS:
                continue
            if isinstance(value, Tensor):
                named[f"{prefix}.{name}!attribute"] = value
            elif _simple(value):
                attributes.append([prefix, name, repr(value)])
    named.update((f"{name}!parameter", t) for name, t in module.named_parameters(remove_duplicate=False))
    named.update((f"{name}!buffer", t) for name, t in module.named_buffers(remove_duplicate=False) if t is not None)
    totals = [fingerprint_totals(t.detach()) for t in named.values()]
    if totals:
        device = totals[0].device
        read = torch.stack([t.to(device) for t in totals]).tolist()
    else:
        read = []
    parts = [[name, list(t.shape), str(t.dtype), *pair] for (name, t), pair in zip(named.items(), read, strict=True)]
    return hashlib.sha256(json.dumps([parts, attributes]).encode()).hexdigest()[:20]


def module_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating dtype a module computes in: that of its first floating parameter or buffer (``None``: none)."""
    return next((t.dtype for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)


# ---------------------------------------------------------------------------------------------- the extractor
class _ByIdentity:
    """A callable as a cache key by identity (a ``@dataclass`` or other unhashable callable included); holding it
    keeps its ``id`` from being reused while the key lives."""

    __slots__ = ("target",)

    def __init__(self, target: object) -> None:
        self.target = target

    def __hash__(self) -> int:
        return id(self.target)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.target is self.target


class Extractor:
    """A resolved ``feature=``: a function from sample batches to ``(B, d)`` features, with how to run it.

    Build one with :func:`extractor`; every face also takes the plain forms (a name, a module, a callable).

    Args:
        function: the module or callable.
        name: the registry name, or ``None`` for the caller's own.
        batch_size: samples per call of ``function``.
        autocast: ``torch.float16`` or ``torch.bfloat16`` to run under ``torch.autocast`` (``None``: full precision).
        owned: whether fastndb built the module (then it is copied to each device the data live on; a caller's
            module is never moved: it must sit where the samples are).
    """

    def __init__(self, function: Callable[[Tensor], Any], *, name: str | None = None, batch_size: int = 64,
                 autocast: torch.dtype | None = None, owned: bool = False) -> None:
        if not callable(function):
            raise TypeError(f"feature: expected a torch.nn.Module or a callable, got {type(function).__name__}")
        self.function = function
        self.name = name
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        if autocast is not None and autocast not in _AUTOCAST_DTYPES:
            raise ValueError(f"autocast: expected None, torch.float16 or torch.bfloat16, got {autocast!r}")
        self.autocast = autocast
        self.owned = owned

    @property
    def module(self) -> nn.Module | None:
        return self.function if isinstance(self.function, nn.Module) else None

    @property
    def needs_images(self) -> bool:
        """Whether the function takes images in [0, 1] (the named networks)."""
        return isinstance(self.function, ImageNetwork)

    def description(self) -> str:
        """What the features are, in words: the name, or the module's class, or the callable's name."""
        if self.name is not None:
            return self.name
        if self.module is not None:
            return f"module {type(self.module).__qualname__}"
        return f"callable {getattr(self.function, '__qualname__', type(self.function).__qualname__)}"

    def identity(self) -> str:
        """A stable identity for the disk cache and named references: name or class with a digest of the weights.

        Raises:
            ValueError: a plain callable (nothing to digest: it can key the in-memory cache only).
        """
        module = self.module
        if module is None:
            raise ValueError(f"feature: a {self.description()} has no weights to identify it by across processes; "
                             f"wrap it in a torch.nn.Module, or use a named extractor")
        label = self.name or f"{type(module).__module__}.{type(module).__qualname__}"
        shape = "" if self.name else hashlib.sha256(repr(module).encode()).hexdigest()[:8] + ":"
        return f"{label}@{shape}{weights_digest(module)}"

    def provenance(self) -> dict:
        """What a named reference records of its feature space, beyond :meth:`identity`: the preprocessing, the dtype
        the network computes in, and the versions of the packages that compute it.

        Raises:
            ValueError: a plain callable (see :meth:`identity`).

        Example:
            >>> sorted(extractor(torch.nn.Flatten()).provenance())
            ['dtype', 'identity', 'preprocessing', 'versions']
        """
        identity = self.identity()
        dtype = str(module_dtype(cast(nn.Module, self.module)) or torch.float32)
        if self.autocast is not None:
            dtype += f" under autocast({self.autocast})"
        versions = {"torch": str(torch.__version__)}
        entry = NAMES.get(self.name) if self.name is not None else None
        if entry is not None and entry.package is not None:
            versions[entry.package] = _package_version(entry.package)
        preprocessing = (entry.preprocessing if entry is not None else
                         "the module's own (fastndb applies only the value-range convention)")
        return {"identity": identity, "preprocessing": preprocessing, "dtype": dtype, "versions": versions}

    def label(self) -> str:
        """:meth:`identity`, or for a plain callable its name and address (valid in this process only): what fitted
        bins record of the features they were fitted on."""
        if self.module is None:
            return f"{self.description()} at {id(self.function):#x}"
        return self.identity()

    def key(self) -> tuple:
        """The in-memory cache key: the identity (a callable by the object itself), batch size and autocast."""
        core: Any = _ByIdentity(self.function) if self.module is None else self.identity()
        return ("feature", core, self.batch_size, str(self.autocast))

    def _on(self, device: torch.device) -> Callable:
        """The function to run on samples on ``device``."""
        module = self.module
        if module is None:
            return self.function
        if self.owned:  # fastndb's own network: one copy per device the samples come on, per process
            return named_on(module, device)
        here = {t.device for t in (*module.parameters(), *module.buffers())}
        if here and here != {device}:
            found = ", ".join(sorted(str(d) for d in here))
            raise ValueError(f"feature: the module's parameters are on {found} but the samples on {device}; move "
                             f"one of them (module.to({str(device)!r}))")
        return module

    def __call__(self, x: Tensor, name: str = "samples",
                 convert: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Features ``(N, d)`` of ``x`` ``(N, *dims)`` (already under the value-range convention, or brought under it
        by ``convert`` one batch at a time, so that ``uint8`` images never exist as float32 all at once), batch by
        batch. Memory beyond the input and the features: one converted batch and the network's activations.

        Raises:
            ValueError: the function returns something that is not ``(B, ...)`` tensors with one row per sample.
        """
        function = self._on(x.device)
        module = function if isinstance(function, nn.Module) else None
        parts = []
        autocast = (torch.autocast(device_type=x.device.type, dtype=self.autocast) if self.autocast is not None
                    else nullcontext())
        # a caller's module is switched to eval mode for the call and its own modes restored after; threads sharing
        # it take turns, so that one thread's restore never switches another's forward back to train mode
        guard = _module_lock(module) if module is not None and not self.owned else nullcontext()
        # the samples reach a module in its own dtype (a .double() or .half() network), not always float32
        dtype = module_dtype(module) if module is not None and self.autocast is None else None

        def prepared(batch: Tensor) -> Tensor:
            batch = convert(batch) if convert is not None else batch
            return batch.to(dtype) if dtype is not None and batch.is_floating_point() else batch

        with guard:
            modes = [(m, m.training) for m in module.modules()] if module is not None else []
            try:
                if module is not None:
                    module.eval()
                with torch.no_grad(), autocast:
                    for start in range(0, x.shape[0], self.batch_size):
                        batch = prepared(x[start : start + self.batch_size])
                        rows = batch.shape[0]
                        if rows < self.batch_size:  # always the same shape: features independent of the batching
                            filler = batch[-1:].expand(self.batch_size - rows, *batch.shape[1:])
                            batch = torch.cat([batch, filler])
                        parts.append(self._flat(function(batch), batch.shape[0], name)[:rows])
            finally:
                for m, training in modes:
                    m.training = training
        features = parts[0] if len(parts) == 1 else torch.cat(parts)
        if not bool(torch.isfinite(features).all()):  # the samples were checked finite before: the network did it
            raise ValueError(f"feature: the {self.description()} returned NaN or infinite features for {name}; "
                             f"the samples themselves are finite (check the network, its dtype or autocast)")
        return features

    def _flat(self, out: Any, rows: int, name: str) -> Tensor:
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            out = out[0]
        if not isinstance(out, Tensor):
            raise ValueError(f"feature: expected the {self.description()} to return a tensor of shape (B, d), "
                             f"got {type(out).__name__} for {name}")
        if out.dim() == 0 or out.shape[0] != rows:
            padded = (f" (its batch of {rows} rows: the samples, padded to batch_size={self.batch_size} with copies "
                      f"of the last)" if rows == self.batch_size else "")
            raise ValueError(f"feature: expected the {self.description()} to return one row per sample, "
                             f"(B={rows}, d){padded}; got shape {tuple(out.shape)} for {name}")
        out = out.reshape(rows, -1)
        if out.shape[1] == 0:
            raise ValueError(f"feature: the {self.description()} returned no features (shape {tuple(out.shape)})")
        if not out.is_floating_point():
            raise ValueError(f"feature: expected floating-point features from the {self.description()}, got "
                             f"{out.dtype}")
        return out if out.dtype in (torch.float32, torch.float64) else out.to(torch.float32)

    def check_images(self, low: float, high: float, name: str) -> None:
        """Refuse samples outside [0, 1] (under the convention) for a named network, which reads them as images."""
        if self.needs_images and (low < -_IMAGE_SLACK or high > 1 + _IMAGE_SLACK):
            raise ValueError(
                f"{name}: values in [{low:.4g}, {high:.4g}] but feature={self.name!r} reads images in [0, 1] "
                f"(uint8 as x / 255); state their range with value_range=(low, high), e.g. (-1, 1) for tanh outputs"
            )

    def __repr__(self) -> str:
        extra = f", autocast={self.autocast}" if self.autocast is not None else ""
        return f"Extractor({self.description()}, batch_size={self.batch_size}{extra})"


def _package_version(module: str) -> str:
    """The installed version of the package that provides ``module`` (``"unknown"`` if it says none)."""
    from importlib import metadata

    distribution = {"torch_fidelity": "torch-fidelity", "open_clip": "open_clip_torch"}.get(module, module)
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return str(getattr(require(module, "version"), "__version__", "unknown"))


def compare_provenance(stored: dict | None, current: dict | None, where: str) -> None:
    """Refuse features computed otherwise than those ``where`` was fitted on; warn when only versions differ.

    Raises:
        ValueError: another identity (extractor and weights digest), preprocessing or dtype, naming both sides.
    """
    if stored is None or current is None:
        return
    differ = [key for key in ("identity", "preprocessing", "dtype") if stored.get(key) != current.get(key)]
    if differ:
        shown = "; ".join(f"{key}: {stored.get(key)!r} there, {current.get(key)!r} here" for key in differ)
        raise ValueError(f"feature: {where} was fitted on features computed otherwise ({shown}); pass the feature= "
                         f"it was fitted with, or fit it again")
    versions, mine = stored.get("versions") or {}, current.get("versions") or {}
    changed = {key: (versions[key], mine.get(key)) for key in versions if versions[key] != mine.get(key)}
    if changed:
        shown = ", ".join(f"{key} {old} there, {new} here" for key, (old, new) in changed.items())
        warnings.warn(f"feature: {where} was fitted with other package versions ({shown}); the same weights and "
                      f"preprocessing can still round differently: refit it if the scores drift", UserWarning,
                      stacklevel=3)


_module_locks: dict[int, tuple[weakref.ref, threading.RLock]] = {}
_module_locks_guard = threading.Lock()


def _module_lock(module: nn.Module) -> threading.RLock:
    """One re-entrant lock per live module, keyed by identity (a module that defines ``__eq__`` is unhashable) and
    dropped with the module."""
    key = id(module)
    with _module_locks_guard:
        entry = _module_locks.get(key)
        if entry is None or entry[0]() is not module:
            entry = (weakref.ref(module, lambda _, key=key: _module_locks.pop(key, None)), threading.RLock())
            _module_locks[key] = entry
        return entry[1]


def extractor(
    feature: str | nn.Module | Callable[[Tensor], Any],
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    autocast: torch.dtype | None = None,
) -> Extractor:
    """A feature extractor for ``feature=``, with its batch size, autocast dtype and (for a name) weights file.

    Args:
        feature: a name from :data:`NAMES`, a ``torch.nn.Module`` or a callable ``(B, *dims) -> (B, d)``.
        weights: the weights file of a named network (default: ``$FASTNDB_WEIGHTS/<file>`` or the package's own
            download; see the module docstring).
        batch_size: samples per forward pass.
        autocast: ``torch.float16`` or ``torch.bfloat16`` to run under ``torch.autocast``.

    Raises:
        ValueError: an unknown name, ``weights`` for something that is not a name, a bad batch size or dtype.
        ModuleNotFoundError: the package of a named network is missing.
        FileNotFoundError: a named network's weights cannot be found (naming the file and where to put it).

    Example:
        >>> import torch
        >>> ex = extractor(torch.nn.Flatten(), batch_size=2)
        >>> ex(torch.ones(5, 1, 2, 2)).shape
        torch.Size([5, 4])
    """
    if isinstance(feature, str):
        return Extractor(load_named(feature, weights), name=feature, batch_size=batch_size, autocast=autocast,
                         owned=True)
    if weights is not None:
        raise ValueError(f"weights: only a named extractor ({sorted(NAMES)}) takes a weights file; load your "
                         f"module's weights yourself")
    if isinstance(feature, Extractor):
        raise TypeError("feature: already an Extractor; pass it as feature= directly")
    return Extractor(feature, batch_size=batch_size, autocast=autocast)


def resolve_feature(feature: object) -> Extractor | None:
    """``feature=`` as an :class:`Extractor` (or ``None`` for raw values).

    Raises:
        TypeError: something that is neither ``None``, a name, a module, a callable nor an :class:`Extractor`.
        ValueError: an unknown name (see :func:`extractor` for the others).
    """
    if feature is None or isinstance(feature, Extractor):
        return feature
    if isinstance(feature, str):
        return extractor(feature)
    if isinstance(feature, bool) or not callable(feature):
        raise TypeError(f"feature: expected None, a name from {sorted(NAMES)}, a torch.nn.Module, a callable or "
                        f"a fastndb.extractor(...), got {type(feature).__name__}")
    return Extractor(feature)


def label_of(extractor_: Extractor | None) -> str | None:
    """What fitted bins record of their features: ``None`` for raw values, else :meth:`Extractor.label`."""
    return None if extractor_ is None else extractor_.label()


def same_features(expected: str | None, extractor_: Extractor | None, where: str,
                  remedy: str = "fit again") -> None:
    """Refuse bins or a reference fitted in another feature space than ``extractor_`` gives.

    Raises:
        ValueError: the labels differ (naming both).
    """
    got = label_of(extractor_)
    if expected != got:
        shown = lambda s: "raw values (feature=None)" if s is None else s  # noqa: E731
        changed = (expected is not None and got is not None and expected.split("@", 1)[0] == got.split("@", 1)[0])
        hint = ("the network's weights, buffers or attributes changed since (an optimizer step, an in-place write): "
                f"{remedy}, or keep a frozen copy (copy.deepcopy) as feature=" if changed else
                "pass the feature= it was fitted with")
        raise ValueError(f"feature: {where} was fitted on {shown(expected)}, but this call's features are "
                         f"{shown(got)}; {hint}")



# ------------------------------------------------------------------------------------------------ embedding
def embed(
    x: Tensor,
    extractor_: Extractor,
    value_range: tuple[float, float] | None,
    name: str,
    check: Callable[[ValueSummary, str], None] | None = None,
) -> tuple[Tensor, ValueSummary]:
    """Features of validated samples ``x (N, *dims)`` and the samples' own range.

    One range read of the samples (which also refuses NaN/Inf, naming ``name``), the check a named network makes
    (images in [0, 1]), the caller's ``check`` of the range against the real samples', then the extractor on the
    samples under the value-range convention.

    Returns:
        ``(features (N, d), summary)``: the summary of the samples as passed (after the convention's mapping).
    """
    summary = summarize(x.reshape(x.shape[0], -1), value_range, name)
    extractor_.check_images(summary.low, summary.high, name)
    if check is not None:
        check(summary, name)
    return extractor_(x, name, convert=lambda batch: to_float(batch, value_range)), summary


def embedded(
    batches: Batches,
    extractor_: Extractor,
    value_range: tuple[float, float] | None,
    name: str,
    check: Callable[[ValueSummary, str], None] | None = None,
) -> Batches:
    """:func:`embed` over a stream of batches (``(N_b, *dims)``, from ``as_batches(..., flatten=False)``): lazy for
    an iterable, so a generator's samples become features batch by batch and are never held together."""
    if batches.single is not None:
        features, _ = embed(batches.single, extractor_, value_range, name, check)
        return Batches(batches.library, features, iter((features,)))

    def generate() -> Iterator[Tensor]:
        for index, x in enumerate(batches.iterator):
            yield embed(x, extractor_, value_range, f"{name} (batch {index})", check)[0]

    return Batches(batches.library, None, generate())
