"""Bad input gets a clear Python exception of the right type whose message names the bad value.

Oracle: the API contract (ValueError / TypeError / FileNotFoundError, offending value in the
message). Also: pathological inputs that a quadratic encoder would hang on finish (their speed is
measured in benches/, not asserted here).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastllm
from fastllm import BPETokenizer
from fastllm.data.dedup import MinHashDeduper
from fastllm.tokenizer import (
    MAX_PIECE_BYTES,
    MAX_SPECIAL_BYTES,
    MAX_THREADS,
    MAX_VOCAB_FILE_BYTES,
    REGEX_WINDOW_BYTES,
)

SPECIAL = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(
        ["hello world, hello there"] * 20, 280, special_tokens=[SPECIAL], show_progress=False
    )


def train(texts, vocab_size=300, **kw):
    return BPETokenizer.train(texts, vocab_size, show_progress=False, **kw)


# ---- training arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size,specials", [(0, ()), (255, ()), (257, ("<a>", "<b>")), (-5, ())])
def test_vocab_size_too_small(vocab_size, specials):
    with pytest.raises(ValueError, match=re.escape(str(vocab_size))):
        train(["some text"], vocab_size, special_tokens=specials)


def test_vocab_size_exactly_the_minimum_is_fine():
    tok = train(["aaaa bbbb"], 256 + 2, special_tokens=["<a>", "<b>"])
    assert tok.merges == [] and tok.special_tokens == {"<a>": 256, "<b>": 257}


@pytest.mark.parametrize("texts", [[], [""], ["", ""], [SPECIAL], [SPECIAL * 3, ""]], ids=repr)
def test_empty_corpus(texts):
    with pytest.raises(ValueError, match="empty"):
        train(texts, special_tokens=[SPECIAL])


def test_empty_training_files(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text(SPECIAL + SPECIAL, encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train_files([path], 300, special_tokens=[SPECIAL], show_progress=False)


@pytest.mark.parametrize("pattern", ["(", "a)", "[a-", r"\p{Nope}", "*x"])
def test_invalid_pattern(pattern, tmp_path):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        train(["text"], pattern=pattern)
    path = tmp_path / "bytes.tiktoken"
    path.write_text(
        "".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)), encoding="utf-8"
    )
    assert BPETokenizer.from_tiktoken(path, "gpt2").encode("ab") == [97, 98]
    with pytest.raises(ValueError, match=re.escape(pattern)):
        BPETokenizer.from_tiktoken(path, pattern)


@pytest.mark.parametrize("value", [0, -1])
def test_min_frequency_below_one(value):
    with pytest.raises(ValueError, match="min_frequency"):
        train(["text"], min_frequency=value)


def test_bad_special_tokens():
    with pytest.raises(ValueError, match="''"):
        train(["text"], special_tokens=[""])
    with pytest.raises(ValueError, match=re.escape("<a>")):
        train(["text"], special_tokens=["<a>", "<a>"])


def test_surrogates_in_training_text():
    with pytest.raises(ValueError, match="surrogate"):
        train(["fine", "a\ud800b"])


def test_wrong_types_in_training():
    with pytest.raises(TypeError):
        train(["text", 42])
    with pytest.raises(TypeError):
        train([b"bytes"])
    with pytest.raises(TypeError):
        train("a bare string is not a list of texts")
    with pytest.raises(TypeError):
        train(["text"], "300")
    with pytest.raises(TypeError):
        train(["text"], pattern=None)
    with pytest.raises(TypeError, match="^vocab_size must be an int, not float"):
        train(["text"], 300.0)
    with pytest.raises(TypeError, match="^min_frequency must be an int, not float"):
        train(["text"], min_frequency=1.5)
    with pytest.raises(TypeError, match="^show_progress must be a bool, not int"):
        BPETokenizer.train(["text"], 300, show_progress=0)
    with pytest.raises(TypeError, match=r"^special_tokens\[1\] must be str, not int"):
        train(["text"], special_tokens=["<a>", 3])
    with pytest.raises(TypeError, match=r"^num_threads must be an int, not float"):
        train(["text"], num_threads=2.0)


def test_numpy_integers_are_counts():
    import numpy as np

    tok = train(["aaab"] * 4, np.int64(258), min_frequency=np.int32(1), num_threads=np.int64(1))
    assert tok.merges == [(97, 97), (97, 98)]


def test_wrong_types_of_tiktoken_special_ids(tmp_path):
    path = _byte_ranks(tmp_path)
    with pytest.raises(TypeError, match="must be an int, not bool"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: True})
    with pytest.raises(TypeError, match="must be an int, not str"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: "300"})
    with pytest.raises(TypeError, match="special token must be str, not int"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={3: 300})
    with pytest.raises(ValueError, match="''"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={"": 300})


# ---- threads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -8])
def test_negative_thread_counts(tok, bad):
    with pytest.raises(ValueError, match=str(bad)):
        train(["text"], num_threads=bad)
    with pytest.raises(ValueError, match=str(bad)):
        tok.encode_batch(["text"], num_threads=bad)
    with pytest.raises(ValueError, match=str(bad)):
        tok.encode_batch_numpy(["text"], num_threads=bad)
    with pytest.raises(ValueError, match=str(bad)):
        fastllm.set_num_threads(bad)


def test_zero_threads_per_call_is_invalid(tok):
    with pytest.raises(ValueError, match="num_threads"):
        tok.encode_batch(["text"], num_threads=0)


def test_set_num_threads_none_and_zero_mean_all_cores():
    for value in (1, 2, None, 0, 2):
        fastllm.set_num_threads(value)
    fastllm.set_num_threads(None)
    assert fastllm.get_num_threads() >= 1


# ---- files -----------------------------------------------------------------------------------------


def test_missing_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.train_files([missing], 300, show_progress=False)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_file(missing)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_tiktoken(missing, "gpt4")
    real = tmp_path / "real.bpe"
    real.write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_gpt2(missing, real)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_gpt2(real, missing)


def test_invalid_utf8_training_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"line one\nline two\nline \xff three\nline four\n")
    with pytest.raises(ValueError, match="bad.txt") as info:
        BPETokenizer.train_files([path], 300, show_progress=False)
    assert re.search(r"\bline 3\b|:3\b", str(info.value)), str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "{}",
        '{"model": {"type": "WordPiece", "vocab": {}}}',
        "[1, 2, 3]",
        '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}',
    ],
    ids=["empty", "not-json", "no-model", "wordpiece", "list", "dangling-merge"],
)
def test_malformed_tokenizer_json(tmp_path, content):
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        BPETokenizer.from_file(path)


def test_malformed_tiktoken_file_names_the_line(tmp_path):
    good = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    for bad_line, lineno in [("!!notbase64 256", 257), ("YWI=", 257), ("YWI= x", 257)]:
        path = tmp_path / "broken.tiktoken"
        path.write_text("\n".join(good + [bad_line]) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match="broken.tiktoken") as info:
            BPETokenizer.from_tiktoken(path, "gpt4")
        assert re.search(rf"\bline {lineno}\b|:{lineno}\b", str(info.value)), str(info.value)


def test_malformed_gpt2_files(tmp_path):
    encoder, bpe = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    encoder.write_text("not json", encoding="utf-8")
    bpe.write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="encoder.json"):
        BPETokenizer.from_gpt2(encoder, bpe)


# ---- encoding and decoding -------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [-1, 281, 10**6, 2**32, 2**40])
def test_decode_out_of_range_id(tok, bad_id):
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.decode([1, 2, bad_id])
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.decode_bytes([bad_id])
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.token_bytes(bad_id)
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.stream_decoder().feed(bad_id)


def _second(ids, offsets):
    return ids[offsets[1] : offsets[2]].tolist()


SURROGATE_CALLS = {
    "encode": lambda tok, t, **kw: tok.encode(t, **kw),
    "encode_ordinary": lambda tok, t, **kw: tok.encode_ordinary(t, **kw),
    "encode_to_numpy": lambda tok, t, **kw: tok.encode_to_numpy(t, **kw).tolist(),
    "encode_batch": lambda tok, t, **kw: tok.encode_batch(["ok", t], **kw)[1],
    "encode_ordinary_batch": lambda tok, t, **kw: tok.encode_ordinary_batch(["ok", t], **kw)[1],
    "encode_batch_numpy": lambda tok, t, **kw: _second(*tok.encode_batch_numpy(["ok", t], **kw)),
}


@pytest.mark.parametrize("call", sorted(SURROGATE_CALLS))
def test_lone_surrogate(tok, call):
    """tiktoken's rule by default (a lone surrogate becomes U+FFFD); errors="strict" raises."""
    fn = SURROGATE_CALLS[call]
    assert fn(tok, "a\ud800b") == tok.encode("a\ufffdb")
    assert fn(tok, "\ud83d\ude00 x\udfff") == tok.encode("\U0001f600 x\ufffd")  # a pair is its character
    with pytest.raises(ValueError, match=r"surrogate U\+D800 at index 1"):
        fn(tok, "a\ud800b", errors="strict")
    with pytest.raises(ValueError, match="errors must be 'replace' or 'strict', not 'ignore'"):
        fn(tok, "ab", errors="ignore")


