"""Progress bars: tqdm when installed and wanted, a silent stand-in otherwise."""

from __future__ import annotations

import sys
from typing import Any

from fastndb._core.optional import is_available


class _Silent:
    """The part of tqdm's interface used here, doing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(progress: bool | None, *, total: int | None, desc: str, unit: str = "it") -> Any:
    """A tqdm bar, or a silent stand-in.

    Args:
        progress: ``True`` to show a bar (needs tqdm), ``False`` for none, ``None`` for a bar only when
            tqdm is installed and stderr is a terminal.
    """
    if progress is None:
        progress = is_available("tqdm") and sys.stderr.isatty()
    if not progress or not is_available("tqdm"):
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
