"""A hostile user of `fastllm.data.dedup`: sizes that do not fit, crafted index files, planted links.

Oracles: the house rule (bad input is a Python exception naming the bad value: never an abort, a
hang, or a write through someone else's link), and the index file format as documented in
rust/minhash/src/index.rs, re-implemented here (`index_bytes`) so a test can write any file,
checksum-valid ones included, and so reach every check past the checksum.

Sizes that would allocate tens of GB run in a child process under an address-space limit
(`ulimit -v`): a regression there is a failed test, not a machine out of memory or a dead run.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastllm.data.dedup import MinHashDeduper, band_keys

# ---- sizes that cannot fit: refused before anything is allocated --------------------------------

LIMIT = 3 << 30  # address space of the child: fastllm imports in ~1 GB of it, nothing big fits


def run_limited(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose address space is capped at LIMIT bytes."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
    env = dict(os.environ, RUST_BACKTRACE="0")
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


SIZES = [
    # (code, exception, message): the facade's checks
    (
        "from fastllm.data.dedup import MinHashDeduper; MinHashDeduper(num_perm=2**40, bands=1, rows=1)",
        "ValueError",
        r"num_perm=1099511627776 is out of range: it must be in \[1, 65536\]",
    ),
    ("from fastllm.data.dedup import cluster; cluster(10**9, [])", "ValueError", r"cluster\(n=1000000000\)"),
    (
        "from fastllm.data.dedup import MinHashDeduper\n"
        "MinHashDeduper(num_perm=65536, bands=1, rows=1).signatures(['a b c d e f'] * 20000)",
        "ValueError",
        r"20000 signatures of num_perm=65536 needs about 10\.5 GB",
    ),
    # ... and the Rust crate's own, for callers of the private binding
    (
        "from fastllm import _core\n"
        "_core.Deduper(num_perm=2**40, seed=0, ngram=5, char_ngrams=False, lowercase=True,\n"
        "              strip_punctuation=False, threshold=0.5, bands=1, rows=1, verify='exact')",
        "ValueError",
        r"num_perm=1099511627776: must be in 1..=65536",
    ),
    (
        "import numpy as np; from fastllm import _core\n"
        "_core.cluster_pairs(10**9, np.zeros((0, 2), dtype=np.uint32))",
        "MemoryError",
        r"cannot allocate .*1000000000 documents",
    ),
    (  # one LSH bucket of 10^5 documents: 5 * 10^9 candidate pairs, counted before they are stored
        "import numpy as np; from fastllm.data.dedup import candidate_pairs\n"
        "candidate_pairs(np.zeros((100_000, 1), dtype=np.uint64))",
        "MemoryError",
        r"cannot allocate band 0's candidate pairs: 4999950000 x 8 bytes",
    ),
]


@pytest.mark.parametrize("code,exception,message", SIZES, ids=[s[1] + str(i) for i, s in enumerate(SIZES)])
def test_sizes_that_cannot_fit_are_exceptions_not_aborts(code, exception, message):
    catch = f"try:\n{textwrap.indent(code, '    ')}\nexcept {exception} as e:\n    print('CAUGHT', e)\n"
    proc = run_limited(catch)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("CAUGHT"), proc.stdout + proc.stderr
    assert re.search(message, proc.stdout), proc.stdout


# ---- index files: a re-implementation of the documented format -----------------------------------


def xxh3_64(data: bytes) -> int:
    """xxh3-64 (seed 0) of `data`, whose length must be a multiple of 8: band 0's LSH key is by
    definition xxh3-64 seeded with 0 of the band's values as little-endian bytes (the locked key
    format, rust/minhash/src/lsh.rs), so one band of len(data) / 8 rows over `data` is the hash."""
    assert data and len(data) % 8 == 0
    row = np.frombuffer(data, dtype="<u8").reshape(1, -1)
    return int(band_keys(row, 1, row.shape[1])[0, 0])


HEADER = 8 + 4 + 8 + 8 + 8 + 8 + 1 + 8  # magic .. settings_len


def settings_text(num_perm=128, seed="0", ngram="5", char_ngrams="false", lowercase="true", strip="false"):
    return (
        f"num_perm={num_perm};seed={seed};ngram={ngram};char_ngrams={char_ngrams};"
        f"lowercase={lowercase};strip_punctuation={strip}"
    ).encode()


def aligned(settings: bytes) -> bytes:
    """`settings` with the seed's digits zero-padded (Rust reads "007" as 7) so the body before the
    checksum is a whole number of u64s (what `xxh3_64` needs): HEADER + len + 8 + records."""
    pad = (-(HEADER + len(settings) + 8)) % 8
    if pad and b"seed=" in settings:
        return settings.replace(b"seed=", b"seed=" + b"0" * pad, 1)
    return settings + b"\0" * pad


def index_bytes(
    *,
    num_perm=4,
    bands=2,
    rows=2,
    threshold=0.5,
    verify=1,
    settings: bytes | None = None,
    docs=(),
    n_docs=None,
    magic=b"FLLMMH01",
    version=1,
) -> bytes:
    """An index file: `docs` are (exact, signature, shingles) records; `n_docs` overrides the count."""
    if settings is None:
        settings = aligned(settings_text(num_perm))
    threshold_bits = (
        threshold if isinstance(threshold, int) else struct.unpack("<Q", struct.pack("<d", threshold))[0]
    )
    body = magic + struct.pack("<IQQQQB", version, num_perm, bands, rows, threshold_bits, verify)
    body += struct.pack("<Q", len(settings)) + settings
    body += struct.pack("<Q", len(docs) if n_docs is None else n_docs)
    for exact, signature, shingles in docs:
        body += exact.to_bytes(16, "little") + struct.pack(f"<{len(signature)}Q", *signature)
        body += struct.pack("<Q", len(shingles)) + struct.pack(f"<{len(shingles)}Q", *shingles)
    pad = (-len(body)) % 8  # only a hand-made misfit gets here: trailing bytes the loader refuses
    body += b"\0" * pad
    return body + struct.pack("<Q", xxh3_64(body))


def test_the_reimplementation_matches_the_writer(tmp_path):
    """The oracle itself: `index_bytes` makes, byte for byte, the file `save` writes (for a seed
    whose digits make the body a whole number of u64s), and the loader reads it back."""
    seed = next(
        s
        for s in (3, 33, 333, 3333, 33333, 333333, 3333333, 33333333)
        if not (HEADER + len(settings_text(4, seed=s)) + 8) % 8
    )
    texts = ["one two three four five six", "seven eight nine ten eleven twelve"]
    d = MinHashDeduper(num_perm=4, bands=2, rows=2, threshold=0.5, verify="estimate", seed=seed)
    d.add(texts)
    d.save(tmp_path / "real.fmh")
    real = (tmp_path / "real.fmh").read_bytes()
    start = HEADER + len(settings_text(4, seed=seed)) + 8  # the first record
    exacts = [int.from_bytes(real[start + i * 56 : start + i * 56 + 16], "little") for i in range(2)]
    docs = [(e, s.tolist(), []) for e, s in zip(exacts, d.signatures(texts))]
    ours = index_bytes(settings=settings_text(4, seed=seed), docs=docs)
    assert ours == real
    (tmp_path / "ours.fmh").write_bytes(ours)
    loaded = MinHashDeduper.load(tmp_path / "ours.fmh")
    assert loaded.config == d.config and loaded.query(texts) == [[0], [1]]


def sig(k, v=1):
    return [v] * k


HOSTILE_FILES = [
    # (file bytes, message regex): each names the path (checked in the test) and the problem
    (  # the 163-byte file of the issue (padded to a checksummable length): settings say 2**40
        index_bytes(num_perm=1, bands=1, rows=1, settings=aligned(settings_text(2**40))),
        r"bad settings in the index file: num_perm=1099511627776 but the index holds signatures of 1 values",
    ),
    (
        index_bytes(num_perm=4, settings=aligned(settings_text(8))),
        r"num_perm=8 but the index holds signatures of 4 values",
    ),
    (index_bytes(settings=aligned(settings_text(4, ngram="0"))), r"shingle length must be at least 1"),
    (index_bytes(settings=aligned(settings_text(4, ngram="-1"))), r"ngram=\"-1\" is not a valid value"),
    (index_bytes(settings=aligned(settings_text(4, seed="18446744073709551616"))), r"seed=.* not a valid"),
    (index_bytes(settings=aligned(settings_text(4, lowercase="yes"))), r"lowercase=\"yes\" is not a valid"),
    (index_bytes(settings=aligned(settings_text(4) + b";seed=1")), r"seed given twice"),
    (index_bytes(settings=aligned(settings_text(4).replace(b";ngram=5", b""))), r"no ngram"),
    (index_bytes(settings=aligned(settings_text(4) + b";extra=1")), r"unknown key \"extra\""),
    (index_bytes(settings=aligned(b"\xff\xfe" + settings_text(4))), r"not UTF-8"),
    (index_bytes(settings=aligned(b"garbage")), r'"garbage(\\0)*" is not key=value'),
    (index_bytes(num_perm=2**40, bands=1, rows=1), r"num_perm=1099511627776"),
    (index_bytes(num_perm=2**64 - 1, bands=1, rows=1), r"num_perm"),
    (index_bytes(num_perm=0, bands=1, rows=1), r"num_perm=0"),
    (index_bytes(bands=2**63, rows=2), r"bands \* rows"),
    (index_bytes(bands=3, rows=2), r"exceeds num_perm = 4"),
    (index_bytes(threshold=float("nan")), r"threshold"),
    (index_bytes(threshold=2.0), r"threshold=2"),
    (index_bytes(verify=7), r"unknown verify mode 7"),
    (index_bytes(version=2), r"unsupported version 2"),
    (index_bytes(magic=b"FLLMMH02"), r"not a MinHash index"),
    (index_bytes(n_docs=2**64 - 1), r"document count 18446744073709551615 does not fit"),
    (index_bytes(n_docs=2**32), r"document count 4294967296"),
    (index_bytes(n_docs=1), r"document count 1 does not fit"),
    (index_bytes(verify=0, docs=[(1, sig(4), [1, 1])]), r"not strictly ascending"),
    (index_bytes(verify=1, docs=[(1, sig(4), [5])]), r"shingle set stored for verify=Estimate"),
    (
        index_bytes(verify=0, docs=[(1, sig(4), [3]), (2, sig(4), [])], n_docs=1),
        r"unexpected bytes before the checksum",
    ),
]


@pytest.mark.parametrize("raw,message", HOSTILE_FILES, ids=[str(i) for i in range(len(HOSTILE_FILES))])
def test_hostile_index_files_are_value_errors_naming_the_file(tmp_path, raw, message):
    path = tmp_path / "hostile.fmh"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message) as info:
        MinHashDeduper.load(path)
    assert str(path) in str(info.value)


def test_a_huge_claimed_shingle_set_is_refused(tmp_path):
    raw = bytearray(index_bytes(verify=0, docs=[(1, sig(4), [3])]))
    at = len(raw) - 8 - 8 - 8  # the set length, before the one shingle and the checksum
    raw[at : at + 8] = struct.pack("<Q", 2**61)
    body = bytes(raw[:-8])
    path = tmp_path / "set.fmh"
    path.write_bytes(body + struct.pack("<Q", xxh3_64(body)))
    with pytest.raises(ValueError, match=r"shingle-set length 2305843009213693952 exceeds the bytes left"):
        MinHashDeduper.load(path)


# ---- fuzzing the loader with checksum-valid files --------------------------------------------------

WIDE = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 8, 16, 2**16, 2**16 + 1, 2**31, 2**32, 2**40, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
NUMBER = st.one_of(st.integers(-5, 2**70).map(str), st.sampled_from(["", "1e3", "0x10", " 4", "4 ", "+4"]))
BOOL = st.sampled_from(["true", "false", "True", "1", ""])


def mostly(valid, hostile):
    """`valid` nine times in ten, else `hostile`: most files have one or two bad values among good
    ones, so each check is met on its own, and a fair share of files load."""
    return st.integers(0, 9).flatmap(lambda i: hostile if i == 9 else valid)


@st.composite
def index_files(draw) -> bytes:
    num_perm = draw(mostly(st.integers(1, 6), WIDE))
    bands = draw(mostly(st.just(1), WIDE))
    rows = draw(mostly(st.just(1), WIDE))
    threshold = draw(mostly(st.floats(0, 1), st.one_of(st.floats(allow_nan=True), st.integers(0, 2**64 - 1))))
    verify = draw(mostly(st.integers(0, 2), st.integers(0, 255)))
    if draw(mostly(st.just(True), st.just(False))):
        fields = [
            ("num_perm", draw(mostly(st.just(str(num_perm)), NUMBER))),
            ("seed", draw(mostly(st.integers(0, 2**64 - 1).map(str), NUMBER))),
            ("ngram", draw(mostly(st.integers(1, 9).map(str), NUMBER))),
            ("char_ngrams", draw(mostly(st.sampled_from(["true", "false"]), BOOL))),
            ("lowercase", draw(mostly(st.sampled_from(["true", "false"]), BOOL))),
            ("strip_punctuation", draw(mostly(st.sampled_from(["true", "false"]), BOOL))),
        ]
        fields = draw(st.permutations(fields))
        fields = fields[: draw(mostly(st.just(6), st.just(5)))]  # maybe one key missing
        if draw(mostly(st.just(False), st.just(True))):
            fields.append(draw(st.sampled_from([("seed", "1"), ("other", "2"), ("ngram", "3")])))
        settings = aligned(";".join(f"{k}={v}" for k, v in fields).encode())
    else:
        settings = aligned(draw(st.binary(max_size=40)))
    k = num_perm if num_perm <= 6 else draw(st.integers(0, 6))
    docs = draw(
        st.lists(
            st.tuples(
                st.integers(0, 2**128 - 1),
                st.lists(st.integers(0, 2**64 - 1), min_size=k, max_size=k),
                mostly(
                    st.sets(st.integers(0, 2**64 - 1), min_size=1, max_size=4).map(sorted)
                    if verify == 0
                    else st.just([]),
                    st.lists(st.integers(0, 2**64 - 1), max_size=4),
                ),
            ),
            max_size=3,
        )
    )
    n_docs = draw(mostly(st.none(), WIDE))
    raw = bytearray(
        index_bytes(
            num_perm=num_perm,
            bands=bands,
            rows=rows,
            threshold=threshold,
            verify=verify,
            settings=settings,
            docs=docs,
            n_docs=n_docs,
        )
    )
    # damage a few bytes of the body, then seal it again so the damage reaches the parser
    for _ in range(draw(mostly(st.just(0), st.integers(1, 3)))):
        at = draw(mostly(st.integers(8, len(raw) - 9), st.integers(0, 7)))
        raw[at] = draw(st.integers(0, 255))
    body = bytes(raw[:-8])
    cut = draw(mostly(st.just(0), st.integers(1, 2))) * 8  # or drop whole u64s from the end
    if cut and len(body) > cut:
        body = body[:-cut]
    return body + struct.pack("<Q", xxh3_64(body))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=index_files())
def test_fuzzed_checksum_valid_files_load_or_raise_value_error(tmp_path, raw):
    path = tmp_path / "fuzzed.fmh"
    path.write_bytes(raw)
    try:
        d = MinHashDeduper.load(path)
    except ValueError as e:
        assert str(path) in str(e)
        return
    # whatever loads is a working index
    k = int(d.config["num_perm"])
    assert 1 <= k <= 2**16 and d.bands * d.rows <= k and 1 <= int(d.config["ngram"])
    n = len(d)
    assert len(d.query(["some text to look up in it", ""])) == 2
    assert d.add(["one more text"]) == [n]
    d.save(path)
    assert len(MinHashDeduper.load(path)) == n + 1


# ---- save: a temporary file nobody can predict -----------------------------------------------------


def test_save_never_writes_through_a_planted_link(tmp_path):
    """Links planted at every name a save could be expected to use (the old `.NAME.tmp.PID.SEQ`, and
    the target itself) are never followed: the file they point to is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "index.fmh"
    planted = [tmp_path / f".index.fmh.tmp.{os.getpid()}.{seq}" for seq in range(64)]
    planted += [tmp_path / ".index.fmh.tmp", tmp_path / "index.fmh.tmp", tmp_path / ".index.fmh"]
    for link in planted:
        link.symlink_to(victim)
    d = MinHashDeduper()
    d.add(["one two three four five six seven"])
    for _ in range(3):
        d.save(target)
    assert victim.read_text() == "precious"
    assert all(link.is_symlink() and link.resolve() == victim for link in planted)
    assert not target.is_symlink() and len(MinHashDeduper.load(target)) == 1
    # a link at the target is replaced by the new file, not written through
    target.unlink()
    target.symlink_to(victim)
    d.save(target)
    assert victim.read_text() == "precious" and not target.is_symlink()
    assert len(MinHashDeduper.load(target)) == 1
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"victim.txt", "index.fmh"} | {p.name for p in planted}  # no temporary file left


def test_a_failed_save_leaves_nothing(tmp_path):
    d = MinHashDeduper()
    d.add(["one two three four five six seven"])
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        d.save(tmp_path / "taken")  # a folder: the rename fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert list((tmp_path / "taken").iterdir()) == []


def test_num_perm_limit_is_the_crates():
    assert MinHashDeduper(num_perm=2**16, bands=1, rows=1).config["num_perm"] == str(2**16)
    with pytest.raises(ValueError, match=r"num_perm=65537 is out of range"):
        MinHashDeduper(num_perm=2**16 + 1, bands=1, rows=1)


def test_paths_are_str_or_pathlike(tmp_path):
    d = MinHashDeduper()
    d.save(str(tmp_path / "a.fmh"))
    d.save(Path(tmp_path / "b.fmh"))
    assert (tmp_path / "a.fmh").read_bytes() == (tmp_path / "b.fmh").read_bytes()
