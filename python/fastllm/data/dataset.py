"""`TokenDataset`: the shards of one split, memory-mapped and read as one token stream.

Every shard of the split is mapped read-only (np.memmap: the OS pages in what a batch touches, so
a corpus larger than memory costs nothing to open) and the shards are concatenated logically: a
window may span two or more shards. A window of `context` inputs is `context + 1` consecutive ids;
the targets are the inputs shifted by one (next-token prediction, as nanoGPT's `get_batch`).

`ds[i]` is the i-th non-overlapping window; `ds.batches(...)` streams (B, T) batches, either
random windows (random start offsets, any position in the stream, like nanoGPT) or the
non-overlapping windows in order (for evaluation). Batch k of the global order is a pure function
of (seed, k), so rank r of world_size takes global batches r, r + world_size, ... (disjoint
streams whose union is the single-process order) and `start` resumes exactly, without replaying
the skipped batches.

>>> import tempfile, numpy as np
>>> from fastllm.data.shards import ShardWriter
>>> d = tempfile.mkdtemp()
>>> settings = dict(vocab_size=100, eot_id=99, tokenizer_sha256="0" * 64, shard_tokens=5)
>>> with ShardWriter(d, split="train", **settings) as w:
...     w.write(np.arange(12))
>>> ds = TokenDataset(d, context=3)
>>> len(ds), ds.tokens
(3, 12)
>>> x, y = ds[1]   # ids 3..6, spanning the first two shards
>>> x.tolist(), y.tolist()
([3, 4, 5], [4, 5, 6])
>>> xb, yb = next(ds.batches(2, shuffle=False))
>>> xb.shape, xb.dtype
(torch.Size([2, 3]), torch.int64)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fastllm._checks import check_bool, check_int, check_memory
from fastllm.data.shards import list_shards, load_shard, read_header


class TokenDataset:
    """Non-overlapping (input, target) windows of `context` ids over the shards of `split` in `dir`.

    Raises FileNotFoundError when `dir` holds no shard of `split` or the set is incomplete (a
    shard's number, header or .bin missing, or a file the folder's manifest lists: see
    `fastllm.data.shards.list_shards`; the set is loaded whole or not at all), TypeError for an
    argument of the wrong type, and ValueError for a context below 1 or not shorter than the split,
    for a damaged header, and for shards that disagree on dtype, vocabulary, end of text or
    tokenizer (made by different `fastllm tokenize` runs).
    """

    def __init__(self, dir: str | os.PathLike, context: int, split: str = "train"):
        self.dir = Path(dir)
        self.split = split
        self.context = check_int(context, "context", minimum=1)
        self.shards = list_shards(self.dir, split)
        if not self.shards:
            raise FileNotFoundError(
                f"no shards of split {split!r} in {str(self.dir)!r} (expected {split}_00000.json and .bin)"
            )
        headers = [read_header(p) for p in self.shards]
        first = headers[0]
        for path, h in zip(self.shards[1:], headers[1:]):
            for name in ("dtype", "vocab_size", "eot_id", "tokenizer_sha256"):
                if getattr(h, name) != getattr(first, name):
                    raise ValueError(
                        f"shards of split {split!r} disagree on {name}: {self.shards[0].name} has "
                        f"{getattr(first, name)!r}, {path.name} has {getattr(h, name)!r}"
                    )
        self.dtype = first.dtype
        self.vocab_size = first.vocab_size
        self.eot_id = first.eot_id
        self.tokenizer_sha256 = first.tokenizer_sha256
        self.documents = sum(h.documents for h in headers)
        maps = [load_shard(p, header=h) for p, h in zip(self.shards, headers)]
        self._maps = [m for m in maps if len(m)]  # empty shards hold nothing to index
        self._starts = np.cumsum(
            [0] + [len(m) for m in self._maps], dtype=np.int64
        )  # stream offset of each shard
        self.tokens = int(self._starts[-1])
        if self.context >= self.tokens:
            raise ValueError(
                f"context {self.context} must be smaller than the {self.tokens:,} tokens of split "
                f"{split!r} in {str(self.dir)!r}"
            )

    def __repr__(self) -> str:
        return (
            f"TokenDataset({str(self.dir)!r}, context={self.context}, split={self.split!r}: "
            f"{self.tokens:,} {self.dtype} tokens in {len(self.shards)} shard(s))"
        )

    def __len__(self) -> int:
        return (self.tokens - 1) // self.context

    def tokens_at(self, start: int, stop: int) -> np.ndarray:
        """ids[start:stop] of the concatenated stream (0 <= start <= stop <= tokens), as int64."""
        if not 0 <= start <= stop <= self.tokens:
            raise IndexError(f"token range [{start}, {stop}) is outside [0, {self.tokens}]")
        out = np.empty(stop - start, dtype=np.int64)
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos = start
        while pos < stop:
            base = int(self._starts[shard])
            end = min(stop, int(self._starts[shard + 1]))
            out[pos - start : end - start] = self._maps[shard][pos - base : end - base]
            pos, shard = end, shard + 1
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"window index must be an integer, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"window {i} is out of range for {n} windows")
        i = int(i) % n
        chunk = torch.from_numpy(self.tokens_at(i * self.context, (i + 1) * self.context + 1))
        return chunk[:-1], chunk[1:]  # (context,), (context,)

    def _global_batch(
        self, k: int, batch_size: int, seed: int, shuffle: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.context
        if shuffle:
            # Batch k depends on (seed, k) only: ranks and resumed runs draw it without the others.
            rng = np.random.default_rng([seed, k])
            starts = rng.integers(0, self.tokens - T, size=batch_size)  # start + T + 1 <= tokens
        else:
            starts = (k * batch_size + np.arange(batch_size)) * T
        rows = np.stack([self.tokens_at(int(s), int(s) + T + 1) for s in starts])  # (B, T + 1)
        rows_t = torch.from_numpy(rows)
        return rows_t[:, :-1], rows_t[:, 1:]  # (B, T), (B, T)

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        start: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches of shape (batch_size, context), int64, for this rank.

        shuffle=True: an endless stream of random windows (any start offset), deterministic per
        seed. shuffle=False: one pass over the non-overlapping windows in order, the last partial
        batch dropped, and the batch count cut to a multiple of world_size so every rank takes the
        same number of steps (DDP needs that). Rank r yields global batches r, r + world_size, ...;
        `start` skips this rank's first `start` batches (resume after `start` steps). A batch that
        cannot fit in the memory available is refused up front (ValueError naming batch_size).

        >>> import tempfile, numpy as np
        >>> from fastllm.data.shards import ShardWriter
        >>> d = tempfile.mkdtemp()
        >>> with ShardWriter(d, split="val", vocab_size=50, eot_id=0, tokenizer_sha256="") as w:
        ...     w.write(np.arange(9))
        >>> [x.tolist() for x, _ in TokenDataset(d, 2, split="val").batches(2, shuffle=False)]
        [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
        """
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        world_size = check_int(world_size, "world_size", minimum=1)
        rank = check_int(rank, "rank", minimum=0, maximum=world_size, max_open=True)
        start = check_int(start, "start", minimum=0)
        seed = check_int(seed, "seed", minimum=0)
        shuffle = check_bool(shuffle, "shuffle")
        # one batch: the (B, T + 1) int64 rows, gathered row by row and stacked (twice the rows)
        check_memory(
            batch_size * (16 * (self.context + 1) + 128), f"batch_size={batch_size} x context={self.context}"
        )
        return self._batches(batch_size, seed, rank, world_size, shuffle, start)

    def _batches(self, batch_size, seed, rank, world_size, shuffle, start):
        total = None if shuffle else (len(self) // batch_size) // world_size * world_size
        j = start
        while True:
            k = j * world_size + rank  # this rank's j-th batch in the global order
            if total is not None and k >= total:
                return
            yield self._global_batch(k, batch_size, seed, shuffle)
            j += 1


__all__ = ["TokenDataset"]
