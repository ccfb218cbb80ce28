"""What every `fastllm` command shares: bad input becomes one line and exit status 1."""

from __future__ import annotations

import functools

import click


def user_errors(fn):
    """Turn the exceptions bad input raises into a one-line message and exit status 1.

    FloatingPointError is `fastllm.train.TrainingDiverged` (a learning rate too high for the run):
    its message names the step and the last good checkpoint."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, OSError, FloatingPointError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def report_invalid(invalid: list[str]) -> None:
    """The first ten skipped records on stderr, and how many more there were."""
    for line in invalid[:10]:
        click.echo(f"  invalid: {line}", err=True)
    if len(invalid) > 10:
        click.echo(f"  ... and {len(invalid) - 10} more invalid records", err=True)
