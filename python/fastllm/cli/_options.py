"""The option types every `fastllm` command shares: each integer and float option has a range.

A value outside it (huge, negative, NaN, infinite) is a usage error that names the flag, before any
work starts: `Error: Invalid value for '--threads': 1000000 is not in the range 1<=x<=1024.`, never
an OverflowError from the native code deep inside. Every integer range has a maximum (at most what
an int64 or u64 holds); a float option with no natural maximum (a temperature, a learning rate)
takes any finite value, never NaN or an infinity. `tests/test_cli_options.py` walks every command
and checks that no integer or float option is left without one.

>>> count(1).convert("3", None, None)
3
>>> finite(0.0, 1.0).convert("nan", None, None)
Traceback (most recent call last):
...
click.exceptions.BadParameter: 'nan' is not a finite number.
"""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["I32", "I64", "MAX_THREADS", "SEED", "THREADS", "U32", "FiniteFloatRange", "count", "finite"]

I32 = 2**31 - 1  # sizes of a model (layers, widths, context): an int32 index everywhere
U32 = 2**32  # token ids are u32 in Rust and in the shards: a vocabulary holds at most 2**32 ids
I64 = 2**63 - 1  # counts with no natural ceiling (steps, tokens per shard): what an int64 holds
MAX_THREADS = 1024  # the package's cap on worker threads for one call


def count(minimum: int = 0, maximum: int = I64) -> click.IntRange:
    """An integer option in [minimum, maximum]."""
    return click.IntRange(minimum, maximum)


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses NaN and infinities (which compare False with any bound,
    so a plain FloatRange lets NaN through)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def finite(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
) -> FiniteFloatRange:
    """A finite float option within the bounds (open where asked)."""
    return FiniteFloatRange(minimum, maximum, min_open=min_open, max_open=max_open)


THREADS = count(1, MAX_THREADS)  # --threads: worker threads of one call
SEED = count(0, 2**64 - 1)  # --seed: the random generators (torch, numpy, MinHash) take a u64
