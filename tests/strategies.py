"""Hypothesis strategies and small fixed corpora shared by the tokenizer tests.

`any_text` is arbitrary Unicode (no lone surrogates, which UTF-8 cannot carry, and no code points
unassigned in Python's Unicode tables, whose classes differ between Unicode versions).
`wordy_text` repeats a few random "words" so BPE has pairs worth merging: letters, digits runs,
whitespace runs, apostrophe contractions, CJK, emoji with ZWJ / skin tones, combining marks, CR/LF.
"""

from __future__ import annotations

import inspect

from hypothesis import strategies as st

CHARS = st.characters(blacklist_categories=("Cs", "Cn"))
any_text = st.text(CHARS, max_size=300)

PIECES = [
    *"abcxyzAB",
    *"0123456789",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    "\xa0",
    "'",
    "'s",
    "'LL",
    "'ſ",
    *".,!?-_()",
    "中",
    "文字",
    "😀",
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "e\u0301",
    "é",
    "ß",
    "Ω",
]
word = st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("".join)


@st.composite
def wordy_text(draw, max_words: int = 80) -> str:
    vocab = draw(st.lists(word, min_size=1, max_size=12))
    return "".join(draw(st.lists(st.sampled_from(vocab), max_size=max_words)))


corpus = st.lists(wordy_text(), min_size=1, max_size=5)

SPECIALS = ("<|endoftext|>", "<|pad|>")


@st.composite
def text_with_specials(draw, specials=SPECIALS) -> str:
    """Wordy text with specials (and near misses such as "<|endof") spliced in."""
    parts = draw(
        st.lists(st.one_of(wordy_text(20), st.sampled_from([*specials, "<|endof", "|>", "<|"])), max_size=8)
    )
    return "".join(parts)


def source_corpus(nbytes: int = 8000) -> str:
    """A few KB of real text with no external files: Python stdlib source code."""
    import difflib
    import json.decoder
    import textwrap

    text = "".join(inspect.getsource(m) for m in (textwrap, json.decoder, difflib))
    return text[:nbytes]
