"""BPETokenizer: byte-level BPE of the GPT-2/GPT-4 family, trained and run in Rust.

A thin, typed facade over `fastllm._core`: arguments are checked here so that a mistake gets a
Python exception naming the bad value; the work (pre-tokenization, counting, merging, encoding)
happens in Rust with the GIL released. Encoding follows tiktoken's conventions (`encode` returns a
list of ids; `allowed_special` / `disallowed_special` behave as in tiktoken), and `save` writes a
Hugging Face `tokenizer.json`.

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
]

MAX_PIECE_BYTES: int = _core.Tokenizer.MAX_PIECE_BYTES
MAX_SPECIAL_BYTES: int = _core.Tokenizer.MAX_SPECIAL_BYTES
MAX_VOCAB_FILE_BYTES: int = _core.Tokenizer.MAX_VOCAB_FILE_BYTES
REGEX_WINDOW_BYTES: int = _core.Tokenizer.REGEX_WINDOW_BYTES
MAX_THREADS = 1024  # enforced for every parallel call in Rust (fastllm-py/src/pool.rs)

PathLike = Union[str, "os.PathLike[str]"]
SpecialSet = Union[Literal["all"], Collection[str]]

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
    """

    __slots__ = ("_core", "_specials", "_special_names")

    def __init__(self, core: _core.Tokenizer):
        if not isinstance(core, _core.Tokenizer):
            raise TypeError("use BPETokenizer.train, train_files, from_file, from_tiktoken or from_gpt2")
        self._core = core
        self._specials: dict[str, int] = dict(core.specials)
        self._special_names: list[str] = [name for name, _ in core.specials]

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
    ) -> BPETokenizer:
        """Trains on any iterable of str (streamed in batches: it need not fit in memory).

        `pattern` is "gpt4" (cl100k split, the default), "gpt2", or a regex. `vocab_size` counts the
        256 byte tokens, the merges and the special tokens (each at most `MAX_SPECIAL_BYTES`);
        training stops earlier when no pair occurs `min_frequency` times. Ties between equally
        frequent pairs go to the smallest (left id, right id), so results are identical on any
        number of threads (`num_threads`: None for the default, else 1 to `MAX_THREADS`).

        After merging "aa" (id 256), "aa"+"a" and "a"+"b" both occur 4 times; the tie goes to
        the smaller pair, (97, 98):

        >>> BPETokenizer.train(["aaab"] * 4, 258, show_progress=False).merges
        [(97, 97), (97, 98)]
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be an iterable of str, not a single str; wrap it in a list")
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
        return cls._train_counts(counter, vocab_size, specials, min_frequency, show_progress, num_threads)

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
    ) -> BPETokenizer:
        """Trains on UTF-8 text files, read and counted in Rust in blocks (constant memory).

        Files are cut into blocks only after a newline followed by a non-space character, where
        the built-in patterns never join two pieces. Invalid UTF-8 raises, naming file and line.
        """
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
        return cls._train_counts(counter, vocab_size, specials, min_frequency, show_progress, num_threads)

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
    def from_file(cls, path: PathLike) -> BPETokenizer:
        """Loads a byte-level BPE `tokenizer.json` (written by `save` or by Hugging Face).

        Its normalizer (NFC, NFD, NFKC, NFKD, Lowercase or a Sequence of them) and its added tokens
        (flags included) are applied as Hugging Face tokenizers applies them; `special` added tokens
        are `special_tokens`, the others `added_tokens`.

        The file is read in Rust, at most `MAX_VOCAB_FILE_BYTES` of it; anything malformed,
        unsupported or too large is a ValueError naming the file.
        """
        return cls(_core.Tokenizer.from_hf_file(os.fspath(path)))

    @classmethod
    def from_tiktoken(
        cls, path: PathLike, pattern: str, special_tokens: dict[str, int] | None = None
    ) -> BPETokenizer:
        """Loads a tiktoken `.tiktoken` rank file; ids and encodings equal tiktoken's.

        `pattern` is the split regex or a built-in name ("gpt4"/"cl100k", "gpt2"/"r50k").
        """
        check_type(pattern, "pattern", str)
        specials = dict(special_tokens or {})
        for name, id_ in specials.items():
            if not check_type(name, "a special token", str):
                raise ValueError("special token '' must be a non-empty str")
            specials[name] = check_int(
                id_, f"special_tokens[{name!r}]", minimum=0, maximum=2**31, max_open=True
            )
        return cls(_core.Tokenizer.from_tiktoken(os.fspath(path), pattern, list(specials.items())))

    @classmethod
    def from_gpt2(cls, encoder_json_path: PathLike, vocab_bpe_path: PathLike) -> BPETokenizer:
        """Loads OpenAI's GPT-2 files (`encoder.json` + `vocab.bpe`); `<|endoftext|>` is special."""
        return cls(_core.Tokenizer.from_gpt2(os.fspath(encoder_json_path), os.fspath(vocab_bpe_path)))

    def save(self, path: PathLike) -> None:
        """Writes a Hugging Face `tokenizer.json` atomically (`fastllm._io.write_atomic`)."""
        write_atomic(path, self._core.to_hf_json())

    # ---- encoding -------------------------------------------------------------------------------

    def _policy(
        self, allowed_special: SpecialSet, disallowed_special: SpecialSet
    ) -> tuple[list[bool], list[bool]]:
        names = self._special_names
        if not names:
            return [], []

        def resolve(value: SpecialSet, what: str) -> set[str]:
            if value == "all":
                return set(names)
            if isinstance(value, str):
                raise TypeError(f'{what} must be "all" or a collection of special tokens, not {value!r}')
            chosen = set(value)
            unknown = chosen - set(names)
            if unknown:
                raise ValueError(f"{what} names unknown special tokens {sorted(unknown)!r}; known: {names!r}")
            return chosen

        allowed = resolve(allowed_special, "allowed_special")
        disallowed = (
            set(names) - allowed
            if disallowed_special == "all"
            else resolve(disallowed_special, "disallowed_special")
        )
        return [n in allowed for n in names], [n in disallowed for n in names]

    def encode(
        self,
        text: str | bytes,
        *,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encodes text (or bytes: invalid UTF-8 is kept byte for byte) to ids, as tiktoken does.

        A special token spelled in the text raises unless it is in `allowed_special` (then it
        becomes its id) or `disallowed_special` leaves it out (then it is encoded as plain text).
        """
        allowed, disallowed = self._policy(allowed_special, disallowed_special)
        if isinstance(text, (bytes, bytearray, memoryview)):
            return self._core.encode_bytes(bytes(text), allowed, disallowed)
        check_type(text, "text", str)
        try:
            return self._core.encode(text, allowed, disallowed)
        except UnicodeEncodeError:
            raise _surrogate_error(text, "text") from None

    def encode_ordinary(self, text: str | bytes) -> list[int]:
        """Encodes with every special token treated as plain text."""
        return self.encode(text, allowed_special=(), disallowed_special=())

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int | None = None,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
    ) -> list[list[int]]:
        """Encodes many texts in parallel (GIL released); same ids as `encode` on each.

        `num_threads`: None for the default (`fastllm.set_num_threads`), else 1 to `MAX_THREADS`.
        """
        items = check_texts(texts)
        allowed, disallowed = self._policy(allowed_special, disallowed_special)
        threads = check_optional_int(num_threads, "num_threads", minimum=1)
        # The result is one new list per text: with the cyclic GC on, every 700 of them trigger a
        # collection that walks every id of the young lists (a third of the call's time on 4 MB of
        # reviews). None of these lists can be in a cycle, so the GC is paused while they are built.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._core.encode_batch(items, allowed, disallowed, threads)
        except UnicodeEncodeError:
            raise _find_surrogate_error(items, "texts") from None
        finally:
            if was_enabled:
                gc.enable()

    def encode_batch_numpy(
        self,
        texts: Sequence[str],
        *,
        num_threads: int | None = None,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes many texts into one flat uint32 array plus int64 offsets (len(texts) + 1).

        `ids[offsets[i]:offsets[i + 1]]` are the ids of `texts[i]`; no Python int per token.
        """
        items = check_texts(texts)
        allowed, disallowed = self._policy(allowed_special, disallowed_special)
        try:
            threads = check_optional_int(num_threads, "num_threads", minimum=1)
            return self._core.encode_batch_numpy(items, allowed, disallowed, threads)
        except UnicodeEncodeError:
            raise _find_surrogate_error(items, "texts") from None

    # ---- decoding -------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for; an unknown id raises ValueError naming it."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        return self._core.decode_bytes(list(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; bytes that are not valid UTF-8 (a cut character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        """A decoder fed one id at a time that never splits a UTF-8 character."""
        return StreamDecoder(self)

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one id (a special token's text for a special id)."""
        out = self._core.token_bytes(id)
        if out is None:
            raise ValueError(f"token id {id} is out of range for a vocabulary of {self.vocab_size} ids")
        return out

    # ---- inspection -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """1 + the highest id, special tokens included."""
        return self._core.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special tokens (subject to `allowed_special` / `disallowed_special`) and their ids."""
        return dict(self._specials)

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

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self._core.pattern_name!r}, "
            f"special_tokens={self._special_names!r})"
        )
