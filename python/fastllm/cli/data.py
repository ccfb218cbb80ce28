"""`fastllm dedup` and `fastllm tokenize`: the data stages from the command line.

`fastllm dedup` removes exact and near-duplicate documents from text, JSONL or Parquet inputs;
`fastllm tokenize` encodes a corpus into train/val token shards (`fastllm.data.shards`) for
`fastllm.data.dataset.TokenDataset`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from fastllm.cli._errors import report_invalid, user_errors
from fastllm.cli._options import I32, I64, SEED, THREADS, count, finite
from fastllm.data.documents import FORMATS


def _reader_options(command):
    """The reading options every command over documents shares (`fastllm.data.documents`)."""
    options = [
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default=None,
            help="Input format (default: from the extension; .jsonl/.parquet, else lines).",
        ),
        click.option(
            "--text-field",
            default="text",
            show_default=True,
            help="JSONL key / Parquet column holding the text.",
        ),
        click.option(
            "--skip-invalid",
            is_flag=True,
            help="Skip (and count) records with invalid UTF-8, bad JSON or no text, instead of stopping.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("dedup")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Kept documents, in the input's format. For --format files a folder, replaced as a whole: "
    "new, empty, or a previous dedup output.",
)
@_reader_options
@click.option(
    "--threshold",
    default=0.8,
    show_default=True,
    type=finite(0.0, 1.0, min_open=True, max_open=True),
    help="Jaccard similarity at or above which two documents are duplicates.",
)
@click.option("--num-perm", default=128, show_default=True, type=count(1, 8192), help="MinHash permutations.")
@click.option(
    "--ngram",
    default=5,
    show_default=True,
    type=count(1, I32),
    help="Shingle size (words, or characters with --char-ngrams).",
)
@click.option("--char-ngrams", is_flag=True, help="Character n-grams instead of word n-grams.")
@click.option(
    "--verify",
    type=click.Choice(["exact", "estimate", "none"]),
    default="exact",
    show_default=True,
    help="How LSH candidates are confirmed.",
)
@click.option(
    "--clusters",
    "clusters_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a JSONL report: one line per cluster with its members and pair Jaccards.",
)
@click.option("--threads", type=THREADS, default=None, help="Worker threads (default: all cores).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the MinHash permutations.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def dedup_command(
    inputs,
    output,
    fmt,
    text_field,
    threshold,
    num_perm,
    ngram,
    char_ngrams,
    verify,
    clusters_path,
    threads,
    skip_invalid,
    seed,
    quiet,
):
    """Remove exact and near-duplicate documents from INPUTS (text lines, files, JSONL or Parquet)."""
    from fastllm._io import write_atomic
    from fastllm._progress import bar
    from fastllm.data.dedup import MinHashDeduper
    from fastllm.data.dedup_io import check_output, read_corpus, write_kept
    from fastllm.data.documents import DocumentReader

    t0 = time.perf_counter()
    reader = DocumentReader(list(inputs), fmt, text_field=text_field, skip_invalid=skip_invalid)
    check_output(output, reader.fmt, list(inputs))  # before the work, not after it
    if clusters_path is not None:
        report = clusters_path.resolve()
        if report in [Path(p).resolve() for p in (*inputs, output)] or (
            reader.fmt == "files" and output.resolve() in report.parents
        ):
            raise ValueError(f"--clusters {str(clusters_path)!r} would overwrite an input or the output")
    deduper = MinHashDeduper(
        threshold,
        num_perm=num_perm,
        ngram=ngram,
        char_ngrams=char_ngrams,
        verify=verify,
        seed=seed,
        num_threads=threads,
    )
    with bar(not quiet, total=3, desc="dedup", unit="stage") as stages:
        stages.set_postfix_str("reading")
        corpus = read_corpus(reader)
        stages.update()
        stages.set_postfix_str(f"{len(corpus.texts):,} documents")
        result = deduper.dedup(corpus.texts)
        stages.update()
        stages.set_postfix_str("writing")
        write_kept(corpus, result.keep.tolist(), output)
        if clusters_path is not None:
            edges: dict[int, list] = {}
            for i, j, s in result.pairs:
                edges.setdefault(int(result.cluster_ids[i]), []).append([i, j, round(s, 4)])
            lines = (
                json.dumps(
                    {
                        "cluster": c,
                        "kept": members[0],
                        "members": [{"doc": m, "source": corpus.where[m]} for m in members],
                        "jaccard": edges.get(c, []),
                    }
                ).encode()
                + b"\n"
                for c, members in enumerate(result.clusters)
            )
            write_atomic(clusters_path, lines)
        stages.update()
    seconds = time.perf_counter() - t0
    st = result.stats
    n_in = st["documents_in"] + len(corpus.invalid)
    click.echo(
        f"dedup: {n_in:,} documents in, {st['documents_out']:,} out; {st['clusters']:,} clusters "
        f"({n_in - st['documents_out'] - len(corpus.invalid):,} removed, "
        f"{st['exact_duplicates']:,} of them exact), "
        f"{st['too_short']:,} shorter than the shingle size (kept), {len(corpus.invalid):,} invalid; "
        f"{seconds:.2f} s, {n_in / max(seconds, 1e-9):,.0f} documents/s"
    )
    report_invalid(corpus.invalid)


@click.command("tokenize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the shards, replaced as a whole (new, empty, or a previous tokenize output with "
    "--overwrite): train_00000.bin/.json, val_00000.bin/.json, ...",
)
@click.option(
    "-t",
    "--tokenizer",
    "tokenizer_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A tokenizer.json (from `fastllm tokenizer train`).",
)
@_reader_options
@click.option(
    "--val-fraction",
    default=0.005,
    show_default=True,
    type=finite(0.0, 1.0, max_open=True),
    help="Fraction of documents sent to the val split (at least one when > 0 and there are 2+ documents).",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the train/val split.")
@click.option(
    "--shard-tokens",
    default=100_000_000,
    show_default=True,
    type=count(1, I64),
    help="Tokens per shard before starting a new one.",
)
@click.option("--threads", type=THREADS, default=None, help="Worker threads (default: all cores).")
@click.option(
    "--eot", default="<|endoftext|>", show_default=True, help="Special token appended after every document."
)
@click.option("--overwrite", is_flag=True, help="Replace a previous tokenize output in the output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def tokenize_command(
    inputs,
    output,
    tokenizer_path,
    fmt,
    text_field,
    val_fraction,
    seed,
    shard_tokens,
    threads,
    skip_invalid,
    eot,
    overwrite,
    quiet,
):
    """Encode INPUTS (text lines, files, JSONL or Parquet) into train/val token shards for training."""
    from fastllm._progress import bar
    from fastllm.data.documents import infer_format
    from fastllm.data.tokenize import input_size, tokenize_to_shards

    paths = list(inputs)
    fmt = fmt or infer_format(paths)
    with bar(not quiet, total=input_size(paths, fmt), desc="tokenize", unit="B", unit_scale=True) as done:
        stats = tokenize_to_shards(
            paths,
            output,
            tokenizer=tokenizer_path,
            fmt=fmt,
            text_field=text_field,
            val_fraction=val_fraction,
            seed=seed,
            shard_tokens=shard_tokens,
            num_threads=threads,
            skip_invalid=skip_invalid,
            eot=eot,
            overwrite=overwrite,
            progress=done.update,
        )
    tokens = sum(stats.tokens.values())
    per_split = ", ".join(
        f"{s} {stats.docs[s]:,} documents / {stats.tokens[s]:,} tokens in {len(stats.shards[s])} shard(s)"
        for s in stats.tokens
    )
    click.echo(
        f"tokenize: {stats.documents:,} documents ({len(stats.invalid):,} invalid) -> {per_split}; "
        f"{stats.text_bytes / max(tokens, 1):.2f} bytes per token; "
        f"{stats.seconds:.2f} s, {stats.text_bytes / 1e6 / max(stats.seconds, 1e-9):.1f} MB/s; wrote {output}"
    )
    report_invalid(stats.invalid)
