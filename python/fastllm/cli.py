"""The `fastllm` command line (click): one command or group per stage of the pipeline.

`fastllm tokenizer train` with no files trains on the embedded default corpus (the Python
standard library), prints the tokenizer's statistics and a sample encoding, and writes a Hugging
Face `tokenizer.json`. `fastllm dedup` removes exact and near-duplicate documents from text, JSONL
or Parquet inputs. `fastllm tokenize` encodes a corpus into train/val token shards
(`fastllm.shards`) for `fastllm.dataset.TokenDataset`; `fastllm train` and `fastllm eval`
(`fastllm.cli_train`) pretrain and evaluate a MiniGPT on them. Errors in the user's input print one line
and exit with status 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

import fastllm
from fastllm._cliutil import user_errors as _user_errors
from fastllm.cli_demo import bench_command, demo_command
from fastllm.cli_generate import generate_command
from fastllm.cli_train import eval_command, train_command
from fastllm.corpus import CorpusStats, stdlib_root, stdlib_texts
from fastllm.tokenizer import BPETokenizer

SAMPLE = 'def greet(name: str) -> str:\n    return f"Hello, {name}! 🐍"\n'


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fastllm.__version__, prog_name="fastllm")
def main() -> None:
    """fastllm: small language models end to end, with the hot paths in Rust."""


@main.group()
def tokenizer() -> None:
    """Train byte-level BPE tokenizers and encode text with them."""


def _show_tokens(tok: BPETokenizer, ids: list[int]) -> str:
    """Tokens joined by |; a token that ends inside a UTF-8 character shows its bytes as \\xNN."""
    pieces = (tok.token_bytes(i).decode("utf-8", errors="backslashreplace") for i in ids)
    return "|".join(p.replace("\n", "\\n") for p in pieces)


@tokenizer.command("train")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--vocab-size", default=8192, show_default=True, help="Total ids: 256 bytes + merges + specials.")
@click.option("-o", "--output", default="tokenizer.json", show_default=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the Hugging Face tokenizer.json.")
@click.option("--pattern", default="gpt4", show_default=True, help='Split pattern: "gpt4", "gpt2" or a regex.')
@click.option("--special-token", "special_tokens", multiple=True, default=["<|endoftext|>"], show_default=True, help="A special token (repeat the option for several).")
@click.option("--min-frequency", default=1, show_default=True, help="Stop when the best pair occurs fewer times.")
@click.option("--threads", type=int, default=None, help="Worker threads (default: all cores).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_user_errors
def tokenizer_train(files, vocab_size, output, pattern, special_tokens, min_frequency, threads, quiet):
    """Train a tokenizer on FILES (UTF-8 text), or on the Python standard library when none are given."""
    t0 = time.perf_counter()
    if files:
        source = f"{len(files)} file(s)"
        n_bytes = sum(Path(f).stat().st_size for f in files if Path(f).is_file())
        tok = BPETokenizer.train_files(
            files, vocab_size, pattern=pattern, special_tokens=special_tokens,
            min_frequency=min_frequency, show_progress=not quiet, num_threads=threads,
        )
        sample_texts = None
    else:
        stats = CorpusStats()
        sample_texts = list(stdlib_texts(stats))
        source = f"the Python standard library ({stats.files} files under {stdlib_root()}"
        source += f", {len(stats.skipped)} undecodable skipped)" if stats.skipped else ")"
        n_bytes = sum(len(t.encode("utf-8")) for t in sample_texts)
        tok = BPETokenizer.train(
            sample_texts, vocab_size, pattern=pattern, special_tokens=special_tokens,
            min_frequency=min_frequency, show_progress=not quiet, num_threads=threads,
        )
    seconds = time.perf_counter() - t0
    tok.save(output)

    click.echo(f"trained on {source}: {n_bytes / 1e6:.1f} MB in {seconds:.2f} s ({n_bytes / 1e6 / seconds:.1f} MB/s)")
    click.echo(f"vocab size {tok.vocab_size} = 256 bytes + {len(tok.merges)} merges + {len(tok.special_tokens)} special")
    if sample_texts is not None:
        ids, _ = tok.encode_batch_numpy(sample_texts, num_threads=threads, disallowed_special=())
        click.echo(f"compression: {n_bytes / max(len(ids), 1):.2f} bytes per token over the corpus ({len(ids):,} tokens)")
    longest = sorted(range(256, 256 + len(tok.merges)), key=lambda i: (-len(tok.token_bytes(i)), i))[:5]
    click.echo("longest tokens: " + ", ".join(repr(tok.token_bytes(i).decode("utf-8", "backslashreplace")) for i in longest))
    ids = tok.encode(SAMPLE)
    click.echo(f"sample ({len(SAMPLE.encode())} bytes -> {len(ids)} tokens): {_show_tokens(tok, ids)}")
    click.echo(f"ids: {ids}")
    click.echo(f"wrote {output}")


@tokenizer.command("encode")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-t", "--tokenizer", "tokenizer_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A tokenizer.json.")
@click.option("--format", "fmt", type=click.Choice(["ids", "json", "tokens"]), default="ids", show_default=True, help="ids: space-separated ids per input; json: one JSON list per input; tokens: the pieces joined by |.")
@click.option("--allow-special", is_flag=True, help="Encode special tokens spelled in the text as their ids (default: raise).")
@_user_errors
def tokenizer_encode(files, tokenizer_path, fmt, allow_special):
    """Encode FILES (or standard input) and print one line per input."""
    tok = BPETokenizer.from_file(tokenizer_path)
    allowed = "all" if allow_special else ()
    sources = [(str(f), Path(f).read_text(encoding="utf-8")) for f in files] or [("<stdin>", sys.stdin.read())]
    for _, text in sources:
        ids = tok.encode(text, allowed_special=allowed)
        if fmt == "tokens":
            click.echo(_show_tokens(tok, ids))
        else:
            click.echo(json.dumps(ids) if fmt == "json" else " ".join(map(str, ids)))


@main.command("dedup")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Kept documents, in the input's format (a folder for --format files).")
@click.option("--format", "fmt", type=click.Choice(["lines", "files", "jsonl", "parquet"]), default=None, help="Input format (default: from the extension; .jsonl/.parquet, else lines).")
@click.option("--text-field", default="text", show_default=True, help="JSONL key / Parquet column holding the text.")
@click.option("--threshold", default=0.8, show_default=True, help="Jaccard similarity at or above which two documents are duplicates.")
@click.option("--num-perm", default=128, show_default=True, help="MinHash permutations.")
@click.option("--ngram", default=5, show_default=True, help="Shingle size (words, or characters with --char-ngrams).")
@click.option("--char-ngrams", is_flag=True, help="Character n-grams instead of word n-grams.")
@click.option("--verify", type=click.Choice(["exact", "estimate", "none"]), default="exact", show_default=True, help="How LSH candidates are confirmed.")
@click.option("--clusters", "clusters_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a JSONL report: one line per cluster with its members and pair Jaccards.")
@click.option("--threads", type=int, default=None, help="Worker threads (default: all cores).")
@click.option("--skip-invalid", is_flag=True, help="Skip (and count) records with invalid UTF-8, bad JSON or no text, instead of stopping.")
@click.option("--seed", default=0, show_default=True, help="Seed of the MinHash permutations.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def dedup_command(inputs, output, fmt, text_field, threshold, num_perm, ngram, char_ngrams, verify, clusters_path, threads, skip_invalid, seed, quiet):
    """Remove exact and near-duplicate documents from INPUTS (text lines, files, JSONL or Parquet)."""
    from tqdm.auto import tqdm

    from fastllm.dedup import MinHashDeduper
    from fastllm.dedup_io import read_corpus, infer_format, write_atomic, write_kept

    t0 = time.perf_counter()
    paths = list(inputs)
    fmt = fmt or infer_format(paths)
    deduper = MinHashDeduper(threshold, num_perm=num_perm, ngram=ngram, char_ngrams=char_ngrams, verify=verify, seed=seed, num_threads=threads)
    with tqdm(total=3, desc="dedup", unit="stage", disable=quiet, leave=False) as bar:
        bar.set_postfix_str("reading")
        corpus = read_corpus(paths, fmt, text_field=text_field, skip_invalid=skip_invalid)
        bar.update()
        bar.set_postfix_str(f"{len(corpus.texts):,} documents")
        result = deduper.dedup(corpus.texts)
        bar.update()
        bar.set_postfix_str("writing")
        write_kept(corpus, result.keep.tolist(), output)
        if clusters_path is not None:
            edges: dict[int, list] = {}
            for i, j, s in result.pairs:
                edges.setdefault(int(result.cluster_ids[i]), []).append([i, j, round(s, 4)])
            lines = (
                json.dumps({"cluster": c, "kept": members[0], "members": [{"doc": m, "source": corpus.where[m]} for m in members], "jaccard": edges.get(c, [])}).encode() + b"\n"
                for c, members in enumerate(result.clusters)
            )
            write_atomic(clusters_path, lines)
        bar.update()
    seconds = time.perf_counter() - t0
    st = result.stats
    n_in = st["documents_in"] + len(corpus.invalid)
    click.echo(
        f"dedup: {n_in:,} documents in, {st['documents_out']:,} out; {st['clusters']:,} clusters "
        f"({n_in - st['documents_out'] - len(corpus.invalid):,} removed, {st['exact_duplicates']:,} of them exact), "
        f"{st['too_short']:,} shorter than the shingle size (kept), {len(corpus.invalid):,} invalid; "
        f"{seconds:.2f} s, {n_in / max(seconds, 1e-9):,.0f} documents/s"
    )
    _report_invalid(corpus.invalid)


def _report_invalid(invalid: list[str]) -> None:
    """The first ten skipped records on stderr, and how many more there were."""
    for line in invalid[:10]:
        click.echo(f"  invalid: {line}", err=True)
    if len(invalid) > 10:
        click.echo(f"  ... and {len(invalid) - 10} more invalid records", err=True)


@main.command("tokenize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for the shards (created): train_00000.bin/.json, val_00000.bin/.json, ...")
@click.option("-t", "--tokenizer", "tokenizer_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A tokenizer.json (from `fastllm tokenizer train`).")
@click.option("--format", "fmt", type=click.Choice(["lines", "files", "jsonl", "parquet"]), default=None, help="Input format (default: from the extension; .jsonl/.parquet, else lines).")
@click.option("--text-field", default="text", show_default=True, help="JSONL key / Parquet column holding the text.")
@click.option("--val-fraction", default=0.005, show_default=True, help="Fraction of documents sent to the val split (at least one when > 0 and there are 2+ documents).")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/val split.")
@click.option("--shard-tokens", default=100_000_000, show_default=True, help="Tokens per shard before starting a new one.")
@click.option("--threads", type=int, default=None, help="Worker threads (default: all cores).")
@click.option("--skip-invalid", is_flag=True, help="Skip (and count) records with invalid UTF-8, bad JSON or no text, instead of stopping.")
@click.option("--eot", default="<|endoftext|>", show_default=True, help="Special token appended after every document.")
@click.option("--overwrite", is_flag=True, help="Replace shards already in the output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def tokenize_command(inputs, output, tokenizer_path, fmt, text_field, val_fraction, seed, shard_tokens, threads, skip_invalid, eot, overwrite, quiet):
    """Encode INPUTS (text lines, files, JSONL or Parquet) into train/val token shards for training."""
    from tqdm.auto import tqdm

    from fastllm.dedup_io import infer_format
    from fastllm.tokenize_corpus import input_size, tokenize_to_shards

    paths = list(inputs)
    fmt = fmt or infer_format(paths)
    with tqdm(total=input_size(paths, fmt), desc="tokenize", unit="B", unit_scale=True, disable=quiet, leave=False) as bar:
        stats = tokenize_to_shards(
            paths, output, tokenizer=tokenizer_path, fmt=fmt, text_field=text_field, val_fraction=val_fraction,
            seed=seed, shard_tokens=shard_tokens, num_threads=threads, skip_invalid=skip_invalid, eot=eot,
            overwrite=overwrite, progress=bar.update,
        )
    tokens = sum(stats.tokens.values())
    per_split = ", ".join(
        f"{s} {stats.docs[s]:,} documents / {stats.tokens[s]:,} tokens in {len(stats.shards[s])} shard(s)" for s in stats.tokens
    )
    click.echo(
        f"tokenize: {stats.documents:,} documents ({len(stats.invalid):,} invalid) -> {per_split}; "
        f"{stats.text_bytes / max(tokens, 1):.2f} bytes per token; "
        f"{stats.seconds:.2f} s, {stats.text_bytes / 1e6 / max(stats.seconds, 1e-9):.1f} MB/s; wrote {output}"
    )
    _report_invalid(stats.invalid)


if __name__ == "__main__":
    main()


main.add_command(train_command)
main.add_command(eval_command)
main.add_command(generate_command)
main.add_command(demo_command)
main.add_command(bench_command)
