"""BPETokenizer: byte-level BPE of the GPT-2/GPT-4 family, trained and run in Rust.

A thin, typed facade over `fastllm._core`: arguments are checked here so that a mistake gets a
Python exception naming the bad value; the work (pre-tokenization, counting, merging, encoding)
happens in Rust with the GIL released. `save` writes a Hugging Face `tokenizer.json`.

A drop-in for `tiktoken.Encoding`: code written for one runs unchanged on a `BPETokenizer`, with
the same names, keyword-only arguments, defaults, return types and exceptions (`name`, `n_vocab`,
`max_token_value`, `eot_token`, `special_tokens_set`, `is_special_token`, `encode`,
`encode_ordinary`, `encode_batch`, `encode_ordinary_batch`, `encode_to_numpy`,
`encode_single_token`, `decode`, `decode_bytes`, `decode_batch`, `decode_bytes_batch`,
`decode_single_token_bytes`, `decode_tokens_bytes`, `decode_with_offsets`, `token_byte_values`),
and it pickles (every protocol; `copy.deepcopy` too) as a compact binary state made in Rust, so
it can be sent to worker processes. Where tiktoken raises `KeyError` for an unknown id or token,
`UnknownTokenError` is raised: a `KeyError` and a `ValueError` both. Decisions, where tiktoken's
behaviour is kept or not:

1. `allowed_special` naming a token that is not a special token of the vocabulary is ignored, as
   in tiktoken (such text cannot be a special token anyway); `disallowed_special` naming one
   still raises when the text spells it, as tiktoken does.
2. A lone surrogate in a str (text that is not valid Unicode) is handled as tiktoken does, in
   every encode method: the text is re-encoded with
   `text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")` (a lone surrogate
   becomes U+FFFD, a valid surrogate pair its character). This runs only after the first attempt
   failed, never on valid text. `errors="strict"` raises a ValueError naming the index instead.
   Training is always strict (a surrogate in training text is a ValueError).
3. Bytes that are not valid UTF-8 (`encode(b"...")`): valid stretches encode exactly as the same
   text would, and each maximal run of invalid bytes is BPE'd as one piece of its own, so
   `decode_bytes(encode(b)) == b` for any `b` and input made only of invalid bytes encodes as
   tiktoken's private `_encode_bytes`. tiktoken instead BPEs everything from the last valid piece
   on as one piece, without pre-tokenizing: a Latin-1 document would lose its pre-tokenization
   after its first accented letter, and its ids would depend on where the first invalid byte
   happens to fall.

Limits, so that no input can make a call run or allocate without bound (past the last three is a
ValueError naming the value and the limit):

* `MAX_PIECE_BYTES` (1 MiB): a pre-token longer than this (200 MB of letters without a space,
  say) is cut into parts of this size before BPE. Only such runs encode differently from
  tiktoken and Hugging Face (ids equal theirs on any real text).
* `REGEX_WINDOW_BYTES` (4096): a custom `pattern` sees at most this much text on either side of
  where a search starts, and its pieces are at most this long; that keeps splitting linear in the
  text for any pattern (a lookahead like `(?=(a+)+b)a|.` is otherwise quadratic).
* `MAX_SPECIAL_BYTES` (1024): the longest special token, in bytes of UTF-8.
* `MAX_VOCAB_FILE_BYTES` (256 MiB): the largest file `from_file`, `from_tiktoken` and `from_gpt2`
  read; a file with a NUL byte (not text: `/dev/zero`) is refused at once.
* `MAX_THREADS` (1024): the most `num_threads` any parallel call of the package accepts.

>>> tok = BPETokenizer.train(["low lower lowest"] * 10, 260, show_progress=False)
>>> tok.decode(tok.encode("lower lows"))
'lower lows'
"""

from __future__ import annotations

import codecs
import gc
import operator
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Literal, Union

import numpy as np

from fastllm import _core
from fastllm._checks import check_bool, check_int, check_optional_int, check_texts, check_type
from fastllm._io import write_atomic
from fastllm._progress import bar

__all__ = [
    "MAX_PIECE_BYTES",
    "MAX_SPECIAL_BYTES",
    "MAX_THREADS",
    "MAX_VOCAB_FILE_BYTES",
    "REGEX_WINDOW_BYTES",
    "BPETokenizer",
    "StreamDecoder",
    "UnknownTokenError",
]

