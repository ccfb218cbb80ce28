"""Progress bars: the one way fastllm shows progress on long work (tqdm).

`bar(enabled, total=..., desc=..., unit=...)` is a tqdm bar, or a no-op one with the same methods
when `enabled` is false, so callers never branch on it. tqdm is imported only when a bar is made.

>>> with bar(False, total=3, desc="work") as b:
...     b.update(3)
"""

from __future__ import annotations

from typing import Any

__all__ = ["bar"]


def bar(enabled: bool, **kwargs: Any) -> Any:
    """A tqdm progress bar that clears itself when done (`leave=False` unless given), or a disabled one."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(disable=not enabled, **kwargs)