def test_disallowed_special(tok):
    with pytest.raises(ValueError, match=re.escape(SPECIAL)):
        tok.encode(f"before {SPECIAL} after")
    with pytest.raises(ValueError, match=re.escape(SPECIAL)):
        tok.encode(f"x{SPECIAL}".encode())
    assert tok.encode(SPECIAL, allowed_special="all") == [tok.special_tokens[SPECIAL]]


def test_unknown_special_in_policy(tok):
    """As tiktoken: an unknown name in allowed_special is ignored; one in disallowed_special
    raises only when the text spells it."""
    assert tok.encode("x<|nope|>", allowed_special={"<|nope|>"}) == tok.encode_ordinary("x<|nope|>")
    assert tok.encode("x", disallowed_special={"<|nope|>"}) == tok.encode_ordinary("x")
    with pytest.raises(ValueError, match=re.escape("'<|nope|>' at offset 1")):
        tok.encode("x<|nope|>", disallowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match=re.escape("'<|nope|>' at offset 1")):
        tok.encode_batch(["y", "x<|nope|>"], disallowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match="allowed_special"):
        tok.encode("x", allowed_special="<|endoftext|>")


def test_wrong_types_in_encoding(tok):
    for bad in (None, 42, ["a list"], 3.5):
        with pytest.raises(TypeError):
            tok.encode(bad)
    with pytest.raises(TypeError):
        tok.encode_batch("a bare string")
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", 7])
    with pytest.raises(TypeError):
        tok.decode("not ids")
    with pytest.raises(TypeError):
        tok.decode([1.5])
    with pytest.raises(TypeError):
        tok.encode_batch(["ok"], num_threads="2")


