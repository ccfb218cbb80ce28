"""`fastllm generate`: continue a prompt with a trained MiniGPT, streaming the text as it comes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from fastllm._checks import check_vocab_pair
from fastllm.cli._errors import user_errors
from fastllm.cli._options import I32, SEED, count, finite


@click.command("generate")
@click.argument("prompt", required=False)
@click.option(
    "--checkpoint",
    "checkpoint",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A training checkpoint (.pt) or a save_pretrained folder (e.g. OUT_DIR/model).",
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The tokenizer.json the shards were made with.",
)
@click.option("--max-new-tokens", default=200, show_default=True, type=count(0, I32))
@click.option("--temperature", default=0.8, show_default=True, type=finite(0.0), help="0 = greedy.")
@click.option("--top-k", default=None, type=count(1, I32))
@click.option("--top-p", default=None, type=finite(0.0, 1.0, min_open=True))
@click.option("--min-p", default=None, type=finite(0.0, 1.0, min_open=True))
@click.option("--repetition-penalty", default=1.0, show_default=True, type=finite(0.0, min_open=True))
@click.option("--stop", multiple=True, help="Stop string (repeatable). The end-of-text token always stops.")
@click.option("--seed", default=None, type=SEED, help="Makes sampling reproducible.")
@click.option(
    "--device", default="auto", show_default=True, help="auto (cuda when present), cpu, cuda or cuda:N."
)
@user_errors
def generate_command(
    prompt,
    checkpoint,
    tokenizer_path,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    stop,
    seed,
    device,
):
    """Continue PROMPT (or stdin when PROMPT is - or absent) and stream the text to stdout.

    A summary (tokens, tokens per second) goes to stderr.
    """
    if prompt is None or prompt == "-":
        prompt = sys.stdin.read()
    from fastllm.generation import SamplingParams, generate
    from fastllm.tokenizer import BPETokenizer
    from fastllm.train.checkpoint import model_from_checkpoint
    from fastllm.train.device import resolve_device

    dev = resolve_device(device)  # a bad --device fails before anything loads
    tok = BPETokenizer.from_file(tokenizer_path)
    model = model_from_checkpoint(checkpoint)
    check_vocab_pair(tok.vocab_size, model.config.vocab_size, f"the tokenizer {str(tokenizer_path)!r}")
    model = model.to(dev).eval()
    ids = tok.encode(prompt, allowed_special="all") if prompt else []
    if not ids:
        eot = tok.special_tokens.get("<|endoftext|>")
        if eot is None:
            raise ValueError("empty prompt and the tokenizer has no <|endoftext|> to start from")
        ids = [eot]
    stop_items: list = list(stop)
    stop_items += [i for name, i in tok.special_tokens.items() if name == "<|endoftext|>"]
    room = model.config.context - len(ids)
    if room <= 0:
        raise ValueError(f"the prompt is {len(ids)} tokens; the model's context is {model.config.context}")
    if max_new_tokens > room:
        click.echo(
            f"note: --max-new-tokens cut from {max_new_tokens} to {room} by the model's context", err=True
        )
        max_new_tokens = room
    decoder = tok.stream_decoder()
    count = 0

    def on_token(new):
        nonlocal count
        t = new[0]
        if t is None or t in tok.special_tokens.values():
            return
        count += 1
        piece = decoder.feed(t)
        if piece:
            click.echo(piece, nl=False)

    click.echo(prompt, nl=False)
    t0 = time.perf_counter()
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        stop=stop_items or None,
        seed=seed,
    )
    generate(model, [ids], params, tokenizer=tok if stop else None, callback=on_token)
    click.echo(decoder.flush())
    dt = time.perf_counter() - t0
    click.echo(
        f"generate: {count} tokens in {dt:.2f} s, {count / dt if dt > 0 else 0:,.1f} tokens/s", err=True
    )
