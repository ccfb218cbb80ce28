"""The paged KV-cache block manager (`fastllm.generation.kvcache.BlockManager`) under random operations.

Oracles: (1) `RefManager`, a pure-Python model of the same semantics that names cached blocks by
their whole token prefix (a tuple) instead of a hash chain, so it is obviously collision-free, and
keeps the computed blocks as a set; every verb's answer (block ids, cached tokens, slots, copies,
None, errors) and the stats must match it exactly. (2) A simulated K/V memory whose slots hold the
whole prefix up to their token (as real K/V depend on it), written lazily as a scheduler does: a
prompt's cached tokens are taken as written, the rest is written (where the block table says) only
when the test marks it computed, and `append`'s copy-on-write copies are performed. Every live
sequence reads its written tokens back through its table and every computed block must hold its
prefix, so a leaked, double-freed, wrongly shared or prematurely evicted block, or one counted as
cached before its K/V exist, shows up as a wrong prefix. (3) The native `audit()`, which re-derives
ref counts and the free / evictable / held partition.
"""

from __future__ import annotations

import doctest
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fastllm.generation.kvcache
from fastllm.generation.kvcache import Allocation, BlockManager, KvStats, Slot


class RefManager:
    """The reference model: plain lists and dicts, one line per rule of the spec."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.n, self.bs = num_blocks, block_size
        self.rc = [0] * num_blocks
        self.free = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out 0, 1, 2, ...
        self.lru: OrderedDict[int, None] = OrderedDict()  # evictable cached blocks, oldest first
        self.cache: dict[tuple[int, ...], int] = {}  # whole prefix -> block holding its last block
        self.cached_as: dict[int, tuple[int, ...]] = {}
        self.computed: set[int] = set()  # cached blocks whose K/V the caller has written
        self.seqs: dict[int, tuple[list[int], list[int]]] = {}  # id -> (blocks, tokens)
        self.queries = self.hits = self.query_tokens = 0

    def available(self) -> int:
        return len(self.free) + len(self.lru)

    def take(self) -> int | None:
        if self.free:
            b = self.free.pop()
        elif self.lru:
            b, _ = self.lru.popitem(last=False)
            del self.cache[self.cached_as.pop(b)]
        else:
            return None
        self.computed.discard(b)  # fresh: whatever it held no longer counts
        self.rc[b] = 1
        return b

    def release(self, b: int) -> None:
        self.rc[b] -= 1
        if self.rc[b] == 0:
            if b in self.cached_as:
                self.lru[b] = None
            else:
                self.free.append(b)

    def share(self, b: int) -> None:
        if self.rc[b] == 0:
            del self.lru[b]
        self.rc[b] += 1

    def register(self, b: int, prefix: tuple[int, ...]) -> None:
        if prefix not in self.cache:  # the first block to hold a prefix keeps the name
            self.cache[prefix] = b
            self.cached_as[b] = prefix

    def lookup_prefix(self, toks: list[int]) -> int:
        i = 0
        while (i + 1) * self.bs <= len(toks) and self.cache.get(
            tuple(toks[: (i + 1) * self.bs])
        ) in self.computed:
            i += 1
        return i * self.bs

    def allocate(self, sid: int, toks: list[int]) -> Allocation | None:
        if sid in self.seqs or not toks:
            raise ValueError
        bs = self.bs
        reused: list[int] = []
        for i in range((len(toks) - 1) // bs):  # leave at least the last token to compute
            b = self.cache.get(tuple(toks[: (i + 1) * bs]))
            if b is None:
                break
            reused.append(b)
        cached = 0  # leading reused blocks that are computed
        while cached < len(reused) and reused[cached] in self.computed:
            cached += 1
        fresh = -(-len(toks) // bs) - len(reused)
        if fresh > self.available() - sum(self.rc[b] == 0 for b in reused):
            return None
        for b in reused:
            self.share(b)
        blocks = reused + [self.take() for _ in range(fresh)]  # type: ignore[misc]
        for i in range(len(reused), len(toks) // bs):
            self.register(blocks[i], tuple(toks[: (i + 1) * bs]))
        self.queries += 1
        self.query_tokens += len(toks)
        self.hits += cached * bs
        self.seqs[sid] = (blocks, list(toks))
        return Allocation(list(blocks), cached * bs)

    def append(self, sid: int, tok: int) -> Slot | None:
        blocks, toks = self.seqs[sid]
        offset = len(toks) % self.bs
        if offset and self.rc[blocks[-1]] == 1:
            slot = Slot(blocks[-1], offset, None)
        else:
            dst = self.take()
            if dst is None:
                return None
            if offset:  # copy-on-write of the shared, partly filled last block
                src = blocks[-1]
                self.release(src)
                blocks[-1] = dst
                slot = Slot(dst, offset, (src, dst))
            else:
                blocks.append(dst)
                slot = Slot(dst, 0, None)
        toks.append(tok)
        if len(toks) % self.bs == 0:
            self.register(slot.block, tuple(toks))
        return slot

    def fork(self, parent: int, child: int) -> None:
        blocks, toks = self.seqs[parent]
        if child in self.seqs:
            raise ValueError
        for b in blocks:
            self.share(b)
        self.seqs[child] = (list(blocks), list(toks))

    def mark_computed(self, sid: int, n: int) -> None:
        blocks, toks = self.seqs[sid]
        if n > len(toks):
            raise ValueError
        self.computed.update(b for b in blocks[: n // self.bs] if b in self.cached_as)

    def free_seq(self, sid: int) -> None:
        blocks, _ = self.seqs.pop(sid)
        for b in reversed(blocks):  # tail first: a prefix outlives its extensions on the LRU list
            self.release(b)

    def stats(self) -> dict[str, float]:
        used = sum(r > 0 for r in self.rc)
        return {
            "num_blocks": self.n,
            "block_size": self.bs,
            "used": used,
            "free": len(self.free),
            "cached_evictable": len(self.lru),
            "prefix_queries": self.queries,
            "prefix_hit_tokens": self.hits,
            "prefix_query_tokens": self.query_tokens,
            "hit_rate": self.hits / self.query_tokens if self.query_tokens else 0.0,
        }


SEQ = st.integers(0, 4)
TOKEN = st.integers(0, 1)
# A two-letter alphabet and shared stems make prefix hits and duplicate content common.
STEMS = [[], [0, 1, 0, 1, 1, 0], [1, 1, 1, 1]]
PROMPT = st.builds(
    lambda s, k, tail: STEMS[s][:k] + tail, st.integers(0, 2), st.integers(0, 6), st.lists(TOKEN, max_size=6)
)


def _same_error(real_call, ref_call):
    """Both raise the same exception type, or neither does; returns both results."""
    try:
        expected = ref_call()
    except (KeyError, ValueError) as e:
        with pytest.raises(type(e)):
            real_call()
        return None, None, True
    return real_call(), expected, False


class BlockManagerMachine(RuleBasedStateMachine):
    @initialize(num_blocks=st.integers(1, 10), block_size=st.integers(1, 4))
    def setup(self, num_blocks: int, block_size: int) -> None:
        self.m = BlockManager(num_blocks, block_size)
        self.ref = RefManager(num_blocks, block_size)
        self.mem: list[list[tuple[int, ...] | None]] = [[None] * block_size for _ in range(num_blocks)]
        self.written: dict[int, int] = {}  # live sequence -> leading tokens whose K/V are in memory

    @rule(sid=SEQ, toks=PROMPT)
    def allocate(self, sid: int, toks: list[int]) -> None:
        got, expected, raised = _same_error(
            lambda: self.m.allocate(sid, toks), lambda: self.ref.allocate(sid, toks)
        )
        if raised:
            return
        assert got == expected
        if got is not None:
            self.written[sid] = got.cached_tokens  # in memory already: checked by the invariant

    @rule(sid=SEQ, tok=TOKEN)
    def append(self, sid: int, tok: int) -> None:
        got, expected, raised = _same_error(
            lambda: self.m.append(sid, tok), lambda: self.ref.append(sid, tok)
        )
        if raised:
            return
        assert got == expected
        if got is not None:
            if got.copy is not None:
                src, dst = got.copy
                self.mem[dst][: got.offset] = self.mem[src][: got.offset]

    @rule(parent=SEQ, child=SEQ)
    def fork(self, parent: int, child: int) -> None:
        _, _, raised = _same_error(lambda: self.m.fork(parent, child), lambda: self.ref.fork(parent, child))
        if not raised:
            self.written[child] = self.written[parent]

    @rule(sid=SEQ)
    def free(self, sid: int) -> None:
        _, _, raised = _same_error(lambda: self.m.free(sid), lambda: self.ref.free_seq(sid))
        if not raised:
            del self.written[sid]

    @precondition(lambda self: self.ref.seqs)
    @rule(data=st.data())
    def free_live(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.ref.seqs)))
        self.m.free(sid)
        self.ref.free_seq(sid)
        del self.written[sid]

    @rule(sid=SEQ, back=st.integers(-1, 3))
    def mark_computed(self, sid: int, back: int) -> None:
        """Write the K/V of the first `len - back` tokens where the table says, then mark them
        (`back == -1`: one past the end, a ValueError)."""
        n = max(len(self.ref.seqs[sid][1]) - back, 0) if sid in self.ref.seqs else 1
        if sid in self.ref.seqs and n <= len(self.ref.seqs[sid][1]):
            blocks, toks = self.ref.seqs[sid]
            for pos in range(self.written[sid], n):
                self.mem[blocks[pos // self.ref.bs]][pos % self.ref.bs] = tuple(toks[: pos + 1])
            self.written[sid] = max(self.written[sid], n)
        _same_error(lambda: self.m.mark_computed(sid, n), lambda: self.ref.mark_computed(sid, n))

    @rule(toks=PROMPT)
    def lookup_prefix(self, toks: list[int]) -> None:
        assert self.m.lookup_prefix(toks) == self.ref.lookup_prefix(toks)

    @invariant()
    def matches_the_model_and_reads_back(self) -> None:
        self.m._core.audit()
        assert self.m.stats().as_dict() == self.ref.stats()
        bs = self.ref.bs
        for sid, (blocks, toks) in self.ref.seqs.items():
            assert self.m.block_table(sid) == blocks
            assert self.m.num_tokens(sid) == len(toks)
            n = self.written[sid]
            assert [self.mem[blocks[p // bs]][p % bs] for p in range(n)] == [
                tuple(toks[: p + 1]) for p in range(n)
            ]
        for b in range(self.ref.n):
            assert self.m._core.ref_count(b) == self.ref.rc[b]
            assert self.m.is_computed(b) == (b in self.ref.computed)
        for b in self.ref.computed:  # a computed block holds the K/V of its whole prefix
            prefix = self.ref.cached_as[b]
            assert self.mem[b] == [prefix[: len(prefix) - bs + j + 1] for j in range(bs)]
        assert self.m.can_allocate(self.ref.available() * bs)
        assert not self.m.can_allocate(self.ref.available() * bs + 1)

    def teardown(self) -> None:
        if not hasattr(self, "ref"):
            return
        for sid in list(self.ref.seqs):
            self.m.free(sid)
        s = self.m.stats()
        assert s.used == 0 and s.free + s.cached_evictable == s.num_blocks


TestBlockManagerMachine = BlockManagerMachine.TestCase


def test_prefix_reuse_and_lru_eviction_exact():
    m = BlockManager(4, 2)
    assert m.allocate(1, [1, 2, 3, 4]) == Allocation([0, 1], 0)
    assert m.allocate(2, [5, 6, 7, 8]) == Allocation([2, 3], 0)
    assert m.lookup_prefix([1, 2, 3, 4]) == 0  # cached, but their K/V are not written yet
    assert not m.is_computed(0) and not m.is_computed(99)
    m.mark_computed(1, 4)
    assert m.is_computed(0) and m.is_computed(1) and not m.is_computed(2)
    m.mark_computed(2, 4)
    m.free(1)
    m.free(2)  # LRU list: 1, 0, 3, 2 (each sequence tail first)
    assert m.allocate(3, [9, 9]).blocks == [1]
    assert m.lookup_prefix([1, 2, 3, 4]) == 2
    assert m.allocate(4, [1, 2, 3, 4, 0]) == Allocation([0, 3, 2], 2)
    assert m.lookup_prefix([5, 6, 7, 8]) == 0
    assert m.lookup_prefix([1, 2, 3, 4]) == 2  # block 3 is taken fresh: not computed
    s = m.stats()
    assert (s.used, s.free, s.cached_evictable) == (4, 0, 0)
    assert (s.prefix_hit_tokens, s.prefix_query_tokens) == (2, 15)


def test_out_of_blocks_is_none_and_changes_nothing():
    m = BlockManager(2, 2)
    assert m.allocate(1, [1, 2, 3]) is not None
    before = (m.stats(), m.block_table(1))
    assert m.allocate(2, [7]) is None
    m.fork(1, 2)
    assert m.append(2, 9) is None  # copy-on-write needs a block too
    assert (m.stats(), m.block_table(1), m.block_table(2)) == (before[0], before[1], before[1])
    m.free(1)
    assert m.append(2, 9) == Slot(1, 1, None)  # sole holder now: in place


def test_bad_sizes():
    for args, exc, msg in [
        ((0, 4), ValueError, r"num_blocks=0"),
        ((4, 0), ValueError, r"block_size=0"),
        ((-1, 4), ValueError, r"num_blocks=-1"),
        ((4, -2), ValueError, r"block_size=-2"),
        ((2**32, 1), ValueError, r"num_blocks=4294967296"),
        (("4", 4), TypeError, r"num_blocks must be an int, not str"),
        ((4, 2.0), TypeError, r"block_size must be an int, not float"),
        ((True, 4), TypeError, r"num_blocks must be an int, not bool"),
    ]:
        with pytest.raises(exc, match=msg):
            BlockManager(*args)
    with pytest.raises(ValueError, match="num_blocks must be >= 1, got 0"):
        fastllm.generation.kvcache._core.BlockManager(num_blocks=0, block_size=1, prefix_caching=True)
    with pytest.raises(TypeError):  # keyword-only: the two sizes cannot be swapped by position
        fastllm.generation.kvcache._core.BlockManager(4, 2, True)  # type: ignore[misc]
    with pytest.raises(TypeError, match="enable_prefix_caching must be a bool, not int"):
        BlockManager(4, 2, enable_prefix_caching=1)


def test_prefix_caching_off_gives_fresh_blocks():
    m = BlockManager(8, 2, enable_prefix_caching=False)
    assert m.allocate(1, [1, 2, 3, 4, 5]) == Allocation([0, 1, 2], 0)
    assert m.lookup_prefix([1, 2, 3, 4, 5]) == 0
    assert m.allocate(2, [1, 2, 3, 4, 5]) == Allocation([3, 4, 5], 0)
    m.mark_computed(1, 5)
    assert m.lookup_prefix([1, 2, 3, 4, 5]) == 0
    assert m.stats().prefix_hit_tokens == 0


def test_unknown_and_duplicate_seq_ids():
    m = BlockManager(4, 2)
    for call in (
        lambda: m.append(7, 1),
        lambda: m.free(7),
        lambda: m.fork(7, 8),
        lambda: m.block_table(7),
        lambda: m.num_tokens(7),
        lambda: m.mark_computed(7, 0),
    ):
        with pytest.raises(KeyError, match="unknown seq id 7"):
            call()
    m.allocate(3, [1])
    with pytest.raises(ValueError, match="seq id 3 already allocated"):
        m.allocate(3, [1])
    with pytest.raises(ValueError, match="seq id 3 already allocated"):
        m.fork(3, 3)
    with pytest.raises(ValueError, match="at least one token"):
        m.allocate(4, [])
    m.free(3)
    with pytest.raises(KeyError, match="unknown seq id 3"):
        m.free(3)


def test_bad_token_and_seq_values_name_the_offender():
    m = BlockManager(4, 2)
    cases = [
        (lambda: m.allocate(1, [1, "a"]), TypeError, r"token_ids\[1\] must be an int, not str"),
        (lambda: m.allocate(1, [1.5]), TypeError, r"token_ids\[0\] must be an int, not float"),
        (lambda: m.allocate(1, "abc"), TypeError, r"token_ids must be a sequence of ints, not str"),
        (lambda: m.allocate(1, 5), TypeError, r"not int"),
        (lambda: m.allocate(1, [0, 2**32]), ValueError, r"token_ids\[1\]=4294967296 is out of range"),
        (lambda: m.allocate(1, [-1]), ValueError, r"token_ids\[0\]=-1 is out of range"),
        (lambda: m.lookup_prefix([1, -3]), ValueError, r"token_ids\[1\]=-3"),
        (lambda: m.allocate(-1, [1]), ValueError, r"seq_id=-1 is out of range"),
        (lambda: m.allocate(2**64, [1]), ValueError, r"seq_id=18446744073709551616"),
        (lambda: m.allocate("s", [1]), TypeError, r"seq_id must be an int"),
        (lambda: m.fork(0, -2), ValueError, r"child=-2"),
        (lambda: m.can_allocate(-1), ValueError, r"n_tokens=-1"),
    ]
    for call, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call()
    assert m.stats().used == 0 and m.stats().prefix_queries == 0
    m.allocate(1, np.array([5, 6, 7], dtype=np.uint32))
    assert m.num_tokens(1) == 3
    for args, exc, msg in [
        ((1, -1), ValueError, r"num_tokens=-1 is out of range"),
        ((1, "3"), TypeError, r"num_tokens must be an int, not str"),
        ((-1, 3), ValueError, r"seq_id=-1 is out of range"),
        ((1, 4), ValueError, r"seq id 1: num_tokens=4 is more than the sequence's 3 tokens"),
    ]:
        with pytest.raises(exc, match=msg):
            m.mark_computed(*args)  # type: ignore[arg-type]
    for tok, exc in [(-1, ValueError), (2**32, ValueError), ("x", TypeError), (None, TypeError)]:
        with pytest.raises(exc, match="token_id"):
            m.append(1, tok)  # type: ignore[arg-type]
    assert m.num_tokens(1) == 3
    assert m.allocate(2, [2**32 - 1]) is not None


def test_kv_stats_is_a_frozen_named_record():
    m = BlockManager(num_blocks=4, block_size=2)
    m.allocate(1, [1, 2, 3])
    m.mark_computed(1, 3)
    m.allocate(2, [1, 2, 4])
    s = m.stats()
    assert isinstance(s, KvStats) and KvStats is fastllm.generation.kvcache._core.KvStats
    assert (s.num_blocks, s.block_size, s.used, s.free, s.cached_evictable) == (4, 2, 3, 1, 0)
    assert (s.prefix_queries, s.prefix_hit_tokens, s.prefix_query_tokens, s.hit_rate) == (2, 2, 6, 2 / 6)
    assert list(s.as_dict()) == [
        "num_blocks",
        "block_size",
        "used",
        "free",
        "cached_evictable",
        "prefix_queries",
        "prefix_hit_tokens",
        "prefix_query_tokens",
        "hit_rate",
    ]
    assert repr(s) == (
        "KvStats(num_blocks=4, block_size=2, used=3, free=1, cached_evictable=0, prefix_queries=2, "
        f"prefix_hit_tokens=2, prefix_query_tokens=6, hit_rate={2 / 6!r})"
    )
    with pytest.raises(AttributeError):
        s.used = 0  # type: ignore[misc]
    assert s == m.stats() and s != BlockManager(4, 2).stats()


def test_repr_properties_and_docstring_examples():
    m = BlockManager(num_blocks=3, block_size=16)
    assert (m.num_blocks, m.block_size) == (3, 16)
    assert repr(m) == "BlockManager(num_blocks=3, block_size=16, used=0)"
    result = doctest.testmod(fastllm.generation.kvcache, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