def test_pathological_inputs_finish(tok):
    """A quadratic piece encoder would take minutes here; speed itself is measured in benches/."""
    for text in (" " * 1_000_000, "a" * 200_000, "ab" * 100_000, "\n" * 200_000, "1" * 200_000):
        assert tok.decode(tok.encode(text)) == text


def _byte_ranks(tmp_path):
    path = tmp_path / "bytes.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    return path


def test_special_ids_far_above_the_vocabulary(tmp_path):
    path = _byte_ranks(tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(2**40))):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: 2**40})
    tok = BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: 2**30})
    ids = tok.encode("hi" + SPECIAL, allowed_special="all")
    assert ids == [104, 105, 2**30] and tok.decode(ids) == "hi" + SPECIAL


# ---- hostile input: bounds on threads, special tokens, files, patterns and pieces ------------------

THREAD_CALLS = {
    "train": lambda tok, n, path: train(["text"], num_threads=n),
    "train_files": lambda tok, n, path: BPETokenizer.train_files(
        [path], 300, num_threads=n, show_progress=False
    ),
    "encode_batch": lambda tok, n, path: tok.encode_batch(["text"], num_threads=n),
    "encode_batch_numpy": lambda tok, n, path: tok.encode_batch_numpy(["text"], num_threads=n),
    "set_num_threads": lambda tok, n, path: fastllm.set_num_threads(n),
    "MinHashDeduper.signatures": lambda tok, n, path: MinHashDeduper(num_threads=n).signatures(["a b c d e"]),
    "MinHashDeduper.dedup": lambda tok, n, path: MinHashDeduper(num_threads=n).dedup(["a b c d e"] * 2),
}


@pytest.mark.parametrize("n", [MAX_THREADS + 1, 100_000])
@pytest.mark.parametrize("call", sorted(THREAD_CALLS))
def test_thread_counts_above_the_cap(tok, tmp_path, call, n):
    """100,000 threads used to take minutes to start (the call never returned): now refused."""
    path = tmp_path / "corpus.txt"
    path.write_text("some text\n", encoding="utf-8")
    try:
        with pytest.raises(ValueError, match=rf"^num_threads={n} is out of range: .*<= {MAX_THREADS}$"):
            THREAD_CALLS[call](tok, n, path)
    finally:
        fastllm.set_num_threads(None)


def test_thread_cap_is_inclusive():
    try:
        fastllm.set_num_threads(MAX_THREADS)
        assert fastllm.get_num_threads() == MAX_THREADS
    finally:
        fastllm.set_num_threads(None)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to count threads")
