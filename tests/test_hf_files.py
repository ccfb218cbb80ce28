"""tokenizer.json files that real models and tools write, model level (issue 15).

Oracle: `tokenizers` on the same file (`add_special_tokens=False` unless a test is about the
template). Each file also round-trips: fastllm saves it, both libraries load the saved file and
give the same ids.

* `model.ignore_merges` (Llama-3; transformers' TikTokenConverter);
* `add_prefix_space` in the ByteLevel pre-tokenizer: HF puts the space in front of each stretch of
  text between added tokens (ByteLevel alone) or of each piece of a Split (ByteLevel after it);
* vocabularies without all 256 single bytes: a byte without a token becomes `unk_token` (fused
  with `fuse_unk`) or is dropped; `byte_fallback` is refused;
* a Split regex copied verbatim from tiktoken: Oniguruma reads `X{1,3}+` as a repeat;
* a `TemplateProcessing` post-processor, applied with `add_special_tokens=True`.
"""

from __future__ import annotations

import json
import pickle

import pytest
import tokenizers
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors, trainers

from fastllm import BPETokenizer
from shared_data import corpus_text, vocab_file
from strategies import any_text, source_corpus, wordy_text

CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
BOS, EOT = "<|begin_of_text|>", "<|end_of_text|>"
DIGITS = "1 12 123 1234 12345 123456 1234567 2024-01-01 3.14159 $1,000,000 0x1F 9999999999 a1b22c333d4444 "
TEXTS = [
    "",
    " ",
    "Hello world",
    "hello  world ",
    " leading space",
    "\n\nnew lines\r\n  \t",
    "é中文😀 naïve café",
    "it's 'S 'll don't",
    DIGITS,
    f"{BOS}Hello{EOT} after{BOS}",
    f" {BOS} x",
]
texts = st.one_of(any_text, wordy_text(), st.sampled_from(TEXTS))
digit_text = st.lists(
    st.sampled_from(["1", "2", "0", "00", "123", "4567", " ", "a", ",", ".", "\n"]), max_size=30
).map("".join)


def _hf_ids(hf: tokenizers.Tokenizer, text: str, add: bool = False) -> list[int]:
    return hf.encode(text, add_special_tokens=add).ids


def _both(path) -> tuple[BPETokenizer, tokenizers.Tokenizer]:
    return BPETokenizer.from_file(path), tokenizers.Tokenizer.from_file(str(path))


def _agree(ours: BPETokenizer, hf: tokenizers.Tokenizer, text: str) -> list[int]:
    ids = ours.encode(text, allowed_special="all")
    assert ids == _hf_ids(hf, text), text
    return ids


def _round_trip(ours: BPETokenizer, path, texts_: list[str]) -> None:
    """fastllm saves `ours`; both libraries read the saved file and give the ids of the original.
    A pickled copy (what a worker process gets) keeps every option too."""
    saved = path.with_name(path.stem + ".saved.json")
    ours.save(saved)
    again, hf = _both(saved)
    copy = pickle.loads(pickle.dumps(ours))
    for text in texts_:
        ids = ours.encode(text, allowed_special="all")
        assert again.encode(text, allowed_special="all") == ids, text
        assert _hf_ids(hf, text) == ids, text
        assert copy.encode(text, allowed_special="all") == ids, text
        assert copy.encode(text, allowed_special="all", add_special_tokens=True) == ours.encode(
            text, allowed_special="all", add_special_tokens=True
        )


