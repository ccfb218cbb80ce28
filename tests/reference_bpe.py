"""A slow, obviously-correct byte-level BPE in pure Python: the oracle for fastllm's Rust BPE.

Nothing here is optimised; every step is the textbook definition, so a reader can check it by eye.

* Special tokens: text is cut around their leftmost-longest occurrences; specials are never
  counted, split or merged.
* Pre-tokenization: the split regex, run by the third-party `regex` module (a dependency of
  tiktoken; it has `\\p{L}`, possessive quantifiers and Unicode White_Space `\\s`, like the
  fancy-regex engine fastllm and tiktoken use). Empty matches are dropped.
* Training (`train`): symbols start as byte values; each step recounts every adjacent pair over all
  words weighted by word frequency, takes the highest count, ties to the smallest (left, right);
  stops when no pair is left, when the best count < min_frequency, or when
  256 + merges + n_special == vocab_size; a pair whose bytes already are a token is dropped for
  good (no merge, not counted); otherwise it is merged left to right, non-overlapping, in every
  word, and gets id 256 + (number of merges so far).
* Encoding a trained vocabulary (`encode_piece`, Hugging Face BPE semantics): start from bytes,
  repeatedly apply the lowest-rank merge present, leftmost first.
* Encoding a tiktoken vocabulary (`encode_piece_ranks`, tiktoken semantics): a piece that is a
  token is emitted whole; otherwise repeatedly join the adjacent pair whose concatenation has the
  lowest rank, leftmost first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import regex

# tiktoken's r50k/gpt2 and cl100k split patterns (tiktoken_ext/openai_public.py, tiktoken 0.14).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}

Merge = tuple[int, int]


def segments(text: str, specials: Sequence[str] = ()) -> list[tuple[bool, str]]:
    """`text` cut at leftmost-longest occurrences of `specials`: (is_special, substring) in order."""
    out: list[tuple[bool, str]] = []
    start = i = 0
    while i < len(text):
        hits = [s for s in specials if s and text.startswith(s, i)]
        if hits:
            if i > start:
                out.append((False, text[start:i]))
            hit = max(hits, key=len)
            out.append((True, hit))
            i = start = i + len(hit)
        else:
            i += 1
    if start < len(text):
        out.append((False, text[start:]))
    return out


def split_specials(text: str, specials: Sequence[str] = ()) -> list[str]:
    """The non-empty stretches of `text` between leftmost-longest occurrences of `specials`."""
    return [part for is_special, part in segments(text, specials) if not is_special]


def pretokenize(text: str, pattern: str = "gpt4", specials: Sequence[str] = ()) -> list[bytes]:
    """The UTF-8 pieces BPE merges within, in order."""
    rx = regex.compile(PATTERNS.get(pattern, pattern))
    return [
        m.group().encode("utf-8")
        for part in split_specials(text, specials)
        for m in rx.finditer(part)
        if m.group()
    ]


def count_pieces(texts: Iterable[str], pattern: str = "gpt4", specials: Sequence[str] = ()) -> Counter:
    """Every unique piece (bytes) of `texts` with its frequency."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(pretokenize(text, pattern, specials))
    return counts


def merge_word(word: list[int], pair: Merge, new_id: int) -> list[int]:
    """Replace the occurrences of `pair` in `word` by `new_id`, left to right, non-overlapping."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train(
    piece_counts: dict[bytes, int], vocab_size: int, min_frequency: int = 1, n_special: int = 0
) -> list[Merge]:
    """The merges (rank order) learned from unique pieces with their frequencies."""
    if vocab_size < 256 + n_special:
        raise ValueError(f"vocab_size {vocab_size} < 256 + {n_special} specials")
    words = [(list(piece), count) for piece, count in piece_counts.items()]
    token_bytes = [bytes([b]) for b in range(256)]
    known = set(token_bytes)
    merges: list[Merge] = []
    dropped: set[Merge] = set()
    while 256 + len(merges) + n_special < vocab_size:
        pair_counts: Counter = Counter()
        for word, count in words:
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        candidates = sorted((-c, pair) for pair, c in pair_counts.items() if pair not in dropped)
        best = None
        for neg_count, pair in candidates:
            if -neg_count < min_frequency:
                break
            joined = token_bytes[pair[0]] + token_bytes[pair[1]]
            if joined in known:
                dropped.add(pair)  # would duplicate an existing token: never merge it
                continue
            best = pair
            break
        if best is None:
            break
        new_id = 256 + len(merges)
        merges.append(best)
        token_bytes.append(token_bytes[best[0]] + token_bytes[best[1]])
        known.add(token_bytes[-1])
        words = [(merge_word(word, best, new_id), count) for word, count in words]
    return merges


def vocab_bytes(merges: Sequence[Merge]) -> list[bytes]:
    """Bytes of every trained id: 0..255 the single bytes, 256 + i merge i."""
    out = [bytes([b]) for b in range(256)]
    for left, right in merges:
        out.append(out[left] + out[right])
    return out


def encode_piece(piece: bytes, merges: Sequence[Merge]) -> list[int]:
    """HF BPE on one piece of a trained vocabulary: lowest-rank merge present, leftmost first."""
    rank = {pair: r for r, pair in enumerate(merges)}
    word = list(piece)
    while len(word) > 1:
        found = [(rank[p], i) for i, p in enumerate(zip(word, word[1:])) if p in rank]
        if not found:
            break
        r, i = min(found)
        word[i : i + 2] = [256 + r]
    return word


def encode(
    text: str, merges: Sequence[Merge], pattern: str = "gpt4", specials: Sequence[str] = ()
) -> list[int]:
    """Encode `text` with a trained vocabulary; specials (ids after the merges) are kept whole."""
    ids: list[int] = []
    for is_special, part in segments(text, specials):
        if is_special:
            ids.append(256 + len(merges) + list(specials).index(part))
        else:
            for piece in pretokenize(part, pattern):
                ids.extend(encode_piece(piece, merges))
    return ids


def encode_piece_ranks(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken BPE on one piece: whole piece if it is a token, else lowest-rank join, leftmost."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        found = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in ranks]
        if not found:
            break
        _, i = min(found)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]