def test_pools_of_many_sizes_do_not_pile_up_threads(tok):
    """Each pool size used is a pool of threads; only the few most recent are kept."""
    sizes = range(1, 41)
    for n in sizes:
        assert tok.encode_batch(["a b"], num_threads=n) == [tok.encode("a b")]

    def ours():
        names = (p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
        return sum(name.startswith("fastllm-") for name in names)

    deadline = time.monotonic() + 10  # threads of an evicted pool exit a moment after it is dropped
    while ours() > 4 * max(sizes) + os.cpu_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours() <= 4 * max(sizes) + os.cpu_count() < sum(sizes)


LONG_SPECIALS = [
    ("x" * (MAX_SPECIAL_BYTES + 1), MAX_SPECIAL_BYTES + 1),
    ("é" * (MAX_SPECIAL_BYTES // 2 + 1), MAX_SPECIAL_BYTES + 2),
    ("<|" + "y\n" * 600 + "|>", 1204),
    ("z" * 1_000_000, 1_000_000),  # used to take minutes (a quadratic automaton build)
]


@pytest.mark.parametrize(
    "special,length", LONG_SPECIALS, ids=lambda v: str(v)[:8] if isinstance(v, str) else v
)
def test_special_tokens_longer_than_the_cap(tmp_path, special, length):
    message = rf"{length} bytes long; special tokens are at most {MAX_SPECIAL_BYTES} bytes"
    with pytest.raises(ValueError, match=message) as info:
        train(["text"], special_tokens=[special])
    assert len(str(info.value)) < 1000  # the token is named by its start, not copied whole
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_tiktoken(_byte_ranks(tmp_path), "gpt2", special_tokens={special: 300})


def test_special_tokens_at_the_cap_work(tmp_path):
    specials = ["é" * (MAX_SPECIAL_BYTES // 2), "<|" + "y\n" * (MAX_SPECIAL_BYTES // 2 - 2) + "|>"]
    assert all(len(s.encode()) == MAX_SPECIAL_BYTES for s in specials)
    text = f"a{specials[0]}b\n{specials[1]}\nc"
    tok = train([text * 3, "plain text"], special_tokens=specials)
    ids = tok.encode(text, allowed_special="all")
    assert [i for i in ids if i >= 256 + len(tok.merges)] == [tok.special_tokens[s] for s in specials]
    assert tok.decode(ids) == text
    tok.save(tmp_path / "t.json")
    assert BPETokenizer.from_file(tmp_path / "t.json").encode(text, allowed_special="all") == ids


def _tokenizer_json(tmp_path, edit):
    """A valid tokenizer.json, changed by `edit(data)`, written to tmp_path; its path."""
    base = tmp_path / "base.json"
    train(["hello world, héllo 123"] * 5, 270, special_tokens=[SPECIAL]).save(base)
    data = json.loads(base.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_long_added_token_in_tokenizer_json(tmp_path):
    """An 80,000-character added token used to take 41 s to load; now refused at once."""
    token = "q" * 80_000

    def add(data):
        data["added_tokens"].append({"id": 271, "content": token, "special": True})

    with pytest.raises(
        ValueError,
        match=rf"tokenizer.json: added_tokens\[1\] is 80000 bytes long; .* at most {MAX_SPECIAL_BYTES}",
    ):
        BPETokenizer.from_file(_tokenizer_json(tmp_path, add))


def _sparse(tmp_path, size):
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate(size)
    return path


LOADERS = {
    "from_file": lambda p, ok: BPETokenizer.from_file(p),
    "from_tiktoken": lambda p, ok: BPETokenizer.from_tiktoken(p, "gpt2"),
    "from_gpt2(encoder)": lambda p, ok: BPETokenizer.from_gpt2(p, ok),
    "from_gpt2(vocab)": lambda p, ok: BPETokenizer.from_gpt2(ok, p),
}
SOURCES = [
    (lambda tmp: "/dev/zero", r"^/dev/zero: NUL byte at offset 0"),  # used to end in MemoryError
    (lambda tmp: _sparse(tmp, MAX_VOCAB_FILE_BYTES + 1), r"huge: the file is larger than the 256 MiB limit"),
    (lambda tmp: tmp, r"is a directory"),
    (lambda tmp: tmp / "missing", FileNotFoundError),
]


@pytest.mark.parametrize("source,expected", SOURCES, ids=["dev-zero", "over-the-cap", "directory", "missing"])
@pytest.mark.parametrize("load", sorted(LOADERS))
def test_loaders_read_bounded_regular_text(tmp_path, load, source, expected):
    if "/dev/zero" in str(source(tmp_path)) and not Path("/dev/zero").exists():
        pytest.skip("needs /dev/zero")
    ok = tmp_path / "ok.txt"
    ok.write_text("{}", encoding="utf-8")
    error, match = (expected, None) if isinstance(expected, type) else (ValueError, expected)
    with pytest.raises(error, match=match):
        LOADERS[load](source(tmp_path), ok)
    assert MAX_VOCAB_FILE_BYTES == 256 << 20


# Split regexes in a tokenizer.json: (regex, None if it loads, else the error message).
SPLIT_REGEXES = [
    ("(?>x})", None),  # used to panic: "slice index starts at 1 but ends at 0"
    ("(?#(a)é", None),  # used to panic on saving: a byte slice inside "é"
    ("(?>é{2})é", None),
    ("(?>[é]{1,3})|.", None),
    (r"(?#\))é{2}", None),
    ("(?>x}", "Opening parenthesis without closing parenthesis"),
    ("é(?>", "Opening parenthesis"),
    ("(?>(é{2}", "Opening parenthesis"),
    ("[é-", "invalid pre-tokenizer pattern"),
    ("(" + "é" * 500, r'"\(é+"\.\.\. \(1001 bytes in all\)'),  # the message quotes the start only
]


@pytest.mark.parametrize("regex,error", SPLIT_REGEXES)
def test_split_regexes_in_tokenizer_json(tmp_path, regex, error):
    def set_regex(data):
        data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = regex

    path = _tokenizer_json(tmp_path, set_regex)
    if error is not None:
        with pytest.raises(ValueError, match=error) as info:
            BPETokenizer.from_file(path)
        assert len(str(info.value)) < 2000
        return
    tok = BPETokenizer.from_file(path)
    text = "hello wörld (é) x} éé"
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "again.json")
    again = BPETokenizer.from_file(tmp_path / "again.json")
    assert again.pattern == tok.pattern and again.encode(text) == tok.encode(text)


@pytest.mark.parametrize(
    "pattern", ["(?#(a)é", "(?#a)é{1,2}+", "(é{2}+)", "[é)]{2}+", r"(?#\))x|é{2,}+", "é(?=(a+)+b)|."]
)
def test_custom_patterns_save_and_reload(tmp_path, pattern):
    """`fastllm tokenizer train --pattern '(?#(a)é'` used to panic when saving."""
    text = "hello (a) world éé ééé aab"
    tok = train([text] * 5, 270, pattern=pattern)
    tok.save(tmp_path / "t.json")
    again = BPETokenizer.from_file(tmp_path / "t.json")
    assert again.pattern == pattern
    assert again.encode(text) == tok.encode(text) and tok.decode(tok.encode(text)) == text


REGEX_PIECES = [
    *"()[]{}?*+|\\^$.,#:<>=!-0123x",
    *["(?>", "(?#", "(?=", "(?!", "(?<=", "(?:", "(?i:", "[^", "{2}", "{1,3}", "{,2}", r"\p{L}", r"\x{41}"],
    *["é", "中", "😀", " "],
]


@pytest.fixture(scope="module")
def hf_template(tmp_path_factory):
    path = _tokenizer_json(tmp_path_factory.mktemp("fuzz"), lambda data: None)
    return json.loads(path.read_text(encoding="utf-8")), path.parent


def _has_every_byte(tok):
    singles = set()
    for i in range(tok.vocab_size):
        try:
            b = tok.token_bytes(i)
        except ValueError:  # an unused id
            continue
        if len(b) == 1:
            singles.add(b)
    return len(singles) == 256


def _load_or_value_error(data, directory):
    """Loads `data` as a tokenizer.json: a tokenizer that round-trips text, or a ValueError."""
    path = directory / "fuzzed.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    try:
        tok = BPETokenizer.from_file(path)
    except ValueError:
        return
    text = "hello wörld 123 (a) {x} " + SPECIAL
    if _has_every_byte(tok):  # else bytes without a token are dropped, as in tokenizers
        decoded = tok.decode(tok.encode(text, disallowed_special=()))
        if '"add_prefix_space": true' in json.dumps(data):
            # ByteLevel's prefix space only adds spaces (before the text, or before each piece).
            assert decoded.replace(" ", "") == text.replace(" ", "")
        else:
            assert decoded == text
    tok.save(directory / "saved.json")
    assert BPETokenizer.from_file(directory / "saved.json").encode(text, disallowed_special=()) == tok.encode(
        text, disallowed_special=()
    )


@settings(max_examples=300)
@given(regex=st.lists(st.sampled_from(REGEX_PIECES), min_size=1, max_size=10).map("".join))
@example(regex="(?>x})")
@example(regex="(?>]{2})}")
def test_fuzzed_split_regex_loads_or_raises_value_error(hf_template, regex):
    """Random Split regexes: never a panic (42 of 3,000 used to panic), always a tokenizer or ValueError."""
    data, directory = hf_template
    data = json.loads(json.dumps(data))
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = regex
    _load_or_value_error(data, directory)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 2**40) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = [
    ("model",),
    ("model", "type"),
    ("model", "vocab"),
    ("model", "vocab", "a"),
    ("model", "vocab", "Ġ"),
    ("model", "merges"),
    ("model", "merges", 0),
    ("model", "merges", 0, 1),
    ("model", "dropout"),
    ("model", "ignore_merges"),
    ("model", "unk_token"),
    ("model", "fuse_unk"),
    ("model", "byte_fallback"),
    ("added_tokens",),
    ("added_tokens", 0),
    ("added_tokens", 0, "id"),
    ("added_tokens", 0, "content"),
    ("normalizer",),
    ("pre_tokenizer",),
    ("pre_tokenizer", "pretokenizers", 0),
    ("pre_tokenizer", "pretokenizers", 0, "pattern"),
    ("pre_tokenizer", "pretokenizers", 1, "use_regex"),
    ("pre_tokenizer", "pretokenizers", 1, "add_prefix_space"),
    ("post_processor",),
]


@settings(max_examples=200)
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), json_values), min_size=1, max_size=3))
def test_fuzzed_tokenizer_json_loads_or_raises_value_error(hf_template, edits):
    data, directory = hf_template
    data = json.loads(json.dumps(data))
    for path, value in edits:
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass
    _load_or_value_error(data, directory)


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", r"\S+|\s+", r"[a-z]+", r"(?=(a+)+b)a|."])
@pytest.mark.parametrize("unit", ["a", " ", "é", "ab"])
def test_long_runs_are_cut_into_capped_pieces(pattern, unit):
    """No pre-token is longer than MAX_PIECE_BYTES (REGEX_WINDOW_BYTES for a custom pattern): a
    run twice as long encodes as its parts do.

    This is what bounds encoding's memory on a 200 MB run with no spaces, and (with the custom
    pattern's search windows) the quadratic lookahead pattern `(?=(a+)+b)a|.` of the issue.
    """
    tok = train([(unit * 50 + " ") * 20, unit * 5000], 256 + 40, pattern=pattern)
    cap = MAX_PIECE_BYTES if pattern in ("gpt4", "gpt2") else REGEX_WINDOW_BYTES
    size = cap // len(unit.encode())  # units per full piece
    whole = tok.encode(unit * size)
    assert tok.encode(unit * (2 * size + 5)) == whole + whole + tok.encode(unit * 5)


