"""`fastllm tokenizer train` and `fastllm tokenizer encode`: byte-level BPE from the command line.

`fastllm tokenizer train` with no files trains on the embedded default corpus (the Python standard
library), prints the tokenizer's statistics and a sample encoding, and writes a Hugging Face
`tokenizer.json`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from fastllm.cli._errors import report_invalid, user_errors
from fastllm.cli._options import I64, THREADS, U32, count
from fastllm.data.documents import DocumentReader
from fastllm.tokenizer import BPETokenizer

SAMPLE = 'def greet(name: str) -> str:\n    return f"Hello, {name}! \U0001f40d"\n'


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Train byte-level BPE tokenizers and encode text with them."""


def _show_tokens(tok: BPETokenizer, ids: list[int]) -> str:
    """Tokens joined by |; a token that ends inside a UTF-8 character shows its bytes as \\xNN."""
    pieces = (tok.token_bytes(i).decode("utf-8", errors="backslashreplace") for i in ids)
    return "|".join(p.replace("\n", "\\n") for p in pieces)


def _refuse_specials(tok: BPETokenizer, source: str, text: str) -> None:
    """The error `encode` would raise for a special token in `text`, in the command's words (its
    flag, not the Python argument), naming the input and where the first one is."""
    found = [(text.find(name), name) for name in tok.special_tokens]
    found = [(at, name) for at, name in found if at >= 0]
    if found:
        at, name = min(found)
        raise ValueError(
            f"{source}: the text contains the special token {name!r} at byte offset "
            f"{len(text[:at].encode('utf-8'))}; pass --allow-special to encode special tokens as their ids"
        )


@tokenizer_group.command("train")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--vocab-size",
    default=8192,
    show_default=True,
    type=count(256, U32),
    help="Total ids: 256 bytes + merges + specials.",
)
@click.option(
    "-o",
    "--output",
    default="tokenizer.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the Hugging Face tokenizer.json.",
)
@click.option(
    "--pattern", default="gpt4", show_default=True, help='Split pattern: "gpt4", "gpt2" or a regex.'
)
@click.option(
    "--special-token",
    "special_tokens",
    multiple=True,
    default=["<|endoftext|>"],
    show_default=True,
    help="A special token (repeat the option for several).",
)
@click.option(
    "--min-frequency",
    default=1,
    show_default=True,
    type=count(1, I64),
    help="Stop when the best pair occurs fewer times.",
)
@click.option("--threads", type=THREADS, default=None, help="Worker threads (default: all cores).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def tokenizer_train(files, vocab_size, output, pattern, special_tokens, min_frequency, threads, quiet):
    """Train a tokenizer on FILES (UTF-8 text), or on the Python standard library when none are given."""
    t0 = time.perf_counter()
    if files:
        source = f"{len(files)} file(s)"
        n_bytes = sum(Path(f).stat().st_size for f in files if Path(f).is_file())
        tok = BPETokenizer.train_files(
            files,
            vocab_size,
            pattern=pattern,
            special_tokens=special_tokens,
            min_frequency=min_frequency,
            show_progress=not quiet,
            num_threads=threads,
        )
        sample_texts = None
    else:
        reader = DocumentReader.stdlib()
        sample_texts = [doc.text for doc in reader]
        source = (
            f"{reader.description}, {len(sample_texts):,} documents, {len(reader.invalid)} invalid skipped"
        )
        report_invalid(reader.invalid)
        n_bytes = sum(len(t.encode("utf-8")) for t in sample_texts)
        tok = BPETokenizer.train(
            sample_texts,
            vocab_size,
            pattern=pattern,
            special_tokens=special_tokens,
            min_frequency=min_frequency,
            show_progress=not quiet,
            num_threads=threads,
        )
    seconds = time.perf_counter() - t0
    tok.save(output)

    click.echo(
        f"trained on {source}: {n_bytes / 1e6:.1f} MB in {seconds:.2f} s ({n_bytes / 1e6 / seconds:.1f} MB/s)"
    )
    click.echo(
        f"vocab size {tok.vocab_size} = 256 bytes + {len(tok.merges)} merges + "
        f"{len(tok.special_tokens)} special"
    )
    if sample_texts is not None:
        ids, _ = tok.encode_batch_numpy(sample_texts, num_threads=threads, disallowed_special=())
        click.echo(
            f"compression: {n_bytes / max(len(ids), 1):.2f} bytes per token over the corpus "
            f"({len(ids):,} tokens)"
        )
    longest = sorted(range(256, 256 + len(tok.merges)), key=lambda i: (-len(tok.token_bytes(i)), i))[:5]
    click.echo(
        "longest tokens: "
        + ", ".join(repr(tok.token_bytes(i).decode("utf-8", "backslashreplace")) for i in longest)
    )
    ids = tok.encode(SAMPLE)
    click.echo(f"sample ({len(SAMPLE.encode())} bytes -> {len(ids)} tokens): {_show_tokens(tok, ids)}")
    click.echo(f"ids: {ids}")
    click.echo(f"wrote {output}")


@tokenizer_group.command("encode")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-t",
    "--tokenizer",
    "tokenizer_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A tokenizer.json.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ids", "json", "tokens"]),
    default="ids",
    show_default=True,
    help="ids: space-separated ids per input; json: one JSON list per input; tokens: the pieces joined by |.",
)
@click.option(
    "--allow-special",
    is_flag=True,
    help="Encode special tokens spelled in the text as their ids (default: raise).",
)
@user_errors
def tokenizer_encode(files, tokenizer_path, fmt, allow_special):
    """Encode FILES (or standard input) and print one line per input."""
    tok = BPETokenizer.from_file(tokenizer_path)
    allowed = "all" if allow_special else ()
    sources = [(str(f), Path(f).read_text(encoding="utf-8")) for f in files] or [
        # Bytes, decoded strictly as the files are: under a C locale sys.stdin would turn invalid
        # UTF-8 into lone surrogates, which encode() would then replace with U+FFFD.
        ("<stdin>", sys.stdin.buffer.read().decode("utf-8"))
    ]
    for source, text in sources:
        if not allow_special:
            _refuse_specials(tok, source, text)
        ids = tok.encode(text, allowed_special=allowed)
        if fmt == "tokens":
            click.echo(_show_tokens(tok, ids))
        else:
            click.echo(json.dumps(ids) if fmt == "json" else " ".join(map(str, ids)))
