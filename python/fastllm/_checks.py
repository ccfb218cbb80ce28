"""Argument checks: the one vocabulary every public function uses for bad arguments.

Wrong type -> TypeError naming the argument and the type it got; out of range -> ValueError naming
the argument, its value and the allowed range. `bool` is not accepted as an int (True is not a
count). Each check returns the value, so a call reads `n = check_int(n, "n", minimum=1)`.

>>> check_int(3, "num_threads", minimum=1)
3
>>> check_int(True, "num_threads", minimum=1)
Traceback (most recent call last):
...
TypeError: num_threads must be an int, not bool
>>> check_int(0, "num_threads", minimum=1)
Traceback (most recent call last):
...
ValueError: num_threads=0 is out of range: it must be >= 1
>>> check_float(1.5, "threshold", minimum=0.0, maximum=1.0)
Traceback (most recent call last):
...
ValueError: threshold=1.5 is out of range: it must be in [0.0, 1.0]
>>> check_choice("gpt5", "pattern", ("gpt2", "gpt4"))
Traceback (most recent call last):
...
ValueError: pattern must be one of 'gpt2', 'gpt4'; got 'gpt5'
>>> check_memory(10**18, "batch_size=10**9")
Traceback (most recent call last):
...
ValueError: batch_size=10**9 needs about 1000000000.0 GB of memory, more than the ... GB available
>>> check_vocab_pair(50257, 50304)  # GPT-2's tokenizer and a model padded to a multiple of 128
>>> check_vocab_pair(1000, 4096)
Traceback (most recent call last):
...
ValueError: the tokenizer has 1,000 ids (vocab_size) but the model embeds 4,096: not this model's ...
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Collection
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_memory",
    "check_optional_int",
    "check_texts",
    "check_type",
    "check_vocab_pair",
]

VOCAB_PADDING = 128  # a model may embed more ids than its tokenizer has, up to this multiple


def _is_bool(value: Any) -> bool:
    # numpy's bool_ and a bool tensor are not Python bools but are just as surely not counts.
    return isinstance(value, bool) or "bool" in str(getattr(value, "dtype", ""))


def _range_text(minimum: float | None, maximum: float | None, max_open: bool, min_open: bool) -> str:
    if minimum is not None and maximum is not None:
        left, right = "(" if min_open else "[", ")" if max_open else "]"
        return f"in {left}{minimum}, {maximum}{right}"
    if minimum is not None:
        return f"> {minimum}" if min_open else f">= {minimum}"
    return f"< {maximum}" if max_open else f"<= {maximum}"


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    max_open: bool = False,
) -> int:
    """`value` as an int in [minimum, maximum] (or [minimum, maximum) with `max_open`)."""
    if _is_bool(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not isinstance(value, int):
        # numpy integers are ints to a user; accept anything that is an exact integer index.
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    below = minimum is not None and value < minimum
    above = maximum is not None and (value >= maximum if max_open else value > maximum)
    if below or above:
        raise ValueError(
            f"{name}={value} is out of range: it must be {_range_text(minimum, maximum, max_open, False)}"
        )
    return int(value)


def check_optional_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    max_open: bool = False,
) -> int | None:
    """`None`, or `value` checked by `check_int`."""
    if value is None:
        return None
    return check_int(value, name, minimum=minimum, maximum=maximum, max_open=max_open)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    """`value` (an int or a float, not a bool) as a finite float within the bounds."""
    if _is_bool(value) or isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    try:
        value = float(value)
    except (TypeError, ValueError):  # e.g. a tensor of several elements
        raise TypeError(f"{name} must be a number, not {type(value).__name__}") from None
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} must be a finite number, got one beyond the float range") from None
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name}={value} must be a finite number")
    below = minimum is not None and (value <= minimum if min_open else value < minimum)
    above = maximum is not None and (value >= maximum if max_open else value > maximum)
    if below or above:
        raise ValueError(
            f"{name}={value} is out of range: it must be {_range_text(minimum, maximum, max_open, min_open)}"
        )
    return value


def check_bool(value: Any, name: str) -> bool:
    """`value` if it is a bool (not 0/1, which usually means a misplaced positional argument)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_type(value: Any, name: str, types: type | tuple[type, ...]) -> Any:
    """`value` if it is an instance of `types`, else a TypeError naming the expected type(s)."""
    if not isinstance(value, types):
        expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")
    return value


def check_texts(value: Any, name: str = "texts") -> list[str]:
    """`value` (any iterable of str, not a single str or bytes) as a list; a TypeError names the
    first item that is not a str."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a list of str, not a single {type(value).__name__}; wrap it in a list"
        )
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of str, not {type(value).__name__}") from None
    for i, t in enumerate(items):
        check_type(t, f"{name}[{i}]", str)
    return items


def check_choice(value: Any, name: str, choices: Collection[Any]) -> Any:
    """`value` if it is one of `choices` (TypeError if its type is not that of the choices)."""
    kinds = tuple({type(c) for c in choices})
    if (kinds and not isinstance(value, kinds)) or (_is_bool(value) and bool not in kinds):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, choices))}; got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def available_memory() -> int | None:
    """Bytes this process can still expect to get: the kernel's MemAvailable (Linux: free RAM plus
    what can be reclaimed without swapping; elsewhere the physical memory), capped by what is left
    of an address-space limit (`ulimit -v`); None where neither is known."""
    avail = None
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm", "rb") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            left = max(0, limit - used)
            avail = left if avail is None else min(avail, left)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return avail


def check_memory(nbytes: int, what: str) -> int:
    """`nbytes` if that much memory is available (`available_memory`), else a ValueError saying
    what (`what`, e.g. "batch_size=4096 x context=1024") needs how much: a size from an argument
    or a file is refused before anything is allocated, instead of a MemoryError deep inside, the
    OS killing the process, or (in Rust) an abort."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ValueError(
            f"{what} needs about {nbytes / 1e9:.1f} GB of memory, "
            f"more than the {avail / 1e9:.1f} GB available"
        )
    return nbytes


def check_vocab_pair(ids: int, model_vocab: int, source: str = "the tokenizer") -> None:
    """Refuse a tokenizer (or token data) of `ids` ids for a model that embeds `model_vocab` ids
    unless they belong together: every id must have an embedding (`ids <= model_vocab`), and the
    model may have more rows only as padding, up to `ids` rounded up to a multiple of 128 (GPT-2's
    50,257 ids in a 50,304-row model). Anything else is another model's tokenizer, whose ids
    would decode to garbage. The ValueError names both sizes."""
    padded = -(-ids // VOCAB_PADDING) * VOCAB_PADDING
    if ids > model_vocab:
        raise ValueError(
            f"{source} has {ids:,} ids (vocab_size) but the model embeds only {model_vocab:,}: "
            f"ids {model_vocab:,} and up have no embedding; not this model's tokenizer"
        )
    if model_vocab > padded:
        raise ValueError(
            f"{source} has {ids:,} ids (vocab_size) but the model embeds {model_vocab:,}: not this "
            f"model's tokenizer (a model may pad its vocabulary only up to the next multiple of "
            f"{VOCAB_PADDING}, here {padded:,})"
        )
