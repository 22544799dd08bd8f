"""Argument checks shared by every face: each raises a ValueError/TypeError naming the argument."""

from __future__ import annotations


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (numpy/torch integers accepted; bools and floats refused).

    Example:
        >>> check_int(3, "k", minimum=1)
        3
        >>> check_int(0, "k", minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: k: expected an integer >= 1, got 0
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    value = value.__index__()  # type: ignore[union-attr]
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_seed(value: object, name: str = "seed") -> int:
    """``value`` as a seed: an integer in ``[0, 2**63)`` (what ``torch.Generator.manual_seed`` and the content keys
    take).

    Example:
        >>> check_seed(2**70)
        Traceback (most recent call last):
        ...
        ValueError: seed: expected an integer in [0, 2**63), got 1180591620717411303424
    """
    seed = check_int(value, name, minimum=0)
    if seed >= 2**63:
        raise ValueError(f"{name}: expected an integer in [0, 2**63), got {seed}")
    return seed


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_open_unit(value: object, name: str) -> float:
    """``value`` as a float strictly between 0 and 1."""
    if not _is_number(value) or not 0 < value < 1:  # type: ignore[operator]
        raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_nonnegative(value: object, name: str) -> float:
    """``value`` as a float ``>= 0``."""
    if not _is_number(value) or not value >= 0:  # type: ignore[operator]
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_positive_or_none(value: object, name: str) -> float | None:
    """``None``, or ``value`` as a float ``> 0``."""
    if value is None:
        return None
    if not _is_number(value) or not value > 0:  # type: ignore[operator]
        raise ValueError(f"{name}: expected a number > 0 or None, got {value!r}")
    return float(value)  # type: ignore[arg-type]
