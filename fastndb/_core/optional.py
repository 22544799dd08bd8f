"""Optional dependencies: detection without importing, and imports that name the extra to install.

``import fastndb`` must never import an optional backend (FAISS, cuML, CuPy, tqdm, scikit-learn, SciPy).
Availability is therefore checked with :func:`importlib.util.find_spec`, which locates a module without
executing it, and the module itself is imported only at the point of use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

# module name -> the pip extra (or package) that provides it
_EXTRAS = {
    "faiss": "fastndb[faiss]  (or faiss-gpu for CUDA tensors)",
    "cuml": "cuml (RAPIDS; see https://docs.rapids.ai/install)",
    "cupy": "cupy",
    "tqdm": "fastndb[progress]",
    "sklearn": "fastndb[demo]",
    "torchmetrics": "fastndb[torchmetrics]",
    "matplotlib": "fastndb[plot]",
    "PIL": "fastndb[images]",
    "pytorch_lightning": "fastndb[lightning]",
    "torch_fidelity": "fastndb[features]  (torch-fidelity, with a torchvision built for your torch)",
    "timm": "fastndb[features]  (timm, with a torchvision built for your torch)",
    "open_clip": "fastndb[features]  (open-clip-torch, with a torchvision built for your torch)",
}


def is_available(module: str) -> bool:
    """Return whether ``module`` can be imported, without importing it.

    Example:
        >>> is_available("numpy")
        True
        >>> is_available("surely_not_a_module_name")
        False
    """
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional module, or raise ``ModuleNotFoundError`` naming what to install.

    Args:
        module: module name, e.g. ``"faiss"`` or ``"matplotlib.pyplot"``.
        purpose: what the caller wanted it for, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top_level = module.split(".")[0]
        extra = _EXTRAS.get(top_level, top_level)
        raise ModuleNotFoundError(
            f"{purpose} needs the optional package {module!r}, which is not installed; "
            f"install it with: pip install {extra}"
        ) from err