MAX_PIECE_BYTES: int = _core.Tokenizer.MAX_PIECE_BYTES
MAX_SPECIAL_BYTES: int = _core.Tokenizer.MAX_SPECIAL_BYTES
MAX_VOCAB_FILE_BYTES: int = _core.Tokenizer.MAX_VOCAB_FILE_BYTES
REGEX_WINDOW_BYTES: int = _core.Tokenizer.REGEX_WINDOW_BYTES
MAX_THREADS = 1024  # enforced for every parallel call in Rust (fastllm-py/src/pool.rs)

PathLike = Union[str, "os.PathLike[str]"]
SpecialSet = Union[Literal["all"], Collection[str]]
Ids = Union[Sequence[int], np.ndarray]
EncodeErrors = Literal["replace", "strict"]
_ENCODE_ERRORS = ("replace", "strict")

# Texts are handed to Rust in batches of about this many bytes while training from an iterable, so
# memory stays bounded whatever the iterable's length.
_TRAIN_BATCH_BYTES = 8 << 20


def _surrogate_error(text: str, what: str) -> ValueError:
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return ValueError(
                f"{what} contains a lone surrogate U+{ord(ch):04X} at index {i}, which is not valid "
                "Unicode text; fix the text, or encode it with errors='surrogatepass' and pass bytes"
            )
    return ValueError(f"{what} is not valid Unicode text")


class UnknownTokenError(KeyError, ValueError):
    """An id or token that is not in the vocabulary.

    A `KeyError`, as tiktoken raises, and a `ValueError`, as the rest of fastllm raises for a bad
    argument, so that code written for either catches it. Its str is the message itself.

    >>> tok = BPETokenizer.train(["abc"] * 3, 256, show_progress=False)
    >>> try:
    ...     tok.decode([999])
    ... except KeyError as e:
    ...     print(e)
    token id 999 is out of range for a vocabulary of 256 ids
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


def _replace_surrogates(text: str) -> str:
    """tiktoken's fix-up for text that is not valid Unicode: lone surrogates become U+FFFD,
    surrogate pairs their character. Valid text is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _check_errors(errors: str) -> None:
    if errors not in _ENCODE_ERRORS:
        raise ValueError(f"errors must be 'replace' or 'strict', not {errors!r}")