def test_training_on_a_long_run_makes_tokens_of_at_most_a_piece():
    tok = train(["a" * (3 * MAX_PIECE_BYTES + 7)], 256 + 20)
    assert max(len(tok.token_bytes(i)) for i in range(tok.vocab_size)) == MAX_PIECE_BYTES


def test_runs_below_the_piece_cap_encode_as_tiktoken_does():
    """The cap is far above real text: a 200 KB run of letters without a space (a base64 blob, a
    minified line) is one piece and gets tiktoken's ids; only past MAX_PIECE_BYTES does it differ."""
    import random

    import tiktoken
    import tiktoken.load

    from reference_bpe import GPT4_PATTERN
    from shared_data import vocab_file

    path = vocab_file("cl100k_base.tiktoken")
    ranks = tiktoken.load.load_tiktoken_bpe(str(path))
    enc = tiktoken.Encoding("cl100k_test", pat_str=GPT4_PATTERN, mergeable_ranks=ranks, special_tokens={})
    tok = BPETokenizer.from_tiktoken(path, "gpt4")
    rnd = random.Random(0)
    run = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(200_000))
    assert len(run) < MAX_PIECE_BYTES
    assert tok.encode(run) == enc.encode_ordinary(run)
    assert tok.encode(" " + run + " x") == enc.encode_ordinary(" " + run + " x")
