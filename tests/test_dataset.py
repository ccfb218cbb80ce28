"""`TokenDataset`: windows and batches over memory-mapped shards.

Oracle: the raw .bin files concatenated with `np.fromfile` (the token stream, read without the
dataset), sliced by hand; every window, including those that span shards, must equal its slice.
Batches are checked against `ds[i]` (sequential) or against the set of all (T + 1)-id slices of
the stream (random windows), and rank streams against the single-process stream.
"""

from __future__ import annotations

import doctest
import itertools
import json

import numpy as np
import pytest
import torch

import fastllm.data.dataset
from fastllm._io import MANIFEST, atomic_folder
from fastllm.data.dataset import TokenDataset
from fastllm.data.shards import ShardWriter, list_shards

N, VOCAB, SHARD = 1003, 500, 97  # a prime shard size: windows of every length cross shard borders


def _write(directory, ids, *, split="train", vocab_size=VOCAB, shard_tokens=SHARD, sha="ab"):
    with ShardWriter(
        directory,
        split=split,
        vocab_size=vocab_size,
        eot_id=0,
        tokenizer_sha256=sha,
        shard_tokens=shard_tokens,
    ) as w:
        w.write(ids)


@pytest.fixture
def shards(tmp_path):
    ids = np.random.default_rng(0).integers(0, VOCAB, size=N)
    _write(tmp_path, ids)
    return tmp_path


def _stream(directory, split="train") -> np.ndarray:
    """The oracle: the raw .bin files of the split, concatenated."""
    return np.concatenate(
        [np.fromfile(h.with_suffix(".bin"), dtype="<u2") for h in list_shards(directory, split)]
    ).astype(np.int64)


@pytest.mark.parametrize("context", [1, 5, 96, 97, 98, 500, 1002])
def test_windows_equal_slices_of_the_stream(shards, context):
    raw = _stream(shards)
    assert len(list_shards(shards, "train")) == 11
    ds = TokenDataset(shards, context)
    assert ds.tokens == N and len(ds) == (N - 1) // context
    spanning = 0
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (context,)
        np.testing.assert_array_equal(x.numpy(), raw[i * context : (i + 1) * context])
        np.testing.assert_array_equal(y.numpy(), raw[i * context + 1 : (i + 1) * context + 1])
        spanning += (i * context) // SHARD != ((i + 1) * context) // SHARD
    assert spanning > 0  # the windows that cross a shard border were checked too
    x, y = ds[-1]
    np.testing.assert_array_equal(y.numpy(), raw[len(ds) * context - context + 1 : len(ds) * context + 1])
    with pytest.raises(IndexError, match=f"window {len(ds)} .* {len(ds)} windows"):
        ds[len(ds)]


def test_sequential_batches_are_the_windows_in_order(shards):
    ds = TokenDataset(shards, 8)
    batches = list(ds.batches(5, shuffle=False))
    assert len(batches) == len(ds) // 5
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == y.shape == (len(batches) * 5, 8) and x.dtype == torch.int64
    for i in range(len(x)):
        assert torch.equal(x[i], ds[i][0]) and torch.equal(y[i], ds[i][1])


def test_random_batches_are_stream_slices_and_deterministic_per_seed(shards):
    raw = _stream(shards)
    T = 16
    slices = np.lib.stride_tricks.sliding_window_view(raw, T + 1)  # every (T + 1)-id window
    ds = TokenDataset(shards, T)
    first = list(itertools.islice(ds.batches(4, seed=1), 6))
    for x, y in first:
        assert x.shape == y.shape == (4, T) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        rows = torch.cat([x, y[:, -1:]], dim=1).numpy()
        assert all((slices == row).all(axis=1).any() for row in rows)
    again = list(itertools.islice(ds.batches(4, seed=1), 6))
    other = list(itertools.islice(ds.batches(4, seed=2), 6))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    starts = {
        int(np.flatnonzero((slices == row).all(axis=1))[0])
        for x, y in first
        for row in torch.cat([x, y[:, -1:]], 1).numpy()
    }
    assert len(starts) > 12  # random offsets, not a handful of fixed windows
    assert any(s % T for s in starts)  # and not only the non-overlapping ones


