"""BlockManager: the control plane of a paged KV cache (vLLM-style), run in Rust.

K/V memory is cut into `num_blocks` blocks of `block_size` token slots; each sequence gets a block
table (logical block i -> physical block id). This class only decides which block ids a sequence
uses and when the caller must copy one; the K/V tensors and the copies stay with the caller
(PagedAttention, Kwon et al. 2023). Six verbs:

- `allocate(seq_id, token_ids)`: a prompt's table. Leading full blocks already in the prefix cache
  are shared; `cached_tokens` says how many prompt tokens need no prefill: the leading shared
  blocks whose K/V are computed. The last prompt token is always left to compute, since the model
  must run it to get logits.
- `append(seq_id, token_id)`: the slot for one new token; a new block when the last is full, and
  copy-on-write (`Slot.copy = (src, dst)`: copy src's first `offset` slots to dst) when the last
  block is partly filled and shared with a fork.
- `fork(parent, child)`: the child shares every block (beam search, parallel sampling).
- `free(seq_id)`: cached blocks nobody holds stay reusable until evicted, least recently used first.
- `mark_computed(seq_id, num_tokens)`: the caller has written the K/V of the first `num_tokens`
  tokens; the full blocks among them count as cached for later prompts from now on.
- `lookup_prefix(token_ids)`: how many leading tokens the cache holds computed, without side effects.

Full blocks are named by a hash chain over their token ids (the prefix up to and including the
block), with the tokens compared on every hit, and blocks filled by `append` are cached too, so
generated text is shareable. A full block joins the prefix cache as soon as it is allocated (a
second prompt with the same prefix shares it rather than taking a copy), but it only counts as
cached once marked computed, so the manager is the one record of which cached K/V are valid: a
block taken fresh or evicted is not computed. Running out of blocks returns `None` and changes
nothing: the caller preempts a sequence and retries.

>>> m = BlockManager(num_blocks=8, block_size=4)
>>> m.allocate(0, [1, 2, 3, 4, 5, 6])
Allocation(blocks=[0, 1], cached_tokens=0)
>>> m.allocate(1, [1, 2, 3, 4, 9])  # block 0 is shared, but its K/V are not written yet
Allocation(blocks=[0, 2], cached_tokens=0)
>>> m.mark_computed(0, 6)  # seq 0's prefill wrote its 6 tokens: full block 0 is computed
>>> m.allocate(2, [1, 2, 3, 4, 8])
Allocation(blocks=[0, 3], cached_tokens=4)
>>> m.fork(0, 3)
>>> m.append(3, 7)  # the shared, partly filled block 1 is copied before the write
Slot(block=4, offset=2, copy=(1, 4))
>>> m.block_table(3), m.num_tokens(3)
([0, 4], 7)
>>> for seq_id in (0, 1, 2, 3):
...     m.free(seq_id)
>>> s = m.stats()
>>> s.used, s.prefix_hit_tokens, s.hit_rate
(0, 4, 0.25)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from fastllm import _core
from fastllm._checks import check_bool, check_int
from fastllm._core import KvStats  # frozen, named counters: `s.used`, `s.hit_rate`

__all__ = ["Allocation", "BlockManager", "KvStats", "Slot"]

_U32 = 2**32
_U64 = 2**64


class Allocation(NamedTuple):
    """A new sequence's block table, and how many leading prompt tokens those blocks already hold
    (compute K/V for `token_ids[cached_tokens:]` only)."""

    blocks: list[int]
    cached_tokens: int


class Slot(NamedTuple):
    """Where an appended token's K/V goes: slot `offset` of `block`. When `copy` is `(src, dst)`,
    first copy slots `0..offset` of block `src` into block `dst` (`dst == block`)."""

    block: int
    offset: int
    copy: tuple[int, int] | None


def _seq(seq_id: object, name: str = "seq_id") -> int:
    return check_int(seq_id, name, minimum=0, maximum=_U64, max_open=True)


def _bad_tokens(token_ids: object) -> Exception:
    """The error for token ids the native call rejected, naming the first offending one."""
    if isinstance(token_ids, (str, bytes)):
        return TypeError(f"token_ids must be a sequence of ints, not {type(token_ids).__name__}")
    try:
        items = list(token_ids)  # type: ignore[call-overload]
    except TypeError:
        return TypeError(f"token_ids must be a sequence of ints, not {type(token_ids).__name__}")
    for i, t in enumerate(items):
        try:
            check_int(t, f"token_ids[{i}]", minimum=0, maximum=_U32, max_open=True)
        except (TypeError, ValueError) as e:
            return e
    return TypeError("token_ids must be a sequence of ints")


class BlockManager:
    """Paged KV-cache block manager over `num_blocks` blocks of `block_size` token slots.

    Sequence ids are caller-chosen ints in [0, 2**64); token ids are ints in [0, 2**32). An unknown
    sequence id raises KeyError; a duplicate one, an empty prompt or an out-of-range value raises
    ValueError. Thread-safe (calls are serialised). With `enable_prefix_caching=False` every
    prompt gets fresh blocks (nothing is reused, `lookup_prefix` answers 0).
    """

    __slots__ = ("_core",)

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True) -> None:
        check_int(num_blocks, "num_blocks", minimum=1, maximum=_U32, max_open=True)
        check_int(block_size, "block_size", minimum=1, maximum=_U64, max_open=True)
        check_bool(enable_prefix_caching, "enable_prefix_caching")
        self._core = _core.BlockManager(
            num_blocks=num_blocks, block_size=block_size, prefix_caching=enable_prefix_caching
        )

    def __repr__(self) -> str:
        s = self.stats()
        return f"BlockManager(num_blocks={s.num_blocks}, block_size={s.block_size}, used={s.used})"

    @property
    def num_blocks(self) -> int:
        return self.stats().num_blocks

    @property
    def block_size(self) -> int:
        return self.stats().block_size

    def allocate(self, seq_id: int, token_ids: Sequence[int]) -> Allocation | None:
        """Blocks for a new sequence's prompt; `None` (nothing changed) when they do not fit."""
        _seq(seq_id)
        try:
            out = self._core.allocate(seq_id, token_ids)
        except (OverflowError, TypeError):
            raise _bad_tokens(token_ids) from None
        return None if out is None else Allocation(*out)

    def append(self, seq_id: int, token_id: int) -> Slot | None:
        """The slot for one more token of `seq_id`; `None` (nothing changed) when out of blocks."""
        _seq(seq_id)
        check_int(token_id, "token_id", minimum=0, maximum=_U32, max_open=True)
        out = self._core.append(seq_id, token_id)
        return None if out is None else Slot(*out)

    def fork(self, parent: int, child: int) -> None:
        """Makes `child` a copy of `parent` sharing all its blocks (copy-on-write later)."""
        self._core.fork(_seq(parent, "parent"), _seq(child, "child"))

    def free(self, seq_id: int) -> None:
        """Drops `seq_id`; its cached blocks stay reusable until evicted (LRU)."""
        self._core.free(_seq(seq_id))

    def mark_computed(self, seq_id: int, num_tokens: int) -> None:
        """Records that the K/V of the first `num_tokens` tokens of `seq_id` are written: every full
        block among them counts as cached for later prompts. Idempotent, never un-marks; a partly
        filled block waits for a later call. ValueError when `num_tokens` exceeds the sequence."""
        _seq(seq_id)
        check_int(num_tokens, "num_tokens", minimum=0, maximum=_U64, max_open=True)
        self._core.mark_computed(seq_id, num_tokens)

    def lookup_prefix(self, token_ids: Sequence[int]) -> int:
        """How many leading tokens of `token_ids` the prefix cache holds computed (whole blocks)."""
        try:
            return self._core.lookup_prefix(token_ids)
        except (OverflowError, TypeError):
            raise _bad_tokens(token_ids) from None

    def block_table(self, seq_id: int) -> list[int]:
        """Physical block ids of `seq_id`, in logical order."""
        return self._core.block_table(_seq(seq_id))

    def num_tokens(self, seq_id: int) -> int:
        """Tokens of `seq_id` so far, prompt and appended."""
        return self._core.num_tokens(_seq(seq_id))

    def is_computed(self, block: int) -> bool:
        """Whether physical `block` is in the prefix cache with its K/V written (`mark_computed`);
        a block handed out again is not, until it is marked anew."""
        return self._core.is_computed(check_int(block, "block", minimum=0, maximum=_U32, max_open=True))

    def can_allocate(self, n_tokens: int) -> bool:
        """Whether a prompt of `n_tokens` fits now, counting no prefix hits."""
        check_int(n_tokens, "n_tokens", minimum=0, maximum=_U64, max_open=True)
        return self._core.can_allocate(n_tokens)

    def stats(self) -> KvStats:
        """Block occupancy and prefix-cache counters (`KvStats`: `used + free + cached_evictable ==
        num_blocks`; `hit_rate` is `prefix_hit_tokens / prefix_query_tokens`, where a hit is a
        prompt token `allocate` reported as cached)."""
        return self._core.stats()
