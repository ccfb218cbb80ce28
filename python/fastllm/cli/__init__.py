"""The `fastllm` command line (click): one command or group per stage of the pipeline, one module
per group (tokenizer, data, train, generate, demo). Errors in the user's input print one line and
exit with status 1 (`fastllm.cli._errors`).
"""

from __future__ import annotations

import click

import fastllm
from fastllm.cli.data import dedup_command, tokenize_command
from fastllm.cli.demo import bench_command, demo_command
from fastllm.cli.generate import generate_command
from fastllm.cli.tokenizer import tokenizer_group
from fastllm.cli.train import eval_command, train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fastllm.__version__, prog_name="fastllm")
def main() -> None:
    """fastllm: small language models end to end, with the hot paths in Rust."""


for _command in (
    tokenizer_group,
    dedup_command,
    tokenize_command,
    train_command,
    eval_command,
    generate_command,
    demo_command,
    bench_command,
):
    main.add_command(_command)

if __name__ == "__main__":
    main()