def _equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_are_disjoint_and_interleave_to_the_single_process_order(shards, shuffle):
    ds = TokenDataset(shards, 7)
    world = 3
    take = None if not shuffle else 5
    per_rank = [
        list(itertools.islice(ds.batches(4, seed=3, rank=r, world_size=world, shuffle=shuffle), take))
        for r in range(world)
    ]
    lengths = {len(b) for b in per_rank}
    assert len(lengths) == 1  # every rank takes the same number of steps
    m = lengths.pop()
    single = list(itertools.islice(ds.batches(4, seed=3, shuffle=shuffle), m * world + 1))
    interleaved = [per_rank[k % world][k // world] for k in range(m * world)]
    assert _equal(interleaved, single[: m * world])
    keys = [tuple(x.flatten().tolist()) for b in per_rank for x, _ in b]
    assert len(set(keys)) == len(keys)  # no batch is given to two ranks
    if not shuffle:
        assert len(single) - m * world < world  # at most world_size - 1 batches dropped for equal steps
        assert m == (len(ds) // 4) // world


@pytest.mark.parametrize("shuffle", [False, True])
def test_start_skips_exactly(shards, shuffle):
    ds = TokenDataset(shards, 6)
    for rank, world in ((0, 1), (1, 2)):
        full = list(itertools.islice(ds.batches(3, seed=4, rank=rank, world_size=world, shuffle=shuffle), 12))
        resumed = list(
            itertools.islice(ds.batches(3, seed=4, rank=rank, world_size=world, shuffle=shuffle, start=5), 7)
        )
        assert _equal(resumed, full[5:12])


def test_bad_arguments_name_the_value(shards, tmp_path):
    """The shared vocabulary (`fastllm._checks`): wrong type TypeError, out of range ValueError,
    each naming the argument and the value."""
    for context in (0, -3):
        with pytest.raises(ValueError, match=f"context={context} is out of range: it must be >= 1"):
            TokenDataset(shards, context)
    for context in ("8", 8.0, True, None):
        with pytest.raises(TypeError, match=f"context must be an int, not {type(context).__name__}"):
            TokenDataset(shards, context)
    assert TokenDataset(shards, np.int64(8)).context == 8  # numpy integers are ints
    for context in (N, N + 50):
        with pytest.raises(ValueError, match=f"context {context} .* {N:,} tokens"):
            TokenDataset(shards, context)
    with pytest.raises(FileNotFoundError, match=f"'val' in '{shards}'"):
        TokenDataset(shards, 8, split="val")
    with pytest.raises(FileNotFoundError, match="'train'"):
        TokenDataset(tmp_path / "nowhere", 8)
    with pytest.raises(TypeError, match="split must be str, not int"):
        TokenDataset(shards, 8, split=1)
    ds = TokenDataset(shards, 8)
    for kwargs, message in (
        ({"batch_size": 0}, "batch_size=0 is out of range"),
        ({"batch_size": 2, "world_size": 0}, "world_size=0 is out of range"),
        ({"batch_size": 2, "rank": 2, "world_size": 2}, r"rank=2 is out of range: it must be in \[0, 2\)"),
        ({"batch_size": 2, "rank": -1}, r"rank=-1 is out of range: it must be in \[0, 1\)"),
        ({"batch_size": 2, "start": -1}, "start=-1 is out of range: it must be >= 0"),
        ({"batch_size": 2, "seed": -1}, "seed=-1 is out of range: it must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            ds.batches(**kwargs)
    for kwargs, message in (
        ({"batch_size": 2.0}, "batch_size must be an int, not float"),
        ({"batch_size": 2, "seed": "0"}, "seed must be an int, not str"),
        ({"batch_size": 2, "rank": 0.0}, "rank must be an int, not float"),
        ({"batch_size": 2, "shuffle": 1}, "shuffle must be a bool, not int"),
    ):
        with pytest.raises(TypeError, match=message):
            ds.batches(**kwargs)


def test_mixed_shards_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, np.arange(200) % 300, shard_tokens=100)
    _write(b, np.arange(200) + 65530, vocab_size=70000, shard_tokens=100)  # uint32 ids
    (a / "train_00001.bin").write_bytes((b / "train_00001.bin").read_bytes())
    (a / "train_00001.json").write_bytes((b / "train_00001.json").read_bytes())
    with pytest.raises(
        ValueError, match="disagree on dtype: train_00000.json has 'uint16', train_00001.json has 'uint32'"
    ):
        TokenDataset(a, 8)
    c = tmp_path / "c"
    _write(c, np.arange(200) % 300, shard_tokens=100)
    header = c / "train_00001.json"
    header.write_text(json.dumps({**json.loads(header.read_text()), "tokenizer_sha256": "cd"}))
    with pytest.raises(ValueError, match="disagree on tokenizer_sha256: .* 'ab', .* 'cd'"):
        TokenDataset(c, 8)


def test_uint32_shards_and_separate_splits(tmp_path):
    ids = np.arange(300, dtype=np.int64) * 233 + 1  # ids up to ~70,000
    _write(tmp_path, ids, vocab_size=70000, shard_tokens=64)
    _write(tmp_path, ids[:50], split="val", vocab_size=70000)
    train, val = TokenDataset(tmp_path, 10), TokenDataset(tmp_path, 10, split="val")
    assert (train.dtype, train.tokens, val.tokens) == ("uint32", 300, 50)
    np.testing.assert_array_equal(train[6][0].numpy(), ids[60:70])  # spans shards 0 and 1
    assert len(val) == 4  # (50 - 1) // 10
    np.testing.assert_array_equal(val[3][1].numpy(), ids[31:41])


def test_docstring_examples():
    result = doctest.testmod(fastllm.data.dataset, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_truncated_or_mistyped_shards_are_refused(tmp_path):
    """A shard cut short, a header whose dtype disagrees with the data, an unknown dtype: each named."""
    with ShardWriter(tmp_path, split="train", vocab_size=VOCAB, eot_id=0, tokenizer_sha256="") as w:
        w.write(np.arange(100) % VOCAB)
    header = list_shards(tmp_path, "train")[0]
    data = header.with_suffix(".bin")
    full = data.read_bytes()
    data.write_bytes(full[:-3])  # truncated
    with pytest.raises(
        ValueError, match=r"size is 197 bytes but its header says 100 uint16 ids = 200 bytes \(truncated"
    ):
        TokenDataset(tmp_path, 8)
    data.write_bytes(full)
    meta = json.loads(header.read_text())
    header.write_text(json.dumps({**meta, "dtype": "uint32"}))  # the wrong dtype for these bytes
    with pytest.raises(ValueError, match="100 uint32 ids = 400 bytes"):
        TokenDataset(tmp_path, 8)
    header.write_text(json.dumps({**meta, "dtype": "float32"}))
    with pytest.raises(ValueError, match="dtype 'float32' is not one of"):
        TokenDataset(tmp_path, 8)


# ---- a shard set is complete or refused (a hostile or damaged folder) ------------------------------


def _tokenize_output(directory):
    """Ten shards of 100 ids in a folder as `fastllm tokenize` leaves it: with its manifest."""
    with atomic_folder(directory, command="tokenize") as tmp:
        _write(tmp, np.arange(1000) % VOCAB, shard_tokens=100)


def _drop(*names):
    return lambda d: [(d / n).unlink() for n in names]


def _header(**change):
    def edit(d):
        h = d / "train_00003.json"
        h.write_text(json.dumps({**json.loads(h.read_text()), **change}))

    return edit


def _copy(src, dst):
    return lambda d: (d / dst).write_bytes((d / src).read_bytes())


def _unlisted(d):
    (d / MANIFEST).unlink()  # a folder without a manifest: no gap, so it loads...
    _copy("train_00009.json", "train_00010.json")(d)  # ...but a header without its .bin does not


INCOMPLETE = [
    # (damage, exception, message): the set is refused whole, naming what is missing or foreign
    (
        _drop("train_00004.json", "train_00004.bin"),
        FileNotFoundError,
        r"train_00004\.(bin|json) is missing \(the folder's manifest lists 20 files",
    ),
    (_drop("train_00009.json", "train_00009.bin"), FileNotFoundError, r"train_00009\.(bin|json) is missing"),
    (_drop("train_00004.json"), FileNotFoundError, r"train_00004\.json is missing"),
    (_drop("train_00004.bin"), FileNotFoundError, r"train_00004\.bin is missing"),
    (
        lambda d: [_drop(MANIFEST)(d), _drop("train_00004.json", "train_00004.bin")(d)],
        FileNotFoundError,
        r"incomplete: train_00004\.json is missing \(the set runs to train_00009\)",
    ),
    (
        lambda d: [_drop(MANIFEST)(d), _drop("train_00002.json")(d)],
        FileNotFoundError,
        r"train_00002\.json is missing",
    ),
    (
        lambda d: [_drop(MANIFEST)(d), _drop("train_00000.bin")(d)],
        FileNotFoundError,
        r"train_00000\.bin is missing",
    ),
    (_unlisted, FileNotFoundError, r"train_00010\.bin is missing"),
    (
        lambda d: [
            _copy("train_00009.json", "train_00010.json")(d),
            _copy("train_00009.bin", "train_00010.bin")(d),
        ],
        ValueError,
        r"train_00010\.(bin|json): not part of the shard set fastllm tokenize wrote",
    ),
    (
        lambda d: [_drop(MANIFEST)(d), _copy("train_00001.json", "train_000001.json")(d)],
        ValueError,
        r"two shards numbered 1: train_0{4,5}1\.json, train_0{4,5}1\.json",
    ),
    (
        lambda d: (d / MANIFEST).write_text("{"),
        ValueError,
        r"\.fastllm-output\.json: not a fastllm output manifest",
    ),
    (
        _header(vocab_size=2**32, dtype="uint32"),
        ValueError,
        r"train_00003\.json: vocab_size 4294967296 is out of range",
    ),
    (_header(vocab_size=2**31 + 1, dtype="uint32"), ValueError, r"vocab_size 2147483649 is out of range"),
    (_header(documents=101), ValueError, r"documents 101 is more than the count of 100 ids"),
    (_header(count=2**62), ValueError, r"header says 4,611,686,018,427,387,904 uint16 ids"),
]


@pytest.mark.parametrize("damage,error,message", INCOMPLETE, ids=[str(i) for i in range(len(INCOMPLETE))])
def test_an_incomplete_or_damaged_set_is_refused_whole(tmp_path, damage, error, message):
    _tokenize_output(tmp_path / "out")
    assert TokenDataset(tmp_path / "out", 8).tokens == 1000
    damage(tmp_path / "out")
    with pytest.raises(error, match=message):
        TokenDataset(tmp_path / "out", 8)


def test_a_batch_that_cannot_fit_is_refused(shards):
    ds = TokenDataset(shards, 8)
    for shuffle in (True, False):
        with pytest.raises(
            ValueError, match=r"^batch_size=1000000000 x context=8 needs about 272\.0 GB of memory"
        ):
            ds.batches(10**9, shuffle=shuffle)
    x, y = next(ds.batches(4))
    assert x.shape == y.shape == (4, 8)


def test_the_largest_vocabulary(tmp_path):
    _write(tmp_path, np.array([0, 5, 2**31 - 1]), vocab_size=2**31)
    assert TokenDataset(tmp_path, 1).vocab_size == 2**31
    with pytest.raises(ValueError, match=r"vocab_size=2147483649 is out of range"):
        _write(tmp_path / "too-big", np.array([0, 5]), vocab_size=2**31 + 1)