def _ids(ids: Ids, what: str = "ids") -> list[int]:
    """Token ids from any iterable of ints or a 1-D integer numpy array, as a list."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not (ids.dtype.kind in "iu" or ids.size == 0):
            raise TypeError(f"{what} must be a 1-D array of integers, not {ids.ndim}-D of {ids.dtype}")
        return ids.tolist()
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of token ids, not {type(ids).__name__}")
    return ids if isinstance(ids, list) else list(ids)


def _unknown(err: KeyError) -> UnknownTokenError:
    return UnknownTokenError(err.args[0] if err.args else "unknown token id")


def _restore(state: bytes, name: str) -> BPETokenizer:
    """Unpickles a BPETokenizer (see `BPETokenizer.__reduce__`)."""
    check_type(state, "state", bytes)
    return BPETokenizer(_core.Tokenizer.from_state(state), name=name)


def _find_surrogate_error(texts: Sequence[str], what: str) -> ValueError:
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            return _surrogate_error(t, f"{what}[{i}]")
    return ValueError(f"{what} contains text that is not valid Unicode")


def _check_specials(special_tokens: Iterable[str]) -> list[str]:
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a collection of str, e.g. ({special_tokens!r},), not a str")
    out = list(special_tokens)
    for i, t in enumerate(out):
        if not check_type(t, f"special_tokens[{i}]", str):
            raise ValueError(f"special token {t!r} must be a non-empty str")
    return out


def _check_vocab_size(vocab_size: int, n_special: int) -> int:
    vocab_size = check_int(vocab_size, "vocab_size")
    minimum = 256 + n_special
    if vocab_size < minimum:  # the range named with its reason, which check_int's message lacks
        raise ValueError(
            f"vocab_size={vocab_size} is out of range: it must be >= {minimum} "
            f"(256 byte tokens + {n_special} special tokens)"
        )
    return vocab_size


class _Progress:
    """A `fastllm._progress.bar` driven by the absolute positions Rust reports.

    Its last drawn state is the true one: tqdm redraws at most every 0.1 s, so `close` draws the
    last reported position before the bar goes (a log keeps that line, not the first "0 texts" or
    "0.00/303k"), and `done` (on success) makes a bar that stopped short of its total say so.
    """

    def __init__(self, show: bool, total: int | None, desc: str, unit: str, scale: bool = False):
        self.bar = bar(show, total=total, desc=desc, unit=unit, unit_scale=scale)
        self.position = 0

    def __call__(self, position: int) -> None:
        self.bar.update(position - self.position)
        self.position = position

    def done(self, position: int | None = None, note: str = "") -> None:
        """The work finished at `position` (default: the last reported one): that is the total."""
        if position is not None:
            self(position)
        if self.bar.total is not None and self.position != self.bar.total:
            self.bar.total = self.position
            if note:
                self.bar.set_postfix_str(note, refresh=False)

    def close(self) -> None:
        self.bar.refresh()
        self.bar.close()


class StreamDecoder:
    """Decodes ids one at a time, yielding text as soon as it is complete UTF-8.

    A token may end inside a multi-byte character; its bytes wait for the next id rather than
    becoming U+FFFD. `flush()` returns what is left (incomplete bytes become U+FFFD).

    >>> tok = BPETokenizer.train(["héllo"] * 5, 256, show_progress=False)
    >>> d = tok.stream_decoder()
    >>> "".join(d.feed(i) for i in tok.encode("héllo")) + d.flush()
    'héllo'
    """

    def __init__(self, tokenizer: BPETokenizer):
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, id: int) -> str:
        return self._utf8.decode(self._tok.token_bytes(id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class BPETokenizer:
    """A byte-level BPE tokenizer (GPT-2/GPT-4 family).

    Make one with `train`, `train_files`, `from_file`, `from_tiktoken` or `from_gpt2`. Trained ids:
    0-255 are single bytes, 256+i is merge i, special tokens follow the merges.

    >>> tok = BPETokenizer.train(["the cat sat on the mat"] * 20, 270,
    ...                          special_tokens=("<|endoftext|>",), show_progress=False)
    >>> ids = tok.encode("the cat<|endoftext|>", allowed_special="all")
    >>> ids[-1] == tok.special_tokens["<|endoftext|>"]
    True

    It is a drop-in for `tiktoken.Encoding` (same methods, arguments and exceptions; how it treats
    unknown special-token names, lone surrogates and invalid UTF-8 is set out in the module
    docstring), and it pickles (to be sent to a worker process, say):

    >>> import pickle
    >>> tok.eot_token, tok.n_vocab, tok.decode_tokens_bytes(tok.encode("the cat"))
    (268, 269, [b'the', b' cat'])
    >>> pickle.loads(pickle.dumps(tok)).encode("the cat") == tok.encode("the cat")
    True
    """

    __slots__ = ("_core", "_specials", "_special_names", "_special_set", "_special_ids", "_name")

    def __init__(self, core: _core.Tokenizer, *, name: str = "bpe"):
        if not isinstance(core, _core.Tokenizer):
            raise TypeError("use BPETokenizer.train, train_files, from_file, from_tiktoken or from_gpt2")
        self._core = core
        self._specials: dict[str, int] = dict(core.specials)
        self._special_names: list[str] = [text for text, _ in core.specials]
        self._special_set = frozenset(self._special_names)
        self._special_ids = frozenset(self._specials.values())
        self.name = name

    # ---- training -------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        pattern: str = "gpt4",
        special_tokens: Iterable[str] = (),
        min_frequency: int = 1,
        show_progress: bool = True,
        num_threads: int | None = None,
        name: str = "bpe",
    ) -> BPETokenizer:
        """Trains on any iterable of str (streamed in batches: it need not fit in memory).

        `pattern` is "gpt4" (cl100k split, the default), "gpt2", or a regex. `vocab_size` counts the
        256 byte tokens, the merges and the special tokens (each at most `MAX_SPECIAL_BYTES`);
        training stops earlier when no pair occurs `min_frequency` times. Ties between equally
        frequent pairs go to the smallest (left id, right id), so results are identical on any
        number of threads (`num_threads`: None for the default, else 1 to `MAX_THREADS`). Text
        with a lone surrogate (not valid Unicode) is a ValueError naming it. `name` is the
        tokenizer's `name`.

        After merging "aa" (id 256), "aa"+"a" and "a"+"b" both occur 4 times; the tie goes to
        the smaller pair, (97, 98):

        >>> BPETokenizer.train(["aaab"] * 4, 258, show_progress=False).merges
        [(97, 97), (97, 98)]
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be an iterable of str, not a single str; wrap it in a list")
        check_type(name, "name", str)
        counter, specials, vocab_size, min_frequency, num_threads = cls._counter(
            pattern, special_tokens, vocab_size, min_frequency, num_threads, show_progress
        )
        progress = _Progress(show_progress, None, "counting", " texts")
        batch: list[str] = []
        size = seen = 0
        try:
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(f"texts[{i}] must be str, not {type(text).__name__}")
                batch.append(text)
                size += len(text)
                if size >= _TRAIN_BATCH_BYTES:
                    cls._add_batch(counter, batch, seen, num_threads)
                    seen += len(batch)
                    progress(seen)
                    batch, size = [], 0
            if batch:
                cls._add_batch(counter, batch, seen, num_threads)
                seen += len(batch)
            progress.done(seen)
        finally:
            progress.close()
        tok = cls._train_counts(counter, vocab_size, specials, min_frequency, show_progress, num_threads)
        tok.name = name
        return tok

    @classmethod
    def train_files(
        cls,
        paths: Iterable[PathLike] | PathLike,
        vocab_size: int,
        *,
        pattern: str = "gpt4",
        special_tokens: Iterable[str] = (),
        min_frequency: int = 1,
        show_progress: bool = True,
        num_threads: int | None = None,
        name: str = "bpe",
    ) -> BPETokenizer:
        """Trains on UTF-8 text files, read and counted in Rust in blocks (constant memory).

        Files are cut into blocks only after a newline followed by a non-space character, where
        the built-in patterns never join two pieces. Invalid UTF-8 raises, naming file and line.
        """
        check_type(name, "name", str)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = [Path(p) for p in paths]
        if not files:
            raise ValueError("train_files needs at least one path")
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"training file not found: {str(f)!r}")
        counter, specials, vocab_size, min_frequency, num_threads = cls._counter(
            pattern, special_tokens, vocab_size, min_frequency, num_threads, show_progress
        )
        total = sum(f.stat().st_size for f in files)
        progress = _Progress(show_progress, total, "counting", "B", scale=True)
        done = 0
        try:
            for f in files:
                counter.add_file(str(f), num_threads, lambda n, base=done: progress(base + n))
                done += f.stat().st_size
                progress(done)
            progress.done()
        finally:
            progress.close()
        tok = cls._train_counts(counter, vocab_size, specials, min_frequency, show_progress, num_threads)
        tok.name = name
        return tok

    @staticmethod
    def _counter(pattern, special_tokens, vocab_size, min_frequency, num_threads, show_progress):
        """A word counter for `pattern` and the training arguments, checked and normalised."""
        check_type(pattern, "pattern", str)
        check_bool(show_progress, "show_progress")
        specials = _check_specials(special_tokens)
        vocab_size = _check_vocab_size(vocab_size, len(specials))
        min_frequency = check_int(min_frequency, "min_frequency", minimum=1)
        num_threads = check_optional_int(num_threads, "num_threads", minimum=1)
        return _core.WordCounter(pattern, specials), specials, vocab_size, min_frequency, num_threads

    @staticmethod
    def _add_batch(counter, batch: list[str], offset: int, num_threads: int | None) -> None:
        try:
            counter.add_texts(batch, num_threads)
        except UnicodeEncodeError:
            err = _find_surrogate_error(batch, "texts")
            raise ValueError(str(err).replace("texts[", f"texts[{offset}+", 1)) from None

    @classmethod
    def _train_counts(cls, counter, vocab_size, specials, min_frequency, show_progress, num_threads):
        if len(counter) == 0:
            raise ValueError(
                "empty corpus: the training texts contain no pre-tokens (only empty text or special tokens)"
            )
        progress = _Progress(show_progress, vocab_size - 256 - len(specials), "merging", " merges")
        try:
            core = counter.train(
                vocab_size=vocab_size, min_frequency=min_frequency, num_threads=num_threads, progress=progress
            )
            progress.done(core.vocab_size - 256 - len(specials), "no pair left to merge at min_frequency")
        finally:
            progress.close()
        return cls(core)

    # ---- loading and saving ---------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: PathLike, *, name: str | None = None) -> BPETokenizer:
        r"""Loads a byte-level BPE `tokenizer.json` (written by `save` or by Hugging Face).

        Ids equal `tokenizers`' on the same file (`encode(text, add_special_tokens=False)` there),
        including what real models ship: `model.ignore_merges` (Llama-3), ByteLevel's
        `add_prefix_space` (the space goes where `tokenizers` puts it: in front of each stretch of
        text between special tokens, or of each Split piece when ByteLevel follows a Split; `decode`
        keeps it, as `tokenizers`' ByteLevel decoder does), vocabularies without all 256 single
        bytes (a byte without a token becomes `model.unk_token`, or is dropped without one), a
        Split regex copied from tiktoken (read as Oniguruma reads it: cl100k's `\p{N}{1,3}+` keeps
        "12345" in one piece there), and a `TemplateProcessing` post-processor (applied when
        `encode` is given `add_special_tokens=True`).

        Its normalizer (NFC, NFD, NFKC, NFKD, Lowercase or a Sequence of them) and its added tokens
        (flags included) are applied as Hugging Face tokenizers applies them; `special` added tokens
        are `special_tokens`, the others `added_tokens`.

        The file is read in Rust, at most `MAX_VOCAB_FILE_BYTES` of it; anything malformed,
        unsupported or too large is a ValueError naming the file and the field. `name` defaults to
        the file's stem ("tokenizer" for `tokenizer.json`).
        """
        name = Path(path).stem if name is None else check_type(name, "name", str)
        return cls(_core.Tokenizer.from_hf_file(os.fspath(path)), name=name)

    @classmethod
    def from_tiktoken(
        cls,
        path: PathLike,
        pattern: str,
        special_tokens: dict[str, int] | None = None,
        *,
        name: str | None = None,
    ) -> BPETokenizer:
        """Loads a tiktoken `.tiktoken` rank file; ids and encodings equal tiktoken's.

        `pattern` is the split regex or a built-in name ("gpt4"/"cl100k", "gpt2"/"r50k"). `name`
        defaults to the file's stem ("cl100k_base" for `cl100k_base.tiktoken`).
        """
        check_type(pattern, "pattern", str)
        name = Path(path).stem if name is None else check_type(name, "name", str)
        specials = dict(special_tokens or {})
        for special, id_ in specials.items():
            if not check_type(special, "a special token", str):
                raise ValueError("special token '' must be a non-empty str")
            specials[special] = check_int(
                id_, f"special_tokens[{special!r}]", minimum=0, maximum=2**31, max_open=True
            )
        core = _core.Tokenizer.from_tiktoken(os.fspath(path), pattern, list(specials.items()))
        return cls(core, name=name)

    @classmethod
    def from_gpt2(
        cls, encoder_json_path: PathLike, vocab_bpe_path: PathLike, *, name: str = "gpt2"
    ) -> BPETokenizer:
        """Loads OpenAI's GPT-2 files (`encoder.json` + `vocab.bpe`); `<|endoftext|>` is special."""
        check_type(name, "name", str)
        core = _core.Tokenizer.from_gpt2(os.fspath(encoder_json_path), os.fspath(vocab_bpe_path))
        return cls(core, name=name)

    def save(self, path: PathLike) -> None:
        """Writes a Hugging Face `tokenizer.json` atomically (`fastllm._io.write_atomic`)."""
        write_atomic(path, self._core.to_hf_json())

    # ---- encoding -------------------------------------------------------------------------------

    def _policy(
        self, allowed_special: SpecialSet, disallowed_special: SpecialSet
    ) -> tuple[list[bool], list[bool], tuple[str, ...]]:
        """Per-special allowed/disallowed flags, and the disallowed names that are not specials
        of this vocabulary (text spelling one of those raises, as in tiktoken)."""
        names = self._special_names
        if allowed_special == () and (disallowed_special == "all" or disallowed_special == ()):
            # The common calls (`encode(text)`, `encode_ordinary`), without building sets.
            flags = [False] * len(names)
            return flags, (flags if disallowed_special == () else [True] * len(names)), ()
        known = self._special_set

        def resolve(value: SpecialSet, what: str) -> set[str] | frozenset[str]:
            if value == "all":
                return known
            if isinstance(value, (str, bytes)):
                raise TypeError(f'{what} must be "all" or a collection of special tokens, not {value!r}')
            return set(value)

        allowed = resolve(allowed_special, "allowed_special")
        disallowed = (
            known - allowed
            if disallowed_special == "all"
            else resolve(disallowed_special, "disallowed_special")
        )
        extra = tuple(sorted(n for n in disallowed - known if isinstance(n, str) and n))
        return [n in allowed for n in names], [n in disallowed for n in names], extra

    @staticmethod
    def _check_extra(text: str | bytes, extra: tuple[str, ...]) -> None:
        for name in extra:
            at = text.find(name.encode() if isinstance(text, bytes) else name)
            if at >= 0:
                raise ValueError(
                    f"text contains {name!r} at offset {at}, which disallowed_special names; pass "
                    f"disallowed_special without it to encode it as plain text"
                )

    def encode(
        self,
        text: str | bytes,
        *,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
        errors: EncodeErrors = "replace",
        add_special_tokens: bool = False,
    ) -> list[int]:
        """Encodes text (or bytes: invalid UTF-8 is kept byte for byte) to ids, as tiktoken does.

        A special token spelled in the text raises unless it is in `allowed_special` (then it
        becomes its id) or `disallowed_special` leaves it out (then it is encoded as plain text).
        A name in `allowed_special` that is not a special token is ignored (tiktoken's rule).
        A lone surrogate (text that is not valid Unicode) becomes U+FFFD as in tiktoken
        (`errors="replace"`), or raises a ValueError naming its index (`errors="strict"`). In bytes,
        each run of invalid UTF-8 is one piece of its own (see the module docstring).

        `add_special_tokens=True` puts the special tokens of the loaded `tokenizer.json`'s
        `TemplateProcessing` post-processor around the ids (Llama-3's `<|begin_of_text|>`), as
        `tokenizers`' `encode(text, add_special_tokens=True)` does. The default is False, as in
        tiktoken (and unlike `tokenizers`, whose default is True); without a template it changes
        nothing.

        >>> tok = BPETokenizer.train(["ab"] * 3, 256, show_progress=False)
        >>> tok.encode("a\\udc80b") == tok.encode("a\\ufffdb")
        True
        """
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            if errors not in _ENCODE_ERRORS:
                _check_errors(errors)
            allowed, disallowed, extra = self._policy(allowed_special, disallowed_special)
            add = check_bool(add_special_tokens, "add_special_tokens")
            if extra:
                self._check_extra(data, extra)
            return self._core.encode_bytes(data, allowed, disallowed, add)
        return self._encode_str(
            self._core.encode, text, allowed_special, disallowed_special, errors, add_special_tokens
        )

    def _encode_str(self, encode, text, allowed_special, disallowed_special, errors, add_special_tokens):
        """`encode(text, ...)` (a `_core` method) with the arguments checked, and tiktoken's
        surrogate fix-up (or the strict error) only after a UnicodeEncodeError, off the fast path."""
        if errors not in _ENCODE_ERRORS:
            _check_errors(errors)
        allowed, disallowed, extra = self._policy(allowed_special, disallowed_special)
        add = check_bool(add_special_tokens, "add_special_tokens")
        check_type(text, "text", str)
        if extra:
            self._check_extra(text, extra)
        try:
            return encode(text, allowed, disallowed, add)
        except UnicodeEncodeError:
            if errors == "strict":
                raise _surrogate_error(text, "text") from None
            return encode(_replace_surrogates(text), allowed, disallowed, add)

    def encode_ordinary(self, text: str | bytes, *, errors: EncodeErrors = "replace") -> list[int]:
        """Encodes with every special token treated as plain text."""
        return self.encode(text, allowed_special=(), disallowed_special=(), errors=errors)

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
        errors: EncodeErrors = "replace",
        add_special_tokens: bool = False,
    ) -> np.ndarray:
        """`encode` as a uint32 numpy array, made in Rust (no Python list in between)."""
        return self._encode_str(
            self._core.encode_numpy, text, allowed_special, disallowed_special, errors, add_special_tokens
        )

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of the one token whose bytes are exactly these (a special token by its text);
        `UnknownTokenError` (a KeyError) if they are not exactly one token."""
        data = text_or_bytes.encode("utf-8") if isinstance(text_or_bytes, str) else text_or_bytes
        check_type(data, "text_or_bytes", (bytes, bytearray, memoryview))
        id_ = self._core.token_id(bytes(data))
        if id_ is None:
            raise UnknownTokenError(f"{text_or_bytes!r} is not a single token of this vocabulary")
        return id_

    def _prepare_batch(
        self,
        texts: Sequence[str],
        allowed_special,
        disallowed_special,
        num_threads,
        errors,
        add_special_tokens,
    ) -> tuple[list[str], list[bool], list[bool], int | None, bool]:
        items = check_texts(texts)
        _check_errors(errors)
        allowed, disallowed, extra = self._policy(allowed_special, disallowed_special)
        threads = check_optional_int(num_threads, "num_threads", minimum=1)
        add = check_bool(add_special_tokens, "add_special_tokens")
        if extra:
            for t in items:
                self._check_extra(t, extra)
        return items, allowed, disallowed, threads, add

    @staticmethod
    def _fix_batch(items: list[str], errors: str) -> list[str]:
        """After a UnicodeEncodeError: the texts with tiktoken's surrogate fix-up, or the error."""
        if errors == "strict":
            raise _find_surrogate_error(items, "texts")
        return [_replace_surrogates(t) for t in items]

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int | None = None,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
        errors: EncodeErrors = "replace",
        add_special_tokens: bool = False,
    ) -> list[list[int]]:
        """Encodes many texts in parallel (GIL released); same ids as `encode` on each
        (`errors` and `add_special_tokens` included).

        `num_threads`: None for the default (`fastllm.set_num_threads`), else 1 to `MAX_THREADS`.
        """
        items, allowed, disallowed, threads, add = self._prepare_batch(
            texts, allowed_special, disallowed_special, num_threads, errors, add_special_tokens
        )
        # The result is one new list per text: with the cyclic GC on, every 700 of them trigger a
        # collection that walks every id of the young lists (a third of the call's time on 4 MB of
        # reviews). None of these lists can be in a cycle, so the GC is paused while they are built.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            try:
                return self._core.encode_batch(items, allowed, disallowed, threads, add)
            except UnicodeEncodeError:
                pass
            return self._core.encode_batch(self._fix_batch(items, errors), allowed, disallowed, threads, add)
        finally:
            if was_enabled:
                gc.enable()

    def encode_ordinary_batch(
        self, text: Sequence[str], *, num_threads: int | None = None, errors: EncodeErrors = "replace"
    ) -> list[list[int]]:
        """`encode_batch` with every special token treated as plain text (tiktoken's name)."""
        return self.encode_batch(
            text, num_threads=num_threads, allowed_special=(), disallowed_special=(), errors=errors
        )

    def encode_batch_numpy(
        self,
        texts: Sequence[str],
        *,
        num_threads: int | None = None,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
        errors: EncodeErrors = "replace",
        add_special_tokens: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes many texts into one flat uint32 array plus int64 offsets (len(texts) + 1).

        `ids[offsets[i]:offsets[i + 1]]` are the ids of `texts[i]`; no Python int per token.
        """
        items, allowed, disallowed, threads, add = self._prepare_batch(
            texts, allowed_special, disallowed_special, num_threads, errors, add_special_tokens
        )
        try:
            return self._core.encode_batch_numpy(items, allowed, disallowed, threads, add)
        except UnicodeEncodeError:
            pass
        return self._core.encode_batch_numpy(
            self._fix_batch(items, errors), allowed, disallowed, threads, add
        )

    # ---- decoding -------------------------------------------------------------------------------

    def decode_bytes(self, ids: Ids) -> bytes:
        """The bytes the ids stand for; an unknown id raises `UnknownTokenError` naming it."""
        try:
            return self._core.decode_bytes(_ids(ids))
        except KeyError as e:
            raise _unknown(e) from None

    def decode(self, ids: Ids, errors: str = "replace") -> str:
        """Text of the ids; bytes that are not valid UTF-8 (a cut character) are handled by
        `errors`, as in `bytes.decode` (default: they become U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one id (a special token's text for a special id); `UnknownTokenError`
        (a KeyError) for an unknown id."""
        return self.token_bytes(token)

    def decode_tokens_bytes(self, tokens: Ids) -> list[bytes]:
        """The bytes of each id, as a list (handy to show how a text was cut)."""
        try:
            return self._core.tokens_bytes(_ids(tokens, "tokens"))
        except KeyError as e:
            raise _unknown(e) from None

    def decode_with_offsets(self, tokens: Ids) -> tuple[str, list[int]]:
        """The text of the ids and, for each id, the index in the text of its first character
        (of the character holding its first byte, when a token starts inside a character).

        Computed as tiktoken computes it; like tiktoken, ids whose bytes are not valid UTF-8 as a
        whole raise `UnicodeDecodeError` (a ValueError).

        >>> tok = BPETokenizer.train(["hello world"] * 4, 300, show_progress=False)
        >>> tok.decode_with_offsets(tok.encode("hello world"))
        ('hello world', [0, 5])
        """
        token_bytes = self.decode_tokens_bytes(tokens)
        text_len = 0
        offsets = []
        for token in token_bytes:
            offsets.append(max(0, text_len - (0x80 <= token[0] < 0xC0)))
            text_len += sum(1 for c in token if not 0x80 <= c < 0xC0)
        return b"".join(token_bytes).decode("utf-8", errors="strict"), offsets

    def decode_bytes_batch(self, batch: Sequence[Ids], *, num_threads: int | None = None) -> list[bytes]:
        """`decode_bytes` of each id sequence, in parallel (GIL released)."""
        if isinstance(batch, np.ndarray) and batch.ndim == 2:
            lists = batch.tolist() if batch.dtype.kind in "iu" else [_ids(row) for row in batch]
        else:
            lists = [_ids(ids, f"batch[{i}]") for i, ids in enumerate(batch)]
        threads = check_optional_int(num_threads, "num_threads", minimum=1)
        try:
            return self._core.decode_bytes_batch(lists, threads)
        except KeyError as e:
            raise _unknown(e) from None

    def decode_batch(
        self, batch: Sequence[Ids], *, errors: str = "replace", num_threads: int | None = None
    ) -> list[str]:
        """`decode` of each id sequence, in parallel (GIL released)."""
        return [
            b.decode("utf-8", errors=errors) for b in self.decode_bytes_batch(batch, num_threads=num_threads)
        ]

    def stream_decoder(self) -> StreamDecoder:
        """A decoder fed one id at a time that never splits a UTF-8 character."""
        return StreamDecoder(self)

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one id (a special token's text for a special id); `UnknownTokenError`
        (a KeyError and a ValueError) for an unknown id."""
        out = self._core.token_bytes(id)
        if out is None:
            raise UnknownTokenError(
                f"token id {id} is out of range for a vocabulary of {self.vocab_size} ids"
            )
        return out

    # ---- inspection -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The tokenizer's name (tiktoken's `Encoding.name`): the file stem for `from_tiktoken`
        ("cl100k_base") and `from_file`, "gpt2" for `from_gpt2`, "bpe" for a trained one, unless
        the constructor's `name=` says otherwise."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = check_type(value, "name", str)

    @property
    def vocab_size(self) -> int:
        """1 + the highest id, special tokens included."""
        return self._core.vocab_size

    @property
    def n_vocab(self) -> int:
        """1 + the highest id, special tokens included (tiktoken's name for `vocab_size`)."""
        return self._core.vocab_size

    @property
    def max_token_value(self) -> int:
        """The highest id, special tokens included."""
        return self._core.vocab_size - 1

    @property
    def eot_token(self) -> int:
        """The id of `<|endoftext|>`; `UnknownTokenError` (a KeyError) if it is not a special token."""
        try:
            return self._specials["<|endoftext|>"]
        except KeyError:
            raise UnknownTokenError(
                f"'<|endoftext|>' is not a special token of this tokenizer (its special tokens: "
                f"{self._special_names!r})"
            ) from None

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special tokens (subject to `allowed_special` / `disallowed_special`) and their ids."""
        return dict(self._specials)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts."""
        return set(self._special_names)

    def is_special_token(self, token: int) -> bool:
        """Whether `token` is the id of a special token."""
        return operator.index(token) in self._special_ids

    def token_byte_values(self) -> list[bytes]:
        """The bytes of every regular (non-special) token, sorted."""
        return self._core.token_byte_values()

    @property
    def added_tokens(self) -> dict[str, int]:
        """Non-special added tokens of a loaded `tokenizer.json` and their ids: found in any text
        (as Hugging Face tokenizers finds them) and encoded as their id whatever the special-token
        policy; not special tokens."""
        return dict(self._core.added_tokens)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """Merges in rank order, as (left id, right id)."""
        return self._core.merges

    @property
    def pattern(self) -> str:
        """The pre-tokenizer's split regex."""
        return self._core.pattern

    # ---- pickling and copying -------------------------------------------------------------------

    def __reduce__(self):
        """Pickles as a compact binary state made in Rust (`bpe::state`): the vocabulary, merges,
        pattern and special tokens, checked again as a loaded file is when unpickled."""
        return (_restore, (self._core.to_state(), self._name))

    def __copy__(self) -> BPETokenizer:
        return BPETokenizer(self._core, name=self._name)

    def __deepcopy__(self, memo: dict) -> BPETokenizer:
        # The Rust tokenizer is immutable (its piece cache is internal and locked), so a copy
        # shares it.
        return BPETokenizer(self._core, name=self._name)

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(name={self._name!r}, vocab_size={self.vocab_size}, "
            f"pattern={self._core.pattern_name!r}, special_tokens={self._special_names!r})"
        )