# ---- the Llama-3-style file: cl100k through transformers' TikTokenConverter ----------------------


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """cl100k as a Llama-3 tokenizer.json: vocab + derived merges, ignore_merges, the pattern in a
    Split, ByteLevel(use_regex=False), and a TemplateProcessing that adds <|begin_of_text|>."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    n = 100256  # cl100k's mergeable ranks; the specials follow
    conv = TikTokenConverter(vocab_file=str(vocab_file("cl100k_base.tiktoken")), pattern=LLAMA3_PATTERN)
    hf = conv.converted()
    hf.add_special_tokens(
        [AddedToken(BOS, normalized=False, special=True), AddedToken(EOT, normalized=False)]
    )
    assert hf.token_to_id(BOS) == n
    hf.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, n)]
            ),
        ]
    )
    path = tmp_path_factory.mktemp("llama3") / "llama3.json"
    hf.save(str(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["model"]["ignore_merges"] is True
    return path, data


def test_llama3_file_agrees_on_corpus(llama3):
    path, _ = llama3
    ours, hf = _both(path)
    docs = corpus_text("tinyshakespeare.txt", 200_000).split("\n\n") + [source_corpus(100_000), DIGITS * 20]
    assert ours.encode_batch(docs) == [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
    for text in TEXTS:
        _agree(ours, hf, text)
    # ignore_merges is what makes these whole tokens: the merges alone split some of them.
    assert ours.encode("                ") == _hf_ids(hf, "                ")


@settings(max_examples=150, deadline=None)
@given(text=texts)
def test_llama3_file_agrees_on_any_text(llama3, text):
    path, _ = llama3
    cache = test_llama3_file_agrees_on_any_text.__dict__.setdefault("cache", {})
    if path not in cache:
        cache[path] = _both(path)
    ours, hf = cache[path]
    ids = _agree(ours, hf, text)
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False)


def test_llama3_template(llama3):
    path, _ = llama3
    ours, hf = _both(path)
    bos = ours.special_tokens[BOS]
    for text in ["Hello world", "", f"x{EOT}y"]:
        with_bos = ours.encode(text, allowed_special="all", add_special_tokens=True)
        assert with_bos == _hf_ids(hf, text, add=True)
        assert with_bos == [bos] + ours.encode(text, allowed_special="all")  # default: False, as tiktoken
        assert ours.encode(text.encode(), allowed_special="all", add_special_tokens=True) == with_bos
    batch = ["a b", "", "c"]
    want = [e.ids for e in hf.encode_batch(batch)]
    assert ours.encode_batch(batch, add_special_tokens=True) == want
    flat, offsets = ours.encode_batch_numpy(batch, add_special_tokens=True)
    assert [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == want


def test_llama3_round_trip(llama3):
    path, _ = llama3
    ours, _ = _both(path)
    _round_trip(ours, path, TEXTS + [corpus_text("tinyshakespeare.txt", 20_000)])
    saved = path.with_name(path.stem + ".saved.json")
    again, hf = _both(saved)
    assert again.encode("Hi", add_special_tokens=True) == _hf_ids(hf, "Hi", add=True)
    assert json.loads(saved.read_text(encoding="utf-8"))["model"]["ignore_merges"] is True


# ---- ignore_merges on small files -----------------------------------------------------------------


def _byte_level_vocab() -> dict[str, int]:
    return {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}


@pytest.mark.parametrize("ignore", [True, False])
def test_ignore_merges_built_with_the_tokenizers_api(tmp_path, ignore):
    """ "abc" is a token, but the merges make "a" + "bc" of it: ignore_merges decides."""
    vocab = _byte_level_vocab()
    for t in ["bc", "ab", "abc", "Ġabc"]:
        vocab[t] = len(vocab)
    merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("Ġ", "abc")]
    hf = tokenizers.Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    path = tmp_path / "t.json"
    hf.save(str(path))
    ours = BPETokenizer.from_file(path)
    for text in ["abc", " abc", "abcabc", "xabc abc", "ab c bc"]:
        _agree(ours, hf, text)
    assert ours.encode("abc") == ([vocab["abc"]] if ignore else [vocab["a"], vocab["bc"]])
    _round_trip(ours, path, ["abc", " abc abcabc"])


def test_ignore_merges_written_by_hand(tmp_path):
    vocab = _byte_level_vocab()
    for t in ["ll", "he", "hell", "hello", "lo"]:
        vocab[t] = len(vocab)
    data = {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "ignore_merges": True,
            "vocab": vocab,
            "merges": ["l l", "h e", "he ll", "l o"],
        },
    }
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ours, hf = _both(path)
    for text in ["hello", "hello hello", "hellohello", "hell lo"]:
        _agree(ours, hf, text)
    assert ours.encode("hello") == [vocab["hello"]]


# ---- add_prefix_space ----------------------------------------------------------------------------

PREFIX_LAYOUTS = {
    "bytelevel": lambda: pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    "sequence-bytelevel": lambda: pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=True)]),
    "split-then-bytelevel": lambda: pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
        ]
    ),
}


@pytest.fixture(scope="module", params=sorted(PREFIX_LAYOUTS))
def prefixed(request, tmp_path_factory):
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = PREFIX_LAYOUTS[request.param]()
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=[BOS, EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([source_corpus(20_000), DIGITS * 3], trainer)
    path = tmp_path_factory.mktemp("prefix") / f"{request.param}.json"
    hf.save(str(path))
    return path, BPETokenizer.from_file(path), hf


@settings(max_examples=150, deadline=None)
@given(text=texts)
@example(text=f"hello{BOS}world")
@example(text=f"{BOS}hello")
@example(text=f"hello {BOS} world")
def test_prefix_space_agrees(prefixed, text):
    _, ours, hf = prefixed
    ids = _agree(ours, hf, text)
    # Decoding keeps the added space, in both libraries (HF's ByteLevel decoder does not strip it).
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False)


def test_prefix_space_placement(prefixed):
    """Where the space goes: ByteLevel alone adds it per stretch between added tokens; after a
    Split it adds it to every piece that does not start with a space."""
    path, ours, hf = prefixed
    space = ours.encode(" ", allowed_special="all")
    assert ours.decode(ours.encode("hello", allowed_special="all")) == " hello"
    assert ours.decode(ours.encode(f"a{BOS}b", allowed_special="all")) == f" a{BOS} b"
    per_piece = "split" in path.stem
    assert ours.decode(ours.encode("a,b", allowed_special="all")) == (" a ,b" if per_piece else " a,b")
    assert ours.encode("", allowed_special="all") == [] and space == _hf_ids(hf, " ")
    _round_trip(ours, path, TEXTS + ["a,b", "hello"])


# ---- vocabularies without all 256 bytes -------------------------------------------------------------


@pytest.fixture(scope="module")
def ascii_trained(tmp_path_factory):
    """BpeTrainer without initial_alphabet, on ASCII text: most bytes have no token."""
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", EOT], show_progress=False)
    ascii_text = source_corpus(5000).encode("ascii", "ignore").decode()
    hf.train_from_iterator(["hello world, the quick brown fox 123"] * 20 + [ascii_text], trainer)
    path = tmp_path_factory.mktemp("ascii") / "ascii.json"
    hf.save(str(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    alphabet = set("".join(data["model"]["vocab"]))
    assert "Ã" not in alphabet and "Ā" not in alphabet  # the byte-level forms of 0xC3 and 0x00
    return path, data


MISSING = ["é", "café au lait", "\x00", "a\x00\x00b", "中文 and 😀😀", "naïve", "x\x01y", f"é{EOT}é", "hello"]


@pytest.mark.parametrize(("unk", "fuse"), [(None, False), ("<unk>", False), ("<unk>", True)])
def test_missing_bytes_match_tokenizers(ascii_trained, tmp_path, unk, fuse):
    _, data = ascii_trained
    data = json.loads(json.dumps(data))
    data["model"]["unk_token"], data["model"]["fuse_unk"] = unk, fuse
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ours, hf = _both(path)
    for text in MISSING:
        _agree(ours, hf, text)
    if unk is None:
        assert ours.decode(ours.encode("café")) == "caf"  # dropped, as in tokenizers
    _round_trip(ours, path, MISSING)


@settings(max_examples=100, deadline=None)
@given(text=st.one_of(any_text, wordy_text()))
def test_missing_bytes_any_text(ascii_trained, text):
    path, data = ascii_trained
    cache = test_missing_bytes_any_text.__dict__.setdefault("cache", {})
    if path not in cache:
        data = json.loads(json.dumps(data))
        data["model"]["unk_token"], data["model"]["fuse_unk"] = "<unk>", True
        fused = path.with_name("fused.json")
        fused.write_text(json.dumps(data), encoding="utf-8")
        cache[path] = [_both(path), _both(fused)]
    for ours, hf in cache[path]:
        _agree(ours, hf, text)


# ---- Split regexes copied from tiktoken ------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_trained():
    """A byte-level vocabulary with merges for digit runs (any Split can be put in front of it)."""
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}+|\p{L}+|[^\p{N}\p{L}]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator([DIGITS * 10, "aaaaaa aaa a " * 20, source_corpus(5000)], trainer)
    return json.loads(hf.to_str())


PATTERNS = [
    r"\p{N}{1,3}+|\D",
    r"\p{N}{2}+|\D|\d",
    r"\p{N}{2,}+|\D|\d",
    r"\p{N}{,2}+|\D",
    r"\p{N}{1,3}?|\D",
    r"\p{N}{2}?|\D|\d",
    r"\p{N}{2,}?|\D|\d",
    r"a{1,2}*|[^a]",
    r"(?:\p{N}{1,3})+|\D",
    r"(?>\p{N}{1,3})|\D",
    r"\p{N}{1,3}|\D",
    r"\p{N}++|\D",
    r"[0-9]{3}+|[a-z]{2}+|.",
    r"(\d\d){1,2}+|.",
    CL100K_PATTERN,
    O200K_PATTERN,
    LLAMA3_PATTERN,
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_split_regex_reads_as_oniguruma_does(digit_trained, tmp_path, pattern):
    data = json.loads(json.dumps(digit_trained))
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ],
    }
    data["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ours, hf = _both(path)
    texts_ = [DIGITS, "12345 aaaaa 1 a 123456", "x1x22x333x4444 ", "aaa1aa22a"]
    for text in texts_:
        _agree(ours, hf, text)
    _round_trip(ours, path, texts_)


@settings(max_examples=100, deadline=None)
@given(text=digit_text, which=st.sampled_from([CL100K_PATTERN, O200K_PATTERN]))
def test_verbatim_tiktoken_patterns_on_digits(llama3, text, which):
    """cl100k's and o200k's patterns as TikTokenConverter writes them: HF reads `\\p{N}{1,3}+` in
    cl100k as a repeat, so "12345" is one piece there, and here."""
    path, data = llama3
    cache = test_verbatim_tiktoken_patterns_on_digits.__dict__.setdefault("cache", {})
    if which not in cache:
        data = json.loads(json.dumps(data))
        data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = which
        p = path.with_name(f"pattern{len(cache)}.json")
        p.write_text(json.dumps(data), encoding="utf-8")
        cache[which] = _both(p)
    _agree(*cache[which], text)


# ---- refusals ------------------------------------------------------------------------------------


def _template(single, special_tokens=None):
    return {
        "type": "TemplateProcessing",
        "single": single,
        "pair": single,
        "special_tokens": special_tokens
        if special_tokens is not None
        else {EOT: {"id": EOT, "ids": [5], "tokens": [EOT]}},
    }


A = {"Sequence": {"id": "A", "type_id": 0}}
B = {"Sequence": {"id": "B", "type_id": 1}}
S = {"SpecialToken": {"id": EOT, "type_id": 0}}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["model"].update(byte_fallback=True), r"model\.byte_fallback is true"),
        (lambda d: d["model"].update(unk_token="<nope>"), r"model\.unk_token is \"<nope>\""),
        (lambda d: d["model"].update(ignore_merges="yes"), r"model\.ignore_merges is \"yes\""),
        (lambda d: d.update(post_processor=_template([])), r"post_processor\.single is missing"),
        (
            lambda d: d.update(post_processor=_template([S, B])),
            r"post_processor\.single\[1\] is the sequence \$B",
        ),
        (lambda d: d.update(post_processor=_template([A, A])), r"single\[1\] is the sequence \$A"),
        (lambda d: d.update(post_processor=_template([S])), r"single has no \$A"),
        (lambda d: d.update(post_processor=_template([S, A], {})), r"special_tokens lacks"),
        (
            lambda d: d.update(
                post_processor=_template([S, A], {EOT: {"id": EOT, "ids": [5, 6], "tokens": [EOT]}})
            ),
            r"2 ids and 1 tokens",
        ),
        (
            lambda d: d.update(
                post_processor=_template([S, A], {EOT: {"id": EOT, "ids": [999999], "tokens": [EOT]}})
            ),
            r"999999",
        ),
        (
            lambda d: d.update(post_processor={"type": "RobertaProcessing"}),
            r"post_processor \"RobertaProcessing\"",
        ),
        (
            lambda d: d.update(
                post_processor={"type": "Sequence", "processors": [_template([S, A]), _template([A, S])]}
            ),
            r"processors\[1\] is a second TemplateProcessing",
        ),
    ],
)
def test_refused_with_the_field_named(ascii_trained, tmp_path, edit, message):
    _, data = ascii_trained
    data = json.loads(json.dumps(data))
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_file(path)


def test_add_special_tokens_is_checked_and_a_no_op_without_template(tmp_path):
    tok = BPETokenizer.train(["hello world"] * 5, 260, show_progress=False)
    assert tok.encode("hello", add_special_tokens=True) == tok.encode("hello")
    with pytest.raises(TypeError, match="add_special_tokens must be a bool"):
        tok.encode("hello", add_special_tokens=1)
    with pytest.raises(TypeError, match="add_special_tokens must be a bool"):
        tok.encode_batch(["hello"], add_special_tokens="yes")
