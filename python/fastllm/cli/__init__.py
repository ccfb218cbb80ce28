"""The `fastllm` command line (click): one command or group per stage of the pipeline, one module
per group (tokenizer, data, train, generate, demo). Errors in the user's input print one line and
exit with status 1 (`fastllm.cli._errors`).
"""

from __future__ import annotations

import sys

import click

import fastllm
from fastllm.cli.data import dedup_command, tokenize_command
from fastllm.cli.demo import bench_command, demo_command
from fastllm.cli.generate import generate_command
from fastllm.cli.tokenizer import tokenizer_group
from fastllm.cli.train import eval_command, train_command

# click >= 8.2 raises this UsageError to print a bare group's help (older ones print it themselves).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineErrors(click.Group):
    """click's group, except that a usage error (a bad flag or value) prints one line,
    `Error: <what> (see 'fastllm CMD --help')`, instead of click's usage block, hint and message."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # a group called bare: its help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else "fastllm"
            click.echo(f"Error: {e.format_message()} (see '{command} --help')", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
